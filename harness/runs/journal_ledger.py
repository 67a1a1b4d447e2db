"""The run ledger in an append-only journal file, for several worker processes on one machine.

Each change is one JSON line (an *operation*: plan, claim, heartbeat, mlflow_run, finish,
reconcile); replaying the file from the start gives the state. The file is Optuna's
``JournalFileBackend`` format, locked with ``fcntl`` (:class:`harness.runs.storage.FileLock`):
a worker takes the lock, catches up on the lines written since it last looked, decides,
appends its operation and releases. So a claim is decided on the newest state and two
workers can never claim the same run. The kernel releases the lock of a process killed
with SIGKILL, so a dead worker never blocks the others.

The replay applies an operation only if its precondition still holds (the same conditions
as the SQL ledger's conditional UPDATEs), so even a file written by hand cannot give a run
two owners. Not for NFS: ``fcntl`` locks are unreliable there; use PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from harness.runs.run_states import (CLAIMABLE, DONE, FAILED, KILLED, PENDING, RUNNING, LedgerRow, is_stale, ledger_row,
                            stale_reason)
from harness.runs.storage import journal_lock, open_journal_backend


class JournalLedger:
    """The ledger of :mod:`harness.runs.ledger`'s :class:`RunLedger` protocol, in a journal file."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock  # seconds since the epoch; tests pass a manual clock to step leases deterministically
        self._lock = journal_lock(path)  # held across catching up, deciding and appending
        self._backend = open_journal_backend(path, self._lock)
        self._state: dict[tuple[str, str], dict[str, Any]] = {}
        self._replayed = 0  # operations applied so far

    # Operations ----------------------------------------------------------

    def plan(self, experiment: str, runs: list[dict[str, Any]]) -> None:
        with self._lock:
            self._catch_up()
            fresh = [{"key": r["key"], "position": i, "cell": r["cell"], "task": r["task"], "seed": r["seed"],
                      "spec": json.dumps(r["spec"], sort_keys=True)}
                     for i, r in enumerate(runs) if (experiment, r["key"]) not in self._state]
            if fresh:
                self._append({"op": "plan", "experiment": experiment, "runs": fresh})

    def reconcile(self, experiment: str) -> list[LedgerRow]:
        now = self.clock()
        with self._lock:
            self._catch_up()
            stale = [dict(r) for (e, _), r in self._state.items()
                     if e == experiment and r["status"] == RUNNING and is_stale(r, now)]
            for row in stale:
                self._append({"op": "reconcile", "experiment": experiment, "key": row["key"], "owner": row["owner"],
                              "lease_expires": row["lease_expires"], "reason": stale_reason(row), "time": now})
            return [ledger_row(self._state[(experiment, row["key"])]) for row in stale]

    def claim(self, experiment: str, worker: str, lease_seconds: float, keys: Collection[str] | None = None,
              exclude: Collection[str] = frozenset(), statuses: tuple[str, ...] = CLAIMABLE,
              failed_attempts: Mapping[str, int] | None = None) -> LedgerRow | None:
        with self._lock:
            self._catch_up()
            candidates = sorted(
                (r for (e, k), r in self._state.items()
                 if e == experiment and r["status"] in statuses and (keys is None or k in keys) and k not in exclude
                 and _retryable(r, failed_attempts)),
                key=lambda r: r["position"],
            )
            if not candidates:
                return None
            key = candidates[0]["key"]
            operation = {"op": "claim", "experiment": experiment, "key": key, "worker": worker,
                         "statuses": list(statuses), "lease_expires": self.clock() + lease_seconds,
                         "time": self.clock()}
            if candidates[0]["status"] == FAILED and failed_attempts is not None:
                operation["failed_attempts"] = failed_attempts[key]  # the replay's compare-and-set
            self._append(operation)
            return ledger_row(self._state[(experiment, key)])

    def heartbeat(self, key: str, worker: str, lease_seconds: float) -> bool:
        with self._lock:
            self._catch_up()
            row = self._owned(key, worker)
            if row is None or row["status"] != RUNNING:
                return False
            self._append({"op": "heartbeat", "experiment": row["experiment"], "key": key, "worker": worker,
                          "lease_expires": self.clock() + lease_seconds})
            return True

    def set_mlflow_run(self, key: str, worker: str, run_id: str) -> None:
        with self._lock:
            self._catch_up()
            row = self._owned(key, worker)
            if row is not None:
                self._append({"op": "mlflow_run", "experiment": row["experiment"], "key": key, "worker": worker,
                              "run_id": run_id})

    def progress(self, key: str, worker: str, epoch: int) -> None:
        with self._lock:
            self._catch_up()
            row = self._owned(key, worker)
            if row is not None and row["status"] == RUNNING:
                self._append({"op": "progress", "experiment": row["experiment"], "key": key, "worker": worker,
                              "epoch": epoch})

    def finish(self, key: str, worker: str, status: str, reason: str = "") -> None:
        if status not in (DONE, FAILED, KILLED):
            raise ValueError(f"cannot finish a run as {status}")
        with self._lock:
            self._catch_up()
            row = self._owned(key, worker)
            if row is not None:
                self._append({"op": "finish", "experiment": row["experiment"], "key": key, "worker": worker,
                              "status": status, "reason": reason, "time": self.clock()})

    def rows(self, experiment: str) -> list[LedgerRow]:
        with self._lock:  # shared readers would do, but a whole-file lock keeps this simple
            self._catch_up()
            found = [r for (e, _), r in self._state.items() if e == experiment]
        return [ledger_row(r) for r in sorted(found, key=lambda r: r["position"])]

    def close(self) -> None:
        """Nothing stays open between operations."""

    # Replay --------------------------------------------------------------

    def _owned(self, key: str, worker: str) -> dict[str, Any] | None:
        return next((r for (_, k), r in self._state.items() if k == key and r["owner"] == worker), None)

    def _append(self, operation: dict[str, Any]) -> None:
        """Write one operation (the lock is held) and apply it through the same replay as everyone else."""
        self._repair_torn_tail()
        self._backend.append_logs([operation])
        self._catch_up()

    def _catch_up(self) -> None:
        for operation in self._backend.read_logs(self._replayed):
            _apply(self._state, operation)
            self._replayed += 1

    def _repair_torn_tail(self) -> None:
        """Cut a last line that a killed writer left without its newline.

        Readers skip such a line only while it is the last one; appending after it would
        glue the next operation onto it and make the whole file unreadable (optuna#5138).
        It never took effect (no reader applied it), so dropping it loses nothing.
        """
        with open(self.path, "r+b") as handle:
            position = handle.seek(0, 2)
            if position == 0:
                return
            handle.seek(position - 1)
            if handle.read(1) == b"\n":
                return
            while position > 0:  # back to the last complete line, a block at a time
                start = max(0, position - 65536)
                handle.seek(start)
                newline = handle.read(position - start).rfind(b"\n")
                if newline >= 0:
                    handle.truncate(start + newline + 1)
                    return
                position = start
            handle.truncate(0)


