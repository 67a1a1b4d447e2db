"""Data-set declarations (what a task reads, from where, with which checksums) and the data folder.

A task lists its data sets in :attr:`harness.core.tasks.Task.data_sets`; ``harness data`` lists,
fetches and verifies them. This module only describes and checks files; downloading lives in
:mod:`harness.data.fetch`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from harness.core.errors import PluginError
from harness.core.file_hash import sha256_of

ENV_DATA_DIR = "HARNESS_DATA_DIR"
APP_NAME = "rnn-harness"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ArchiveFormat = Literal["file", "gz", "zip", "tar", "tar.gz"]
FileState = Literal["ok", "missing", "mismatch"]


@dataclass(frozen=True)
class DataFile:
    """One file a task reads, and where it comes from.

    Attributes:
        path: where the task reads it, relative to the data set's folder (``"ptb.train.txt"``).
        size, sha256: of the file as the task reads it (after extraction and ``transform``).
        url: the canonical download; a ``.zip``, ``.tar``, ``.tar.gz``/``.tgz`` or ``.gz`` URL is
            unpacked. Several files may name the same archive URL; it is downloaded once.
        member: the file inside a zip or tar archive (ignored for a plain file or ``.gz``).
        transform: turns the downloaded (or extracted) bytes into the file the task reads, e.g.
            a MATLAB piano roll into JSON; its result is what ``sha256`` checks.
        read_when: the option value under which the task reads it, when not always
            (``"include_phrases: true"``).
    """

    path: str
    size: int
    sha256: str
    url: str
    member: str | None = None
    transform: Callable[[bytes], bytes] | None = field(default=None, compare=False)
    read_when: str = ""

    @property
    def archive_format(self) -> ArchiveFormat:
        """How the download is unpacked, from the URL's file name."""
        return archive_format(self.url)

    @property
    def download_name(self) -> str:
        """The URL's last path segment: the name under which a ``--mirror`` serves it."""
        return PurePosixPath(urlsplit(self.url).path).name


@dataclass(frozen=True)
class DataSet:
    """A data set as one task reads it: a folder under the data folder holding ``files``.

    Attributes:
        name: what ``harness data fetch NAME`` takes (``"ptb"``).
        folder: the folder inside the data folder the task reads (``"ptb"``, ``"polyphonic-music"``).
        description: one line: what it is and its split sizes.
        licence: the terms under which it may be used, as its sources state them.
        source: where the files were taken from (repository and commit, or the authors' page).
        options: the task options that read it, e.g. ``("data_dir", "subfolder", "train_file")``,
            or an option value that selects it (``"dataset: nottingham"``).
        files: every file the task reads, with size and sha256.
    """

    name: str
    folder: str
    description: str
    licence: str
    source: str
    options: tuple[str, ...]
    files: tuple[DataFile, ...]

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise PluginError(f"data set {self.name!r}: {'; '.join(problems)}")

    def _problems(self):  # type: ignore[no-untyped-def]
        if not _NAME.match(self.name):
            yield "name must be lowercase letters, digits, '-', '_' or '.'"
        if not self.folder or Path(self.folder).is_absolute() or ".." in Path(self.folder).parts:
            yield f"folder {self.folder!r} must be a relative path inside the data folder"
        if not self.files:
            yield "declares no files"
        for file in self.files:
            if not _SHA256.match(file.sha256):
                yield f"{file.path}: sha256 must be 64 lowercase hex digits"
            if Path(file.path).is_absolute() or ".." in PurePosixPath(file.path).parts:
                yield f"{file.path}: path must stay inside the data set's folder"
            if file.archive_format in ("zip", "tar", "tar.gz") and not file.member:
                yield f"{file.path}: {file.url} is an archive; name the member to extract"
        names: dict[str, str] = {}
        for file in self.files:
            if names.setdefault(file.download_name, file.url) != file.url:
                yield f"two URLs end in {file.download_name!r}; a mirror could not tell them apart"

    def urls(self) -> list[str]:
        """Each download once, in declaration order."""
        return list(dict.fromkeys(file.url for file in self.files))

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "folder": self.folder, "description": self.description,
                "licence": self.licence, "source": self.source, "options": list(self.options),
                "urls": self.urls(),
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "url": f.url,
                           **({"member": f.member} if f.member else {}),
                           **({"transform": f.transform.__name__} if f.transform else {}),
                           **({"read_when": f.read_when} if f.read_when else {})} for f in self.files]}


def archive_format(url: str) -> ArchiveFormat:
    name = PurePosixPath(urlsplit(url).path).name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    for suffix in ("zip", "tar", "gz"):
        if name.endswith(f".{suffix}"):
            return suffix  # type: ignore[return-value]
    return "file"


@dataclass(frozen=True)
class DataRoot:
    """The folder that holds every data set's folder, and what chose it."""

    path: Path
    origin: str  # "--data-dir", "$HARNESS_DATA_DIR" or "default (platformdirs)"


def default_data_dir() -> Path:
    """The per-user data folder: ``~/.local/share/rnn-harness`` on Linux (``$XDG_DATA_HOME`` honoured)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def data_root(explicit: str | os.PathLike[str] | None = None, *, option: str = "--data-dir") -> DataRoot:
    """The data folder: ``explicit`` (an option), else ``$HARNESS_DATA_DIR``, else :func:`default_data_dir`."""
    if explicit:
        return DataRoot(Path(explicit).expanduser(), option)
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return DataRoot(Path(configured).expanduser(), f"${ENV_DATA_DIR}")
    return DataRoot(default_data_dir(), "default (platformdirs)")


def file_state(root: Path, data_set: DataSet, file: DataFile, *, check_hash: bool = True) -> FileState:
    """Whether ``file`` is under ``root/<folder>/`` with the declared size (and sha256)."""
    path = root / data_set.folder / file.path
    if not path.is_file():
        return "missing"
    if path.stat().st_size != file.size or (check_hash and sha256_of(path) != file.sha256):
        return "mismatch"
    return "ok"
