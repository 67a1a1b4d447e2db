"""Storage in use: locks on a journal file or a database's one-time schema creation, and the
tracking store that sits beside a ledger. URLs are parsed by :mod:`harness.experiment.storage_url`."""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from harness.experiment.storage_url import StorageChoice, parse_storage

if TYPE_CHECKING:
    from harness.experiment import LoadedExperiment


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
    path = sqlite_database(url)
    if path is not None:
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


def sqlite_database(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (absolute), or None for any other store or an in-memory one."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


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


def experiment_storage(loaded: LoadedExperiment, override: str | None = None) -> StorageChoice:
    """The storage of an experiment: ``--storage`` if given, else the file's ``storage``, else the default."""
    if override is not None:
        return parse_storage(override, output_dir=loaded.output_dir, where="--storage: ")
    return parse_storage(loaded.experiment.storage, output_dir=loaded.output_dir, where=loaded.where("storage"))
