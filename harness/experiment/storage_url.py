"""Storage URLs: where shared state lives, one URL for the run ledger (and for Optuna's studies).

Three kinds, by how many processes and machines share them:

* ``sqlite`` (the default, ``sqlite:///<output folder>/ledger.db``): one process;
* ``journal`` (``journal:///abs/path/ledger.journal``, or any path ending in ``.journal``):
  an append-only file under fcntl locks, for several processes on one machine (not NFS);
* ``postgresql`` / ``mysql`` (``postgresql://user:password@host:5432/db``): many machines.

:func:`parse_storage` is the one parser both ``harness run``/``worker`` and ``harness tune``
use, so the same URL means the same thing everywhere. This module only names places and
parses them (the experiment schema checks ``storage:`` with it); :mod:`harness.runs.storage` locks
them, and what is stored there belongs to :mod:`harness.runs.ledger` (and the tuner).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.core.errors import ConfigError

StorageKind = Literal["sqlite", "journal", "postgresql", "mysql"]
JOURNAL_SCHEME = "journal://"
#: The storage URL from the environment (below ``--storage``, above the file's ``storage``),
#: so a password need not appear on command lines, where ``ps`` shows it.
STORAGE_ENV = "HARNESS_STORAGE"
_FORMS = ("sqlite:///path/ledger.db (one process), journal:///abs/path/ledger.journal (several processes "
          "on one machine) or postgresql://user:password@host:5432/database (many machines)")


@dataclass(frozen=True)
class StorageChoice:
    """A parsed storage URL.

    Attributes:
        kind: ``sqlite``, ``journal``, ``postgresql`` or ``mysql``.
        url: for SQL kinds a SQLAlchemy URL (sqlite paths made absolute); for ``journal``,
            ``journal:///abs/path``.
        path: the file of ``sqlite`` and ``journal``; None for database servers.
    """

    kind: StorageKind
    url: str
    path: Path | None = None

    @property
    def is_sql(self) -> bool:
        """Whether :attr:`url` is a SQLAlchemy URL (Optuna: ``RDBStorage(url)``)."""
        return self.kind != "journal"

    @property
    def is_server(self) -> bool:
        """A database server, reachable from many machines (so a local MLflow store would scatter runs)."""
        return self.kind in ("postgresql", "mysql")

    @property
    def shared_by_processes(self) -> bool:
        """Safe for several worker processes at once (SQLite is documented as one process)."""
        return self.kind != "sqlite"

    def describe(self) -> str:
        """The URL for messages, password hidden."""
        if not self.is_sql:
            return self.url
        import sqlalchemy as sa

        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def companion_file(self, name: str) -> Path:
        """A sibling journal for another component: ``ledger.journal`` → ``ledger.<name>.journal``.

        Optuna's JournalStorage replays every line of its file, so it cannot share the
        ledger's journal; it gets ``companion_file("optuna")`` instead.
        """
        if self.kind != "journal" or self.path is None:
            raise ValueError(f"companion files exist only for journal storage, not {self.kind}")
        return self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix}")


def default_storage(output_dir: Path) -> StorageChoice:
    """SQLite in the output folder: the single-process default."""
    path = (output_dir / "ledger.db").resolve()
    return StorageChoice("sqlite", f"sqlite:///{path}", path)


def parse_storage(url: str | None, *, output_dir: Path, where: str = "storage: ") -> StorageChoice:
    """Parse a storage URL (None: :func:`default_storage`). Raises ConfigError (exit 2) naming ``where``."""
    if url is None:
        return default_storage(output_dir)
    text = url.strip()
    if text.startswith(JOURNAL_SCHEME):
        return _journal(text[len(JOURNAL_SCHEME):], url, where)
    if "://" not in text:
        if text.endswith(".journal"):
            return _journal(text, url, where)
        raise ConfigError(f"{where}{url!r} is not a storage URL; use {_FORMS}")
    return _sql(text, url, where)


def _journal(path_text: str, url: str, where: str) -> StorageChoice:
    if not path_text:
        raise ConfigError(f"{where}{url!r} names no file; use journal:///abs/path/ledger.journal")
    path = Path(path_text).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"{where}{url!r} is a folder; name the journal file, e.g. {path / 'ledger.journal'}")
    return StorageChoice("journal", f"{JOURNAL_SCHEME}{path}", path)


def _sql(text: str, url: str, where: str) -> StorageChoice:
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(text)
    except sa.exc.ArgumentError as error:
        raise ConfigError(f"{where}{url!r} is not a valid URL ({error}); use {_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"{where}{url!r} is an in-memory database, which no other process can see; "
                              "name a file: sqlite:///path/ledger.db")
        path = Path(parsed.database).expanduser().resolve()
        return StorageChoice("sqlite", parsed.set(database=str(path)).render_as_string(hide_password=False), path)
    if backend in ("postgresql", "mysql", "mariadb"):
        if not parsed.database:
            raise ConfigError(f"{where}{parsed.render_as_string()!r} names no database; "
                              "add it to the end, e.g. postgresql://user@host:5432/harness")
        kind: StorageKind = "postgresql" if backend == "postgresql" else "mysql"
        choice = StorageChoice(kind, with_default_driver(parsed.render_as_string(hide_password=False)))
        if kind == "postgresql":
            require_postgres_driver(choice.url, where)
        return choice
    raise ConfigError(f"{where}{parsed.render_as_string()!r}: unsupported storage {backend!r}; use {_FORMS}")


def with_default_driver(url: str) -> str:
    """``postgresql://…`` → ``postgresql+psycopg2://…``: the driver this project installs.

    SQLAlchemy picks the driver of a bare ``postgresql://`` by its own version (psycopg2
    before 2.1, psycopg 3 from 2.1 on); naming it keeps one URL working everywhere, for the
    ledger, Optuna and MLflow alike. URLs that name a driver are left alone.
    """
    return "postgresql+psycopg2://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def require_postgres_driver(url: str, where: str) -> None:
    """ConfigError naming the extra to install when psycopg2, the driver it provides, is missing.

    Checked when the URL is parsed, so a missing driver stops a command before it creates
    anything. A URL naming another driver (postgresql+psycopg://) is the user's choice.
    """
    import importlib

    import sqlalchemy as sa

    driver = sa.engine.make_url(url).get_driver_name()
    if driver != "psycopg2":
        return
    try:
        importlib.import_module(driver)
    except ImportError:
        raise ConfigError(f"{where}PostgreSQL storage needs its driver {driver!r}, which is not installed; "
                          "install it with: pip install 'rnn-harness[postgres]'") from None
