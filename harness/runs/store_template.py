"""A new SQLite MLflow store starts as a copy of an empty, already migrated one.

MLflow builds a store's tables by running its Alembic migrations one after another: 2–3 s of
CPU on a 2-core machine, paid by every new output folder before its first run. For one MLflow
and SQLAlchemy version the migrated empty database is the same file every time, so it is made
once, kept in the processed-data cache folder (``HARNESS_CACHE_DIR``, else the per-user cache),
and copied. MLflow then finds its schema current and opens the copy in milliseconds.

The template holds no experiment, not even MLflow's "Default" (id 0): MLflow creates that one
when it first opens the copy, with the artifact location it would have given a fresh store.
Anything unusual (no writable cache folder, a full disk, a store that appeared meanwhile)
leaves the store to MLflow, which then creates it the slow way.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing, suppress
from pathlib import Path

from harness.data.reading import default_cache_dir


def seed_sqlite_store(database: Path) -> None:
    """Put a migrated empty MLflow store at ``database`` unless something is there already."""
    if database.exists():
        return
    template = _template()
    if template is None:
        return
    staged = database.with_name(f".{database.name}.{os.getpid()}.seed")
    try:
        shutil.copyfile(template, staged)
        os.link(staged, database)  # unlike a rename, never replaces a store another process just made
    except OSError:
        pass  # FileExistsError included: MLflow opens (or creates) whatever is there
    finally:
        staged.unlink(missing_ok=True)


def _template() -> Path | None:
    import mlflow
    import sqlalchemy

    path = default_cache_dir() / "mlflow-stores" / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}.db"
    if path.exists():
        return path
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.unlink(missing_ok=True)
        _migrated_empty_store(staged)
        os.replace(staged, path)  # complete or absent: a concurrent reader never copies half of it
    except (OSError, sqlite3.Error):
        with suppress(OSError):
            staged.unlink(missing_ok=True)
        return None
    return path


def _migrated_empty_store(path: Path) -> None:
    """Let MLflow create its tables in ``path``, then remove the Default experiment it adds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", default_artifact_root=str(path.parent / "unused-artifacts"))
    store.engine.dispose()
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("DELETE FROM experiment_tags")
        connection.execute("DELETE FROM experiments")
