"""The run ledger: the one place that decides which grid run executes next.

One row per run key. States: PENDING → RUNNING → DONE | FAILED | KILLED. A worker
claims a run atomically (a conditional UPDATE, so two workers can never take the
same row), holds a lease it renews while training, and records the outcome. A run
whose lease expired (its worker died without cleaning up) is moved to KILLED by
:meth:`Ledger.reconcile` at the next start, and is claimable again.

Storage is any SQLAlchemy URL; the default is SQLite (WAL, busy timeout) in the
output folder.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

PENDING, RUNNING, DONE, FAILED, KILLED = "PENDING", "RUNNING", "DONE", "FAILED", "KILLED"
CLAIMABLE = (PENDING, FAILED, KILLED)

_metadata = sa.MetaData()
runs_table = sa.Table(
    "runs",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("experiment", sa.String(200), nullable=False, index=True),
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
    sa.Column("lease_expires", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class LedgerRow:
    key: str
    experiment: str
    position: int
    cell: str
    task: str
    seed: int
    spec: dict[str, Any]
    status: str
    reason: str
    mlflow_run_id: str | None
    attempts: int
    owner: str | None


def worker_id() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Ledger:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        _metadata.create_all(self.engine)

    def plan(self, experiment: str, runs: list[dict[str, Any]]) -> None:
        """Insert the grid's runs that the ledger does not know yet as PENDING.

        Each run dict has key, cell, task, seed and spec (JSON-able).
        """
        now = time.time()
        with self.engine.begin() as connection:
            known = set(connection.scalars(sa.select(runs_table.c.key).where(runs_table.c.experiment == experiment)))
            fresh = [
                dict(key=r["key"], experiment=experiment, position=i, cell=r["cell"], task=r["task"], seed=r["seed"],
                     spec=json.dumps(r["spec"], sort_keys=True), status=PENDING, reason="", attempts=0,
                     updated_at=now)
                for i, r in enumerate(runs) if r["key"] not in known
            ]
            if fresh:
                connection.execute(sa.insert(runs_table), fresh)

    def reconcile(self, experiment: str) -> list[LedgerRow]:
        """RUNNING rows whose worker is gone become KILLED; returns them (for MLflow clean-up).

        A worker is gone when its lease expired, or when it ran on this host and its
        process no longer exists (so a rerun right after ``kill -9`` need not wait).
        """
        now = time.time()
        with self.engine.begin() as connection:
            running = connection.execute(
                sa.select(runs_table).where(runs_table.c.experiment == experiment, runs_table.c.status == RUNNING)
            ).mappings().all()
            stale = [r for r in running if r["lease_expires"] < now or _dead_local_owner(r["owner"])]
            reconciled = []
            for row in stale:
                reason = f"worker {row['owner']} stopped without finishing"
                moved = connection.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.key == row["key"], runs_table.c.status == RUNNING,
                           runs_table.c.owner == row["owner"])
                    .values(status=KILLED, reason=reason, owner=None, lease_expires=None, updated_at=now)
                ).rowcount
                if moved == 1:
                    # Return the rows as they are now (KILLED, with the reason the MLflow run gets).
                    reconciled.append(_row({**row, "status": KILLED, "reason": reason, "owner": None}))
        return reconciled

    def claim(self, experiment: str, worker: str, lease_seconds: float,
              keys: set[str] | None = None, exclude: set[str] = frozenset()) -> LedgerRow | None:
        """Atomically take the first claimable run (in grid order), or None when none is left."""
        while True:
            with self.engine.begin() as connection:
                query = (
                    sa.select(runs_table.c.key)
                    .where(runs_table.c.experiment == experiment, runs_table.c.status.in_(CLAIMABLE))
                    .order_by(runs_table.c.position)
                )
                if keys is not None:
                    query = query.where(runs_table.c.key.in_(keys))
                if exclude:
                    query = query.where(runs_table.c.key.not_in(exclude))
                candidate = connection.scalars(query.limit(1)).first()
                if candidate is None:
                    return None
                now = time.time()
                taken = connection.execute(
                    sa.update(runs_table)
                    .where(runs_table.c.key == candidate, runs_table.c.status.in_(CLAIMABLE))
                    .values(status=RUNNING, owner=worker, lease_expires=now + lease_seconds, reason="",
                            mlflow_run_id=None, attempts=runs_table.c.attempts + 1, updated_at=now)
                ).rowcount
                if taken == 1:
                    return self.get(candidate, connection)
            # Another worker took it between the select and the update: look again.

    def heartbeat(self, key: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease; False if this worker no longer owns the run."""
        with self.engine.begin() as connection:
            return connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.key == key, runs_table.c.owner == worker, runs_table.c.status == RUNNING)
                .values(lease_expires=time.time() + lease_seconds)
            ).rowcount == 1

    def set_mlflow_run(self, key: str, worker: str, run_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(runs_table).where(runs_table.c.key == key, runs_table.c.owner == worker)
                .values(mlflow_run_id=run_id)
            )

    def finish(self, key: str, worker: str, status: str, reason: str = "") -> None:
        if status not in (DONE, FAILED, KILLED):
            raise ValueError(f"cannot finish a run as {status}")
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(runs_table)
                .where(runs_table.c.key == key, runs_table.c.owner == worker)
                .values(status=status, reason=reason, owner=None, lease_expires=None, updated_at=time.time())
            )

    def get(self, key: str, connection: sa.Connection | None = None) -> LedgerRow:
        query = sa.select(runs_table).where(runs_table.c.key == key)
        if connection is not None:
            return _row(connection.execute(query).mappings().one())
        with self.engine.connect() as own:
            return _row(own.execute(query).mappings().one())

    def rows(self, experiment: str) -> list[LedgerRow]:
        with self.engine.connect() as connection:
            result = connection.execute(
                sa.select(runs_table).where(runs_table.c.experiment == experiment).order_by(runs_table.c.position)
            ).mappings().all()
        return [_row(r) for r in result]

    def close(self) -> None:
        self.engine.dispose()


def _dead_local_owner(owner: str | None) -> bool:
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _row(mapping: Any) -> LedgerRow:
    return LedgerRow(
        key=mapping["key"], experiment=mapping["experiment"], position=mapping["position"], cell=mapping["cell"],
        task=mapping["task"], seed=mapping["seed"], spec=json.loads(mapping["spec"]), status=mapping["status"],
        reason=mapping["reason"] or "", mlflow_run_id=mapping["mlflow_run_id"], attempts=mapping["attempts"],
        owner=mapping["owner"],
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
