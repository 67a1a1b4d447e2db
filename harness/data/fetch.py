"""Download a declared data set, unpack it and check every file before anything is moved into place.

Downloads resume: bytes land in ``<data folder>/.downloads/<name>/<file>.part`` and a rerun asks
the server for the rest with an HTTP ``Range`` request. Files are unpacked into a staging folder
beside the data set's folder; only when every sha256 matches are they moved in.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from harness.data.datasets import DataFile, DataSet, file_state
from harness.core.errors import BadInputError, HarnessError
from harness.core.file_hash import sha256_of

DOWNLOADS = ".downloads"
_BLOCK = 1 << 16
Echo = Callable[[str], None]


class FetchError(HarnessError):
    """A download failed or produced files whose checksum is not the declared one; exit code 1."""


def check_mirror(mirror: str) -> str:
    """``mirror`` without a trailing slash; BadInputError (exit 2) unless it is an http(s) or file URL."""
    parts = urlsplit(mirror)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise BadInputError(f"--mirror {mirror!r} is not a URL; give e.g. https://example.org/harness-data "
                            "(files are fetched from <mirror>/<data set>/<file name>)")
    return mirror.rstrip("/")


def source_url(data_set: DataSet, file: DataFile, mirror: str | None) -> str:
    """Where to download ``file``: its canonical URL, or ``<mirror>/<data set>/<file name>``."""
    return f"{mirror}/{data_set.name}/{file.download_name}" if mirror else file.url


def download(url: str, target: Path, *, progress: bool | None = None) -> Path:
    """Download ``url`` to ``target``, continuing a ``target.part`` left by an interrupted run.

    Raises FetchError with one line (the URL, the cause, the bytes kept) on any network error.
    """
    if target.is_file():
        return target  # downloaded whole by an earlier run that failed on a later file
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "rnn-harness", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start again from the first byte
            length = response.headers.get("Content-Length")
            total = int(length) + offset if length is not None else None
            _copy(response, part, offset=offset, total=total, label=target.name, progress=progress)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset and _complete(error, offset):
            os.replace(part, target)  # an earlier run got every byte but stopped before the rename
            return target
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        kept = part.stat().st_size if part.exists() else 0
        reason = getattr(error, "reason", None) or error
        resume = (f"{kept:,} bytes kept in {part}; run the same command again to resume" if kept
                  else "run the same command again when the network is back")
        raise FetchError(f"{url}: download failed ({type(error).__name__}: {reason}); {resume}") from None
    os.replace(part, target)
    return target


def _complete(error: urllib.error.HTTPError, offset: int) -> bool:
    """Whether a 416's ``Content-Range: bytes */SIZE`` says the partial file already has every byte."""
    content_range = error.headers.get("Content-Range", "") if error.headers else ""
    return content_range.startswith("bytes */") and content_range[len("bytes */"):].strip() == str(offset)


def _copy(response, part: Path, *, offset: int, total: int | None, label: str,  # type: ignore[no-untyped-def]
          progress: bool | None) -> None:
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in a log file or a pipe.
    with open(part, "ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
        disable=None if progress is None else not progress, leave=False,
    ) as bar:
        while block := response.read(_BLOCK):
            out.write(block)
            bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)


def unpack(download_path: Path, file: DataFile) -> bytes:
    """The bytes of ``file`` from its download: the member of an archive, a gunzipped file, or as is."""
    kind = file.archive_format
    try:
        if kind == "zip":
            with zipfile.ZipFile(download_path) as archive:
                raw = archive.read(file.member or "")
        elif kind in ("tar", "tar.gz"):
            with tarfile.open(download_path, "r:*") as archive:
                member = archive.extractfile(file.member or "")
                if member is None:
                    raise KeyError(file.member)
                raw = member.read()
        elif kind == "gz":
            with gzip.open(download_path, "rb") as handle:
                raw = handle.read()
        else:
            raw = download_path.read_bytes()
    except KeyError:
        raise FetchError(f"{file.url}: the archive has no member {file.member!r} (for {file.path})") from None
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as error:
        raise FetchError(f"{file.url}: cannot unpack it as {kind} ({type(error).__name__}: {error}) "
                         f"for {file.path}; nothing was installed") from None
    return file.transform(raw) if file.transform is not None else raw


