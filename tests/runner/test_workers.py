"""``harness worker``: many worker processes on one grid run every run exactly once (subprocesses).

One scenario (:func:`build_scenario`), each step in its own folder (step 1 beside 2-4):

1. journal: two ``harness worker --processes 4`` start in the same second on a 16-run grid
   with ``--storage journal:///…/ledger.journal``: 8 worker processes (forks of the two,
   sharing their imports); MLflow is SQLite in the shared output folder; then
   ``harness report`` collects the results.
2. PostgreSQL, claim race: 8 processes plan and claim 120 runs of one ledger at once.
3. PostgreSQL: ``harness worker --processes 7`` and ``harness run --storage`` start in the
   same second on the 16-run grid (8 workers); the ledger and MLflow each have a database
   of the server, as for workers on several machines. ``harness run`` waits for the
   others and writes the report.
4. PostgreSQL, faults: 4 workers with a 6-second lease on a 6-run grid of longer runs,
   held at a start barrier until all four are up (so each takes one of the first runs);
   ``kill -9`` of two of them mid-run (not reaped until the end, so their pids stay
   alive and only the lease can free their runs), SIGTERM of a third; the fourth
   finishes everything.

PostgreSQL is a throwaway cluster of Debian's package (initdb into a temporary folder,
``pg_ctl`` on a free loopback port, as the user ``nobody`` when the tests run as root),
stopped at the end. Without its binaries the PostgreSQL tests skip, except under CI
(``$CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.experiment.storage_url import parse_storage, with_default_driver
from harness.runs.tracking import FIRST_RETRY_DELAY, RETRY_JITTER
from postgres_cluster import PostgresCluster, postgres_binaries

NAME = "many"
LEASE = 6.0
#: 2 cells × 8 seeds of a tiny adding task: ~1 s each on an idle CPU core.
GRID: dict[str, Any] = {
    "cells": ["vanilla", "gru"],
    "tasks": [{"name": "adding",
               "options": {"train_size": 64, "validation_size": 16, "test_size": 16, "length": 6}}],
    "seeds": list(range(8)),
    "model": {"hidden_size": 8},
    "training": {"max_epochs": 2, "batch_size": 16, "cpu_threads": 1},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}
#: Longer runs (60 epochs of 8 batches, about 2 s on an idle core; 5 epochs took 0.4 s, too
#: short a window to land a signal in on a loaded machine) for the fault step, so a worker can
#: be killed mid-run.
FAULT_GRID: dict[str, Any] = {
    **GRID,
    "cells": ["vanilla"],
    "tasks": [{"name": "adding",
               "options": {"train_size": 128, "validation_size": 16, "test_size": 16, "length": 8}}],
    "seeds": list(range(6)),
    "training": {"max_epochs": 60, "batch_size": 16, "cpu_threads": 1},
}
CLAIM_RACE = Path(__file__).with_name("claim_race.py")


def require_postgres(scenario: Scenario) -> None:
    """Skip without PostgreSQL, but fail under CI, which must never skip these silently."""
    if scenario.postgres_missing:
        message = f"PostgreSQL binaries not found under /usr/lib/postgresql/*/bin ({scenario.postgres_missing})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI installs the postgresql package in .ci/run")
        pytest.skip(message + "; apt-get install postgresql")


# ---------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------


@dataclass
class Step:
    """What one step left behind."""

    results: list[Any]  # Finished, one per process
    ledger: list[Any]  # LedgerRow
    runs: list[Any]  # MLflow runs, oldest first
    directory: Path
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    journal: Step
    postgres: Step | None = None
    faults: Step | None = None
    race: dict[str, Any] | None = None
    postgres_missing: str = ""


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The subprocess story of this module (started with the other modules', see conftest).

    The journal step runs beside the PostgreSQL steps (they share nothing; the lease waits
    and start-ups of one leave CPU time to the other).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal") as beside:
        journal = beside.submit(journal_step, directory / "journal", kit)
        bindir = postgres_binaries()
        if bindir is None:
            return Scenario(journal=journal.result(), postgres_missing="not installed")
        cluster = PostgresCluster(bindir)
        try:
            cluster.start()
            race = subprocess.run([sys.executable, str(CLAIM_RACE), cluster.url("ledger"), "--processes", "8",
                                   "--runs", "120"], check=False, capture_output=True, text=True, timeout=600)
            assert race.returncode == 0, race.stderr
            postgres = postgres_step(directory / "postgres", kit, cluster)
            faults = fault_step(directory / "faults", kit, cluster)
        finally:
            cluster.stop()
        return Scenario(journal.result(), postgres, faults, json.loads(race.stdout))


def journal_step(directory: Path, kit: Any) -> Step:
    directory.mkdir()
    kit.write_experiment(directory, NAME, GRID)
    storage = f"journal://{directory / 'ledger.journal'}"
    began = time.monotonic()
    started = [kit.start_harness(directory, "worker", f"{NAME}.yaml", "--storage", storage, "--processes", "4",
                                 label=f"machine{i}") for i in range(2)]
    results = [s.finish() for s in started]
    seconds = time.monotonic() - began  # no worker process lived longer
    report = kit.run_harness(directory, "report", f"{NAME}.yaml", "--storage", storage)
    return Step(results, ledger_rows(storage), kit.mlflow_runs(directory / "out", NAME), directory,
                {"report": report, "seconds": seconds})


def postgres_step(directory: Path, kit: Any, cluster: PostgresCluster) -> Step:
    directory.mkdir()
    tracking = cluster.url("mlflow")
    kit.write_experiment(directory, NAME, {**GRID, "tracking_uri": tracking})
    storage = cluster.url("ledger")
    started = [kit.start_harness(directory, "worker", f"{NAME}.yaml", "--storage", storage, "--processes", "7",
                                 label="workers"),
               kit.start_harness(directory, "run", f"{NAME}.yaml", "--storage", storage, label="run")]
    results = [s.finish() for s in started]
    return Step(results, ledger_rows(storage, NAME), mlflow_runs(tracking, NAME), directory)


def fault_step(directory: Path, kit: Any, cluster: PostgresCluster) -> Step:
    directory.mkdir()
    tracking = cluster.url("mlflow")
    kit.write_experiment(directory, "faults", {**FAULT_GRID, "tracking_uri": tracking})
    storage = cluster.url("ledger")
    with start_barrier(storage, 4):
        workers = [kit.start_harness(directory, "worker", "faults.yaml", "--storage", storage,
                                     "--lease-seconds", str(LEASE), label=f"worker{i}") for i in range(4)]
    signalled_at = signal_each_mid_run(workers[:3], [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
    survivor = workers[3].finish()
    # Reaped only now: until here the killed workers' pids existed, so only the lease freed their runs.
    results = [w.finish() for w in workers[:3]] + [survivor]
    return Step(results, ledger_rows(storage, "faults"), mlflow_runs(tracking, "faults"), directory,
                {"killed_at": signalled_at[:2], "pids": [w.pid for w in workers]})


def signal_each_mid_run(victims: list[Any], signals: list[int], timeout: float = 300) -> list[float]:
    """Send each victim its signal as soon as its own stderr shows epoch 1 (its first run has
    59 epochs to go); return when each was signalled.

    The victims are watched together, not one after another: on a loaded machine one can
    finish its whole first run while the test still waits for another's first epoch.
    """
    signalled_at: list[float | None] = [None] * len(victims)
    deadline = time.monotonic() + timeout
    while None in signalled_at:
        for index, victim in enumerate(victims):
            if signalled_at[index] is None and "epoch 1/" in victim.stderr():
                signalled_at[index] = time.time()
                victim.signal(signals[index])
            elif signalled_at[index] is None and victim.process.poll() is not None:
                raise AssertionError(f"worker exited before its first epoch:\n{victim.finish().explain()}")
        assert time.monotonic() < deadline, f"no 'epoch 1/' from every victim within {timeout}s"
        time.sleep(0.02)
    return [at for at in signalled_at if at is not None]


@contextmanager
def start_barrier(storage: str, workers: int) -> Iterator[None]:
    """Hold the ledger table locked until ``workers`` sessions wait for it, then let them all go.

    Workers that start up at different speeds (imports take seconds on a busy machine)
    would otherwise let the fastest take every run before the slowest is up. Each worker
    blocks on its first read of the table (planning the grid), after everything else of
    its start-up; PostgreSQL lists it then as waiting for a lock.
    """
    import sqlalchemy as sa

    from harness.runs.ledger import Ledger

    ledger = Ledger(parse_storage(storage, output_dir=Path(".")).url)  # creates the table
    try:
        with ledger.engine.connect() as gate, ledger.engine.connect() as probe:
            gate.execute(sa.text("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE"))
            yield
            deadline = time.monotonic() + 300
            count = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND wait_event = 'relation'")
            while probe.execute(count).scalar_one() < workers:
                assert time.monotonic() < deadline, f"{workers} workers never all reached the ledger"
                probe.rollback()  # a fresh snapshot of pg_stat_activity
                time.sleep(0.2)
            gate.commit()
    finally:
        ledger.close()


def ledger_rows(storage: str, experiment: str = NAME) -> list[Any]:
    from harness.runs.ledger import open_ledger

    ledger = open_ledger(parse_storage(storage, output_dir=Path(".")))
    try:
        return ledger.rows(experiment)
    finally:
        ledger.close()


def mlflow_runs(tracking_uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(with_default_driver(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} at {tracking_uri}"
    return list(client.search_runs([found.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]))


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


@pytest.fixture(scope="module")
def postgres(scenario: Scenario) -> Scenario:
    require_postgres(scenario)
    return scenario


# ---------------------------------------------------------------------------
# Checks shared by the steps
# ---------------------------------------------------------------------------


def assert_every_run_executed_once(step: Step, kit: Any, runs_in_grid: int) -> None:
    """Ledger: every run DONE after one attempt. MLflow: one run per key, FINISHED, the one the ledger names."""
    assert len(step.ledger) == runs_in_grid
    assert {(r.status, r.attempts) for r in step.ledger} == {("DONE", 1)}, [(r.key, r.status, r.attempts)
                                                                            for r in step.ledger]
    keys = [kit.tag(run, "run_key") for run in step.runs]
    assert sorted(keys) == sorted(r.key for r in step.ledger), "an MLflow run per key, no key twice"
    assert {run.info.status for run in step.runs} == {"FINISHED"}
    by_key = {kit.tag(run, "run_key"): run.info.run_id for run in step.runs}
    assert {r.key: r.mlflow_run_id for r in step.ledger} == by_key


def assert_clean_exits(step: Step) -> None:
    for result in step.results:
        assert result.returncode == 0, result.explain()
        for problem in ("Traceback", "database is locked", "already exists"):
            assert problem not in result.output, result.explain()


def workers_that_ran(step: Step, kit: Any) -> set[str]:
    return {kit.tag(run, "worker") for run in step.runs}


# ---------------------------------------------------------------------------
# 1. Journal file, one machine
# ---------------------------------------------------------------------------


def test_journal_eight_workers_run_every_run_exactly_once(scenario: Scenario, kit: Any) -> None:
    step = scenario.journal
    assert_clean_exits(step)
    assert_every_run_executed_once(step, kit, 16)
    # They really shared the work: the runs were spread over several of the 8 processes.
    assert len(workers_that_ran(step, kit)) >= 2, workers_that_ran(step, kit)


def test_journal_workers_are_eight_forks_that_count_their_mlflow_lock_retries(scenario: Scenario) -> None:
    # Eight processes write one SQLite MLflow store: every worker reports its retries of a
    # locked database when it ends. How many depends on the host's load; what cannot depend
    # on it is that each retry first backs off: a worker's MLflow calls run in its training
    # thread, one after another, and no back-off sleeps less than the shortest jittered
    # delay, so no worker can retry more often than its lifetime allows.
    lines = [line for result in scenario.journal.results for line in result.stderr.splitlines()]
    assert sum(1 for line in lines if line.startswith("started worker ")) == 8
    summaries = [line for line in lines if "MLflow lock retries:" in line]
    assert len(summaries) == 8 and all("grid: 16 DONE" in line for line in summaries), summaries
    retries = [int(line.rpartition("MLflow lock retries: ")[2].split(";")[0]) for line in summaries]
    ceiling = scenario.journal.extra["seconds"] / (FIRST_RETRY_DELAY * RETRY_JITTER[0])
    assert all(0 <= count <= ceiling for count in retries), (retries, ceiling)


def test_journal_report_collects_every_run(scenario: Scenario, kit: Any) -> None:
    report = scenario.journal.extra["report"]
    assert report.returncode == 0, report.explain()
    assert "ledger (journal://" in report.stdout and ": 16 DONE" in report.stdout, report.explain()
    rows = kit.read_results(scenario.journal.directory / "reports" / NAME)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"FINISHED"}


def test_the_journal_replays_to_the_same_state(scenario: Scenario) -> None:
    # A fresh reader, replaying the file from its first line, sees what the workers saw.
    again = ledger_rows(f"journal://{scenario.journal.directory / 'ledger.journal'}")
    assert [(r.key, r.status, r.attempts, r.mlflow_run_id) for r in again] == [
        (r.key, r.status, r.attempts, r.mlflow_run_id) for r in scenario.journal.ledger]


# ---------------------------------------------------------------------------
# 2-4. PostgreSQL, as for several machines
# ---------------------------------------------------------------------------


def test_postgres_claim_race_gives_every_run_to_exactly_one_process(postgres: Scenario) -> None:
    race = postgres.race
    assert race is not None
    claimed = [key for claimer in race["claimers"] for key in claimer["claimed"]]
    assert len(claimed) == 120 and len(set(claimed)) == 120
    assert {(r["status"], r["attempts"]) for r in race["rows"]} == {("DONE", 1)}
    assert sum(1 for c in race["claimers"] if c["claimed"]) >= 2  # they really raced


def test_postgres_eight_processes_run_every_run_exactly_once(postgres: Scenario, kit: Any) -> None:
    step = postgres.postgres
    assert step is not None
    assert_clean_exits(step)
    assert_every_run_executed_once(step, kit, 16)
    assert len(workers_that_ran(step, kit)) >= 2, workers_that_ran(step, kit)


def test_postgres_harness_run_waits_for_the_workers_and_reports_everything(postgres: Scenario, kit: Any) -> None:
    step = postgres.postgres
    assert step is not None
    run = step.results[-1]
    assert "grid (postgresql+psycopg2://harness@127.0.0.1:" in run.stdout and ": 16 DONE" in run.stdout, run.explain()
    rows = kit.read_results(step.directory / "reports" / NAME)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"FINISHED"}


def faulty_runs(step: Step, kit: Any, pid: int) -> list[Any]:
    return [run for run in step.runs if (kit.tag(run, "worker") or "").split(":")[1] == str(pid)]


def test_killed_workers_runs_are_reclaimed_after_the_lease_and_finished(postgres: Scenario, kit: Any) -> None:
    step = postgres.faults
    assert step is not None
    for victim, killed_at, pid in zip(step.results[:2], step.extra["killed_at"], step.extra["pids"][:2]):
        assert victim.returncode == -signal.SIGKILL, victim.explain()
        runs = faulty_runs(step, kit, pid)
        killed = [run for run in runs if run.info.status == "KILLED"]
        assert len(killed) == 1 and all(r.info.status == "FINISHED" for r in runs if r not in killed), runs
        orphan = killed[0]
        assert kit.tag(orphan, "reconciled") == "1"
        assert "stopped without finishing" in kit.tag(orphan, "failure_reason")
        # Nobody took the run before its lease ran out (its last heartbeat came a sixth of the
        # lease before the kill, or earlier on a loaded machine): not at the next look (1.5 s).
        assert orphan.info.end_time / 1000 >= killed_at + LEASE / 2, (orphan.info.end_time, killed_at)
        key = kit.tag(orphan, "run_key")
        again = [r for r in step.runs if kit.tag(r, "run_key") == key and r.info.status == "FINISHED"]
        assert len(again) == 1 and kit.tag(again[0], "worker") != kit.tag(orphan, "worker")


def test_sigterm_ends_the_run_killed_and_releases_it_at_once(postgres: Scenario, kit: Any) -> None:
    step = postgres.faults
    assert step is not None
    stopped = step.results[2]
    assert stopped.returncode == 143, stopped.explain()
    runs = faulty_runs(step, kit, step.extra["pids"][2])
    killed = [run for run in runs if run.info.status == "KILLED"]
    assert len(killed) == 1, runs
    assert kit.tag(killed[0], "failure_reason") == "interrupted by SIGTERM"
    assert kit.tag(killed[0], "reconciled") is None  # closed by its own worker, not by the others
    key = kit.tag(killed[0], "run_key")
    assert [r.info.status for r in step.runs if kit.tag(r, "run_key") == key] == ["KILLED", "FINISHED"]


def test_after_the_faults_the_counts_are_still_exact(postgres: Scenario, kit: Any) -> None:
    step = postgres.faults
    assert step is not None
    survivor = step.results[3]
    assert survivor.returncode == 0, survivor.explain()
    assert {r.status for r in step.ledger} == {"DONE"} and len(step.ledger) == 6
    # Three runs were interrupted once (two SIGKILL, one SIGTERM): one extra attempt each.
    assert sorted(r.attempts for r in step.ledger) == [1] * 3 + [2] * 3
    statuses: dict[str, list[str]] = {}
    for run in step.runs:
        statuses.setdefault(kit.tag(run, "run_key"), []).append(run.info.status)
    assert set(statuses) == {r.key for r in step.ledger}
    assert all(s.count("FINISHED") == 1 and "RUNNING" not in s for s in statuses.values()), statuses
    assert sum(len(s) for s in statuses.values()) == 6 + 3
    assert {r.key: r.mlflow_run_id for r in step.ledger} == {
        kit.tag(run, "run_key"): run.info.run_id for run in step.runs if run.info.status == "FINISHED"}