def _retryable(row: dict[str, Any], failed_attempts: Mapping[str, int] | None) -> bool:
    """As the SQL ledger's: not FAILED, or FAILED with the attempts the claiming driver expects."""
    return row["status"] != FAILED or failed_attempts is None or failed_attempts.get(row["key"]) == row["attempts"]


def _apply(state: dict[tuple[str, str], dict[str, Any]], operation: dict[str, Any]) -> None:
    """Apply one journal operation if its precondition holds (see the module docstring)."""
    kind, experiment = operation["op"], operation["experiment"]
    if kind == "plan":
        for run in operation["runs"]:
            state.setdefault((experiment, run["key"]), {
                **run, "experiment": experiment, "status": PENDING, "reason": "", "mlflow_run_id": None,
                "attempts": 0, "owner": None, "lease_expires": None})
        return
    row = state.get((experiment, operation["key"]))
    if row is None:
        return
    if (kind == "claim" and row["status"] in operation["statuses"]
            and (row["status"] != FAILED or operation.get("failed_attempts") in (None, row["attempts"]))):
        row.update(status=RUNNING, owner=operation["worker"], lease_expires=operation["lease_expires"], reason="",
                   mlflow_run_id=None, attempts=row["attempts"] + 1, started_at=operation.get("time"), epoch=0)
    elif kind == "progress" and row["status"] == RUNNING and row["owner"] == operation["worker"]:
        row["epoch"] = operation["epoch"]
    elif kind == "heartbeat" and row["status"] == RUNNING and row["owner"] == operation["worker"]:
        row["lease_expires"] = operation["lease_expires"]
    elif kind == "mlflow_run" and row["owner"] == operation["worker"]:
        row["mlflow_run_id"] = operation["run_id"]
    elif kind == "finish" and row["owner"] == operation["worker"] and operation["status"] in (DONE, FAILED, KILLED):
        row.update(status=operation["status"], reason=operation["reason"], owner=None, lease_expires=None)
    elif (kind == "reconcile" and row["status"] == RUNNING and row["owner"] == operation["owner"]
          and row["lease_expires"] == operation["lease_expires"]):
        row.update(status=KILLED, reason=operation["reason"], owner=None, lease_expires=None)
