"""Reading real data sets: where they are, decoding them safely, and caching their processing.

Every task that reads files uses these helpers, so all of them agree on:

* where the data lives: the task option ``data_dir``, else the environment variable
  ``HARNESS_DATA_DIR``, else the per-user folder ``harness data fetch`` fills; each names the
  folder that *contains* the data set's folder (``ptb/``, ``conll2003/``, …);
* what a bad file looks like: :class:`~harness.core.errors.BadInputError` naming the file and
  the line (invalid UTF-8 included), exit code 2;
* caching: :class:`ProcessedCache` keys processed splits by the content hash of every
  file read plus the processing options, so a second run never re-tokenizes and an edited
  file is never served stale;
* the Hugging Face hub: :func:`load_hub_dataset` returns plain rows per split, so a task
  processes hub data exactly like files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.data.datasets import ENV_DATA_DIR, data_root
from harness.core.errors import BadInputError, ConfigError
from harness.core.file_hash import sha256_of

ENV_CACHE_DIR = "HARNESS_CACHE_DIR"


def data_folder(task: str, data_dir: str | None, subfolder: str) -> Path:
    """``<data folder>/<subfolder>``: the task option ``data_dir``, else ``$HARNESS_DATA_DIR``, else the
    per-user folder ``harness data fetch`` writes to (:func:`harness.data.datasets.data_root`).

    Raises ConfigError (exit 2) saying how to fetch the data or which option to set when the
    folder is missing.
    """
    root = data_root(data_dir, option="task option data_dir")
    folder = root.path / subfolder
    if not folder.is_dir():
        raise ConfigError(
            f"{task}: {folder} does not exist (data folder {str(root.path)!r} from {root.origin}); "
            f"fetch the data with `harness data fetch NAME` (`harness data list` names them), or set the "
            f"task option data_dir or ${ENV_DATA_DIR} to the folder that must contain {subfolder}/"
        )
    return folder


def require_file(task: str, path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{task}: data file {path} does not exist")
    return path


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file without their line endings (``\\n`` or ``\\r\\n``).

    Raises BadInputError naming the file, line and column of the first invalid UTF-8 byte.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise BadInputError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise BadInputError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{raw[error.start]:02x} at column {column}); "
            "re-save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the first token
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_of(Path(path))
    return _digests[key]


def default_cache_dir() -> Path:
    configured = os.environ.get(ENV_CACHE_DIR)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnn-harness"


class ProcessedCache:
    """A content-addressed store of processed splits (any JSON-able value), gzip-compressed.

    The key is the sha256 of the namespace, the processing options and the content hash of
    every input file, so changing a file or an option builds afresh and nothing is ever
    invalidated by hand. Writes are atomic (temporary file + rename), so two processes
    building the same entry at once both end with a whole file. ``hits`` and ``builds``
    count what happened, for tests and logs.

    Hand-written on purpose: ``datasets``' cache keys on its own loading script and
    fingerprints, not on our parsing options and local files, and ``joblib.Memory`` would
    pickle (the cache stays JSON so a cached file never runs code when read).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.builds = 0

    def key(self, namespace: str, options: dict[str, Any], files: Iterable[Path]) -> str:
        payload = {"namespace": namespace, "options": options,
                   "files": sorted(file_digest(Path(f)) for f in files)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get_or_build(self, namespace: str, options: dict[str, Any], files: Iterable[Path],
                     build: Callable[[], Any]) -> Any:
        """The cached value for these inputs, or ``build()``'s result, stored for next time."""
        path = self.root / namespace / f"{self.key(namespace, options, files)}.json.gz"
        if path.is_file():
            try:
                with gzip.open(path, "rt", encoding="utf-8") as handle:
                    value = json.load(handle)
                self.hits += 1
                return value
            except (OSError, ValueError, EOFError):
                pass  # a truncated or corrupt entry (disk full, killed writer): rebuild it
        value = build()
        self.builds += 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as handle:
                with gzip.open(handle, "wt", encoding="utf-8") as compressed:
                    json.dump(value, compressed, separators=(",", ":"))
            os.replace(handle.name, path)
        except OSError:
            pass  # a read-only or full cache only costs time, never the run
        return value


class HubSplits(dict[str, list[dict[str, Any]]]):
    """``{split: [row, …]}``, plus ``label_names``: ``{column: class names}`` for every column the
    dataset stores as ``ClassLabel`` ids, alone or per token (e.g. conll2003's ``ner_tags``), so a
    task can turn the ids back into the labels its files would hold."""

    def __init__(self) -> None:
        super().__init__()
        self.label_names: dict[str, list[str]] = {}


def class_label_names(features: Any) -> dict[str, list[str]]:
    """``{column: names}`` of the ``ClassLabel`` columns of a ``datasets.Features``, lists of them included."""
    import datasets

    found: dict[str, list[str]] = {}
    for column, feature in features.items():
        while not isinstance(feature, datasets.ClassLabel) and hasattr(feature, "feature"):
            feature = feature.feature  # List / Sequence of labels: one per token
        if isinstance(feature, datasets.ClassLabel):
            found[column] = list(feature.names)
    return found


def load_hub_dataset(task: str, dataset_id: str, *, config_name: str | None = None,
                     revision: str | None = None) -> HubSplits:
    """A Hugging Face dataset (hub id or local dataset folder) as ``{split: [row, …]}``.

    Split names are mapped to ours: ``validation`` also answers to ``valid``/``dev``.
    The ``datasets`` library caches the download; the task's processing is cached by
    :class:`ProcessedCache` like file data. The result is a plain dict of rows that also
    carries the class names of ``ClassLabel`` columns (:class:`HubSplits`).
    """
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(f"{task}: hub datasets need the `datasets` package (pip install datasets)") from None
    try:
        loaded = datasets.load_dataset(dataset_id, config_name, revision=revision)
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        raise ConfigError(f"{task}: cannot load hub dataset {dataset_id!r}: {type(error).__name__}: {error}") from None
    aliases = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
               "test": "test"}
    splits = HubSplits()
    for name, split in loaded.items():
        ours = aliases.get(name)
        if ours is not None and ours not in splits:
            splits[ours] = [dict(row) for row in split]
            splits.label_names.update(class_label_names(split.features))
    return splits