def stage(data_set: DataSet, downloads: dict[str, Path], staging: Path) -> None:
    """Write every file into ``staging`` and check its size and sha256; FetchError names the first bad one."""
    for file in data_set.files:
        data = unpack(downloads[file.url], file)
        target = staging / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        actual = sha256_of(target)
        if actual != file.sha256 or len(data) != file.size:
            raise FetchError(
                f"{data_set.name}: {file.path} (from {file.url}) has sha256 {actual} and {len(data):,} bytes; "
                f"expected {file.sha256} and {file.size:,} bytes. Nothing was installed and the download was "
                "deleted; try again, or another --mirror")


def install(data_set: DataSet, staging: Path, root: Path) -> list[Path]:
    """Move the checked files from ``staging`` into ``root/<folder>/``."""
    installed = []
    for file in data_set.files:
        target = root / data_set.folder / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / file.path, target)
        installed.append(target)
    return installed


def fetch(data_set: DataSet, root: Path, *, mirror: str | None = None, force: bool = False,
          progress: bool | None = None, echo: Echo = print) -> list[Path]:
    """Download, unpack, check and install ``data_set`` under ``root``; the installed files.

    Does nothing when every file is already there with its checksum (unless ``force``).
    A checksum or unpacking failure removes the staging folder and the downloads, so nothing
    is left behind; a network failure keeps the partial download for the next run.
    """
    if not force and all(file_state(root, data_set, f) == "ok" for f in data_set.files):
        echo(f"{data_set.name}: already present in {root / data_set.folder} ({len(data_set.files)} files verified)")
        return [root / data_set.folder / f.path for f in data_set.files]
    downloads_dir = root / DOWNLOADS / data_set.name
    downloads_dir.mkdir(parents=True, exist_ok=True)
    try:
        downloads = download_all(data_set, downloads_dir, mirror=mirror, progress=progress, echo=echo)
    except BaseException:
        _tidy(root, downloads_dir)  # keep partial downloads for the next run, drop empty leftovers
        raise
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{data_set.name}-", dir=root))
    try:
        stage(data_set, downloads, staging)
        installed = install(data_set, staging, root)
    except BaseException:
        _remove_downloads(root, downloads_dir)  # they produced bad files: the next run starts afresh
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_downloads(root, downloads_dir)
    echo(f"{data_set.name}: {len(installed)} files verified and installed in {root / data_set.folder}")
    return installed


def download_all(data_set: DataSet, downloads_dir: Path, *, mirror: str | None, progress: bool | None,
                 echo: Echo) -> dict[str, Path]:
    """Download each of the set's URLs once: ``{canonical URL: downloaded file}``."""
    downloads: dict[str, Path] = {}
    for file in data_set.files:
        if file.url not in downloads:
            url = source_url(data_set, file, mirror)
            echo(f"{data_set.name}: downloading {url}")
            try:
                downloads[file.url] = download(url, downloads_dir / file.download_name, progress=progress)
            except FetchError as error:
                hint = " (a mirror serves <mirror>/<data set>/<file name>)" if mirror and "HTTP 404" in str(error) else ""
                raise FetchError(f"{data_set.name}: {error}{hint}") from None
    return downloads


def _tidy(root: Path, downloads_dir: Path) -> None:
    for part in downloads_dir.glob("*.part"):
        if part.stat().st_size == 0:
            part.unlink()
    for folder in (downloads_dir, root / DOWNLOADS):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def _remove_downloads(root: Path, downloads_dir: Path) -> None:
    shutil.rmtree(downloads_dir, ignore_errors=True)
    _tidy(root, downloads_dir)  # .downloads/ goes too unless another set's download waits there
