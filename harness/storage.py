"""Where shared state lives: one storage URL for the run ledger (and for Optuna's studies).

Three kinds, by how many processes and machines share them:

* ``sqlite`` (the default, ``sqlite:///<output folder>/ledger.db``): one process;
* ``journal`` (``journal:///abs/path/ledger.journal``, or any path ending in ``.journal``):
  an append-only file under fcntl locks, for several processes on one machine (not NFS);
* ``postgresql`` / ``mysql`` (``postgresql://user:password@host:5432/db``): many machines.

:func:`parse_storage` is the one parser both ``harness run``/``worker`` and ``harness tune``
use, so the same URL means the same thing everywhere. This module only names places and
locks them; what is stored there belongs to :mod:`harness.ledger` (and the tuner).
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.config import LoadedExperiment

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


# ---------------------------------------------------------------------------
# Locks: whole-file locks for the journal, one-time schema creation for databases.
# ---------------------------------------------------------------------------


class FileLock:
    """An exclusive ``fcntl.flock`` on ``path``: between processes, and between threads sharing the object.

    Re-entrant for the thread that holds it. The kernel drops the lock when its holder
    dies, even by ``kill -9``, so a dead worker never blocks the others (unlike lock
    files that need a grace period). Fits Optuna's ``JournalFileBackend(lock_obj=...)``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.RLock()  # flock alone does not exclude threads of one process
        self._handle: Any = None
        self._depth = 0

    def acquire(self) -> bool:
        self._threads.acquire()
        if self._depth == 0:
            try:
                handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                except BaseException:
                    handle.close()
                    raise
            except BaseException:
                self._threads.release()
                raise
            self._handle = handle
        self._depth += 1
        return True

    def release(self) -> None:
        if self._depth == 0:
            raise RuntimeError(f"{self.path} is not locked")
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        self._threads.release()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def journal_lock(path: Path) -> FileLock:
    """The lock of the journal ``path``: ``<path>.lock``."""
    return FileLock(path.with_name(path.name + ".lock"))


def open_journal_backend(path: Path, lock: FileLock | None = None) -> Any:
    """Optuna's ``JournalFileBackend`` on ``path``, locked with ``lock`` (default :func:`journal_lock`).

    For Optuna: ``JournalStorage(open_journal_backend(choice.companion_file("optuna")))``.
    """
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalFileBackend(str(path), lock_obj=lock or journal_lock(path))


@contextmanager
def initialization_lock(url: str) -> Iterator[None]:
    """Serialise one-time schema creation on ``url`` across processes and machines.

    Several workers starting in the same second would otherwise all find the tables
    missing and create them at once ("duplicate table"). SQLite: a file lock beside the
    database; PostgreSQL: an advisory lock; MySQL: ``GET_LOCK``; anything else (an MLflow
    tracking server): nothing, the server serialises its own writes.
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        parsed = None
    backend = parsed.get_backend_name() if parsed is not None else ""
    if backend == "sqlite" and parsed is not None and parsed.database:
        path = Path(parsed.database).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".init-lock")):
            yield
        return
    if backend not in ("postgresql", "mysql", "mariadb"):
        yield
        return
    name = "harness-init-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                number = int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)  # fits a bigint
                connection.execute(sa.text("SELECT pg_advisory_lock(:n)"), {"n": number})
                unlock, parameters = "SELECT pg_advisory_unlock(:n)", {"n": number}
            else:
                connection.execute(sa.text("SELECT GET_LOCK(:n, 600)"), {"n": name})
                unlock, parameters = "SELECT RELEASE_LOCK(:n)", {"n": name}
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sa.text(unlock), parameters)
                connection.commit()
    finally:
        engine.dispose()


def database_has_row(url: str, table: str, **equal: Any) -> bool:
    """Whether the SQL database at ``url`` has a row in ``table`` with these column values.

    False when it does not exist yet, lacks the table, or is no SQL database. Lets workers
    skip :func:`initialization_lock` once the last step of a set-up is visible, so they do
    not queue behind each other at every start.
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return False
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        return False
    if backend == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        return False
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            source = sa.table(table, *(sa.column(name) for name in equal))
            query = sa.select(sa.literal_column("1")).select_from(source).where(
                *(source.c[name] == value for name, value in equal.items()))
            return connection.execute(query.limit(1)).first() is not None
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def tracking_uri_for(tracking_uri: str | None, output_dir: Path, storage: StorageChoice, where: str) -> str:
    """The MLflow store runs go to: the file's ``tracking_uri``, else SQLite in the output folder.

    With a database server as storage, workers run on several machines and each would
    write its own local SQLite store, so the report would miss runs: a shared tracking
    URI is required then.
    """
    if tracking_uri:
        return tracking_uri
    if storage.is_server:
        raise ConfigError(
            f"{where}storage is the database server {storage.describe()}, shared by workers on several machines, "
            "but no tracking_uri is set, so each machine would record its runs in its own "
            f"{output_dir / 'mlflow.db'}. Set tracking_uri to an MLflow tracking server (http://host:5000) or a "
            "database of its own (postgresql://user@host:5432/mlflow); for one machine, "
            f"tracking_uri: sqlite:///{(output_dir / 'mlflow.db').resolve()} is fine too"
        )
    from harness.tracking import default_tracking_uri

    return default_tracking_uri(output_dir)


def experiment_storage(loaded: LoadedExperiment, override: str | None = None) -> StorageChoice:
    """The storage of an experiment: ``--storage`` if given, else the file's ``storage``, else the default."""
    if override is not None:
        return parse_storage(override, output_dir=loaded.output_dir, where="--storage: ")
    return parse_storage(loaded.experiment.storage, output_dir=loaded.output_dir, where=loaded.where("storage"))
