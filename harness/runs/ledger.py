"""The run ledger: the one place that decides which grid run executes next.

One row per experiment and run key. States: PENDING → RUNNING → DONE | FAILED | KILLED.
A worker claims a run atomically (a conditional UPDATE, so two workers can never take
the same row), holds a lease it renews while training, and records the outcome. A run
whose lease expired (its worker died without cleaning up) is moved to KILLED by
:meth:`Ledger.reconcile`, at the next start or by a worker waiting for the grid, and is
claimable again.

:class:`Ledger` stores it in a SQL database (any SQLAlchemy URL: SQLite with WAL and
``BEGIN IMMEDIATE`` by default, PostgreSQL or MySQL for many machines);
:class:`harness.runs.journal_ledger.JournalLedger` in an append-only journal file. Both follow
:class:`RunLedger`; :func:`open_ledger` picks one from a :class:`StorageChoice`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import sqlalchemy as sa

from harness.runs.journal_ledger import JournalLedger
from harness.runs.ledger_schema import add_missing_columns
from harness.experiment.storage_url import StorageChoice
from harness.runs.storage import initialization_lock

from harness.runs.run_states import (CLAIMABLE, DONE, FAILED, KILLED, PENDING, RUNNING, LedgerRow,
                                     RunLedger, is_stale, ledger_row, stale_reason)

_metadata = sa.MetaData()
runs_table = sa.Table(
    "runs",
    _metadata,
    # One database may hold many experiments, and a run key (a hash of the run's config)
    # does not include the experiment's name: the key is unique only within an experiment.
    sa.Column("experiment", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("cell", sa.String(200), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("mlflow_run_id", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("owner", sa.String(200), nullable=True),
    # Seconds since the epoch: double precision (MySQL's FLOAT would round them to minutes).
    sa.Column("lease_expires", sa.Double, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
    # Progress of the current attempt, for `harness status`: when it was claimed, epochs trained.
    # Nullable: ledgers of older versions get these columns added (harness.runs.ledger_schema).
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("epoch", sa.Integer, nullable=True),
)


def open_ledger(storage: StorageChoice) -> RunLedger:
    """The ledger on ``storage``: a journal file or a SQL database."""
    if storage.kind == "journal":
        assert storage.path is not None
        return JournalLedger(storage.path)
    return Ledger(storage.url)


class Ledger:
    """The ledger in a SQL database (SQLite, PostgreSQL, MySQL)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.clock = clock  # seconds since the epoch; tests pass a manual clock to step leases deterministically
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin_immediate)
            _metadata.create_all(self.engine)  # BEGIN IMMEDIATE serialises workers starting together
            add_missing_columns(self.engine, runs_table)
        else:
            with initialization_lock(url):  # else each would CREATE TABLE
                _metadata.create_all(self.engine)
                add_missing_columns(self.engine, runs_table)

    def plan(self, experiment: str, runs: list[dict[str, Any]]) -> None:
        """Insert the grid's runs that the ledger does not know yet as PENDING.

        Each run dict has key, cell, task, seed and spec (JSON-able). Rows another
        worker inserts meanwhile are skipped (insert-or-ignore), not an error.
        """
        now = self.clock()
        with self.engine.begin() as connection:
            known = set(connection.scalars(sa.select(runs_table.c.key).where(runs_table.c.experiment == experiment)))
            fresh = [
                dict(key=r["key"], experiment=experiment, position=i, cell=r["cell"], task=r["task"], seed=r["seed"],
                     spec=json.dumps(r["spec"], sort_keys=True), status=PENDING, reason="", attempts=0,
                     updated_at=now)
                for i, r in enumerate(runs) if r["key"] not in known
            ]
            if fresh:
                connection.execute(_insert_or_ignore(self.engine.dialect.name), fresh)

    def reconcile(self, experiment: str) -> list[LedgerRow]:
        """RUNNING rows whose worker is gone become KILLED; returns them (for MLflow clean-up).

        A worker is gone when its lease expired, or when it ran on this host and its
        process no longer exists (so a rerun right after ``kill -9`` need not wait).
        """
        now = self.clock()
        with self.engine.begin() as connection:
            running = connection.execute(
                sa.select(runs_table).where(runs_table.c.experiment == experiment, runs_table.c.status == RUNNING)
            ).mappings().all()
            reconciled = []
            for row in (r for r in running if is_stale(r, now)):
                reason = stale_reason(row)
                moved = connection.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.experiment == experiment, runs_table.c.key == row["key"],
                           runs_table.c.status == RUNNING, runs_table.c.owner == row["owner"],
                           # a heartbeat that landed since the read keeps the run alive
                           runs_table.c.lease_expires == row["lease_expires"])
                    .values(status=KILLED, reason=reason, owner=None, lease_expires=None, updated_at=now)
                ).rowcount
                if moved == 1:
                    # Return the rows as they are now (KILLED, with the reason the MLflow run gets).
                    reconciled.append(ledger_row({**row, "status": KILLED, "reason": reason, "owner": None}))
        return reconciled

    def claim(self, experiment: str, worker: str, lease_seconds: float, keys: Collection[str] | None = None,
              exclude: Collection[str] = frozenset(), statuses: tuple[str, ...] = CLAIMABLE,
              failed_attempts: Mapping[str, int] | None = None) -> LedgerRow | None:
        """Atomically take the first claimable run (in grid order), or None when none is left.

        ``failed_attempts``: see :meth:`RunLedger.claim`; the UPDATE repeats its condition, so the
        attempts a driver saw are compared and incremented in one statement.
        The conditional UPDATE is what guarantees one owner; ``FOR UPDATE SKIP LOCKED``
        (PostgreSQL, MySQL 8; SQLite ignores it and serialises writers instead) only lets
        workers starting together take different rows instead of queueing on the first.
        """
        retryable = _retryable(failed_attempts)
        while True:
            with self.engine.begin() as connection:
                query = (
                    sa.select(runs_table.c.key)
                    .where(runs_table.c.experiment == experiment, runs_table.c.status.in_(statuses), retryable)
                    .order_by(runs_table.c.position)
                )
                if keys is not None:
                    query = query.where(runs_table.c.key.in_(list(keys)))
                if exclude:
                    query = query.where(runs_table.c.key.not_in(list(exclude)))
                candidate = connection.scalars(query.limit(1).with_for_update(skip_locked=True)).first()
                if candidate is None:
                    return None
                now = self.clock()
                taken = connection.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.experiment == experiment, runs_table.c.key == candidate,
                           runs_table.c.status.in_(statuses), retryable)
                    .values(status=RUNNING, owner=worker, lease_expires=now + lease_seconds, reason="",
                            mlflow_run_id=None, attempts=runs_table.c.attempts + 1, updated_at=now,
                            started_at=now, epoch=0)
                ).rowcount
                if taken == 1:
                    return self.get(experiment, candidate, connection)
            # Another worker took it between the select and the update: look again.

    def heartbeat(self, key: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease; False if this worker no longer owns the run."""
        with self.engine.begin() as connection:
            return connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.key == key, runs_table.c.owner == worker, runs_table.c.status == RUNNING)
                .values(lease_expires=self.clock() + lease_seconds)
            ).rowcount == 1

    def set_mlflow_run(self, key: str, worker: str, run_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(runs_table).where(runs_table.c.key == key, runs_table.c.owner == worker)
                .values(mlflow_run_id=run_id)
            )

    def progress(self, key: str, worker: str, epoch: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.key == key, runs_table.c.owner == worker, runs_table.c.status == RUNNING)
                .values(epoch=epoch)
            )

    def finish(self, key: str, worker: str, status: str, reason: str = "") -> None:
        if status not in (DONE, FAILED, KILLED):
            raise ValueError(f"cannot finish a run as {status}")
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.key == key, runs_table.c.owner == worker)
                .values(status=status, reason=reason, owner=None, lease_expires=None, updated_at=self.clock())
            )

    def get(self, experiment: str, key: str, connection: sa.Connection | None = None) -> LedgerRow:
        query = sa.select(runs_table).where(runs_table.c.experiment == experiment, runs_table.c.key == key)
        if connection is not None:
            return ledger_row(connection.execute(query).mappings().one())
        with self.engine.connect() as own:
            return ledger_row(own.execute(query).mappings().one())

    def rows(self, experiment: str) -> list[LedgerRow]:
        with self.engine.connect() as connection:
            result = connection.execute(
                sa.select(runs_table).where(runs_table.c.experiment == experiment).order_by(runs_table.c.position)
            ).mappings().all()
        return [ledger_row(r) for r in result]

    def close(self) -> None:
        self.engine.dispose()


def _retryable(failed_attempts: Mapping[str, int] | None) -> Any:
    """The rows a claim may take as far as retries go: not FAILED, or FAILED with the attempts expected."""
    if failed_attempts is None:
        return sa.true()
    by_count: dict[int, list[str]] = {}  # one IN list per attempts count: a few clauses, not one per run
    for key, count in failed_attempts.items():
        by_count.setdefault(count, []).append(key)
    return sa.or_(runs_table.c.status != FAILED,
                  *(sa.and_(runs_table.c.attempts == count, runs_table.c.key.in_(keys))
                    for count, keys in by_count.items()))


def _insert_or_ignore(dialect: str) -> Any:
    """INSERT that skips rows whose key exists (two workers planning the same grid at once)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(runs_table).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(runs_table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return sa.insert(runs_table).prefix_with("IGNORE")
    return sa.insert(runs_table)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # Autocommit at the driver level, so that _sqlite_begin_immediate decides how each
    # transaction begins (SQLAlchemy's documented recipe for pysqlite).
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is
    # locked" when another process wrote in between (the busy timeout cannot help): take
    # the write lock up front, and the timeout queues the processes instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
