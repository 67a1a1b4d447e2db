"""The ledger's vocabulary, shared by both stores: run states, one row, the :class:`RunLedger` protocol
and when a RUNNING row counts as stale."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.runs.identity import dead_local_owner

PENDING, RUNNING, DONE, FAILED, KILLED = "PENDING", "RUNNING", "DONE", "FAILED", "KILLED"
#: What a ``harness run`` driver claims: a FAILED run is retried, once per invocation however many drivers
#: share the ledger (the ``failed_attempts`` compare-and-set of :meth:`RunLedger.claim`).
CLAIMABLE = (PENDING, FAILED, KILLED)

#: How long a claim holds without a heartbeat; a driver killed with SIGKILL loses its runs
#: to the others this long after its last heartbeat (``--lease-seconds``, $HARNESS_LEASE_SECONDS).
LEASE_ENV = "HARNESS_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 120.0


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
    lease_expires: float | None = None
    started_at: float | None = None  # when the current (or last) attempt was claimed
    epoch: int | None = None  # epochs the current (or last) attempt finished


class RunLedger(Protocol):
    """What the runner needs from a ledger, whatever stores it.

    Every method that changes a row is atomic across processes (and machines, for
    database servers). Methods that act for a worker (``heartbeat``, ``set_mlflow_run``,
    ``finish``) do nothing once the worker no longer owns the row, so a worker whose
    run was reclaimed cannot overwrite the new owner's state.
    """

    def plan(self, experiment: str, runs: list[dict[str, Any]]) -> None:
        """Add the grid's runs not known yet as PENDING (idempotent, safe when workers plan at once)."""

    def reconcile(self, experiment: str) -> list[LedgerRow]:
        """Move RUNNING rows whose worker is gone to KILLED; return them as they are now."""

    def claim(self, experiment: str, worker: str, lease_seconds: float, keys: Collection[str] | None = None,
              exclude: Collection[str] = frozenset(), statuses: tuple[str, ...] = CLAIMABLE,
              failed_attempts: Mapping[str, int] | None = None) -> LedgerRow | None:
        """Take the first run in grid order whose status is in ``statuses``, or None.

        ``failed_attempts`` (key → attempts): a FAILED row is taken only while its attempts still equal
        the mapping's value for its key, checked in the same atomic step as the claim (a compare-and-set),
        so of several drivers holding the same mapping one at most retries it. None: any FAILED row.
        """

    def heartbeat(self, key: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease; False once the worker no longer owns the run."""

    def set_mlflow_run(self, key: str, worker: str, run_id: str) -> None: ...

    def progress(self, key: str, worker: str, epoch: int) -> None:
        """Record that the worker's run finished ``epoch`` epochs (nothing once it no longer owns it)."""

    def finish(self, key: str, worker: str, status: str, reason: str = "") -> None: ...

    def rows(self, experiment: str) -> list[LedgerRow]:
        """Every row of the experiment in grid order."""

    def close(self) -> None: ...


def is_stale(row: Mapping[str, Any], now: float) -> bool:
    """A RUNNING row whose lease expired, or whose owner was a process on this host that is gone."""
    return row["lease_expires"] is None or row["lease_expires"] < now or dead_local_owner(row["owner"])


def stale_reason(row: Mapping[str, Any]) -> str:
    return f"worker {row['owner']} stopped without finishing"


def ledger_row(mapping: Any) -> LedgerRow:
    """A stored row (a SQL result mapping or a replayed journal dict, ``spec`` as JSON text) as a LedgerRow."""
    return LedgerRow(
        key=mapping["key"], experiment=mapping["experiment"], position=mapping["position"], cell=mapping["cell"],
        task=mapping["task"], seed=mapping["seed"], spec=json.loads(mapping["spec"]), status=mapping["status"],
        reason=mapping["reason"] or "", mlflow_run_id=mapping["mlflow_run_id"], attempts=mapping["attempts"],
        owner=mapping["owner"], lease_expires=mapping.get("lease_expires"), started_at=mapping.get("started_at"),
        epoch=mapping.get("epoch"),
    )
