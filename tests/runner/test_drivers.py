"""Several ``harness run`` drivers on one shared ledger run every run exactly once (subprocesses).

The ledger is the record of what finished and the guard against two drivers training one run
(``harness worker``, which used to take runs from it too, was removed: issue #21). One scenario
(:func:`build_scenario`), each step in its own folder (step 1 beside 2-4):

1. journal: two ``harness run --storage journal:///…/ledger.journal`` start in the same
   second on a 16-run grid; MLflow is SQLite in the shared output folder. Each waits for the
   other's runs and writes the report (each into its own reports folder).
2. PostgreSQL, claim race: 16 processes plan and claim 160 runs of one ledger at once (T14).
3. PostgreSQL: three ``harness run --storage`` start in the same second on the 16-run grid;
   the ledger and MLflow each have a database of the server, as for drivers on several
   machines. Each waits for the others and writes the report.
4. PostgreSQL, faults: 4 drivers with a 6-second lease on a 6-run grid of longer runs,
   held at a start barrier until all four are up (so each takes one of the first runs);
   ``kill -9`` of two of them mid-run (not reaped until the end, so their pids stay
   alive and only the lease can free their runs), SIGTERM of a third; the fourth
   finishes everything.
5. journal, retry of a FAILED run: one ``harness run`` fails a run that always fails (a ReLU
   RNN at learning rate 100: non-finite loss); then two drivers, held at a start barrier on the
   journal's lock until both wait for it, run the grid again. Together they retry the run once,
   not once each: two attempts in all, in the ledger and in MLflow.

PostgreSQL is a throwaway cluster of Debian's package (initdb into a temporary folder,
``pg_ctl`` on a free loopback port, as the user ``nobody`` when the tests run as root),
stopped at the end. Without its binaries the PostgreSQL tests skip, except under CI
(``$CI`` set), where they fail.
"""

from __future__ import annotations

import json
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

from harness.experiment.storage_url import parse_storage
from harness_processes import tracked_runs
from postgres_cluster import MISSING, PostgresCluster, postgres_binaries, skip_without_postgres

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
#: short a window to land a signal in on a loaded machine) for the fault step, so a driver can
#: be killed mid-run.
FAULT_GRID: dict[str, Any] = {
    **GRID,
    "cells": ["vanilla"],
    "tasks": [{"name": "adding",
               "options": {"train_size": 128, "validation_size": 16, "test_size": 16, "length": 8}}],
    "seeds": list(range(6)),
    "training": {"max_epochs": 60, "batch_size": 16, "cpu_threads": 1},
}
#: One run that always fails: its loss becomes non-finite in its first epoch (tests/runner/test_nonfinite.py).
FAILING_GRID: dict[str, Any] = {
    **GRID,
    "cells": [{"name": "vanilla", "options": {"activation": "relu"}}],
    "tasks": [{"name": "adding",
               "options": {"train_size": 64, "validation_size": 32, "test_size": 32, "length": 12}}],
    "seeds": [0],
    "training": {"max_epochs": 1, "batch_size": 16, "learning_rate": 100.0, "gradient_clip_norm": None},
}
CLAIM_RACE = Path(__file__).with_name("claim_race.py")


def require_postgres(scenario: Scenario) -> None:
    """Skip without PostgreSQL, but fail under CI, which must never skip these silently."""
    if scenario.postgres_missing:
        skip_without_postgres(f"{MISSING} ({scenario.postgres_missing})")


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
    retry: Step | None = None


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The subprocess story of this module (started with the other modules', see conftest).

    The journal step runs beside the PostgreSQL steps (they share nothing; the lease waits
    and start-ups of one leave CPU time to the other).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal") as beside:
        journal = beside.submit(journal_step, directory / "journal", kit)
        retry = beside.submit(retry_step, directory / "retry", kit)  # after the journal step: one thread
        bindir = postgres_binaries()
        if bindir is None:
            return Scenario(journal=journal.result(), postgres_missing="not installed", retry=retry.result())
        cluster = PostgresCluster(bindir)
        try:
            cluster.start()
            race = subprocess.run([sys.executable, str(CLAIM_RACE), cluster.url("ledger"), "--processes", "16",
                                   "--runs", "160"], check=False, capture_output=True, text=True, timeout=600)
            assert race.returncode == 0, race.stderr
            postgres = postgres_step(directory / "postgres", kit, cluster)
            faults = fault_step(directory / "faults", kit, cluster)
        finally:
            cluster.stop()
        return Scenario(journal.result(), postgres, faults, json.loads(race.stdout), retry=retry.result())


def start_drivers(directory: Path, kit: Any, experiment: str, storage: str, count: int,
                  *extra: str, executed: int = 0) -> list[Any]:
    """``count`` ``harness run`` drivers on one storage, each writing its report to ``reports-<i>``; the
    first ``executed`` are real children of this process (``fork=False``), whose pids outlive a kill."""
    return [kit.start_harness(directory, "run", f"{experiment}.yaml", "--storage", storage,
                              "--set", f"reports_dir=reports-{i}", *extra, label=f"driver{i}", fork=i >= executed)
            for i in range(count)]


def journal_step(directory: Path, kit: Any) -> Step:
    directory.mkdir()
    kit.write_experiment(directory, NAME, GRID)
    storage = f"journal://{directory / 'ledger.journal'}"
    results = [s.finish() for s in start_drivers(directory, kit, NAME, storage, 2)]
    return Step(results, ledger_rows(storage), kit.mlflow_runs(directory / "out", NAME), directory)


def retry_step(directory: Path, kit: Any) -> Step:
    directory.mkdir()
    kit.write_experiment(directory, "failing", FAILING_GRID)
    storage = f"journal://{directory / 'ledger.journal'}"
    first = kit.run_harness(directory, "run", "failing.yaml", "--storage", storage)
    with journal_barrier(directory / "ledger.journal", 2):
        drivers = start_drivers(directory, kit, "failing", storage, 2)
    results = [first] + [d.finish() for d in drivers]
    return Step(results, ledger_rows(storage, "failing"), kit.mlflow_runs(directory / "out", "failing"), directory)


@contextmanager
def journal_barrier(journal: Path, workers: int) -> Iterator[None]:
    """Hold the journal's lock until ``workers`` processes wait for it, then let them all go.

    A driver takes the lock first to plan the grid, after the slow part of its start-up (imports,
    MLflow): held there, the drivers start their ledger work together, as :func:`start_barrier`
    does for PostgreSQL. ``/proc/locks`` lists each blocked ``flock`` with ``->`` and the inode.
    """
    from harness.runs.storage import journal_lock

    lock = journal_lock(journal)
    lock.acquire()
    try:
        yield
        where = f":{lock.path.stat().st_ino} "
        deadline = time.monotonic() + 300
        while sum("->" in line and where in line for line in Path("/proc/locks").read_text().splitlines()) < workers:
            assert time.monotonic() < deadline, f"{workers} drivers never all waited for {lock.path}"
            time.sleep(0.1)
    finally:
        lock.release()


def postgres_step(directory: Path, kit: Any, cluster: PostgresCluster) -> Step:
    directory.mkdir()
    tracking = cluster.url("mlflow")
    kit.write_experiment(directory, NAME, {**GRID, "tracking_uri": tracking})
    storage = cluster.url("ledger")
    results = [s.finish() for s in start_drivers(directory, kit, NAME, storage, 3)]
    return Step(results, ledger_rows(storage, NAME), tracked_runs(tracking, NAME), directory)


def fault_step(directory: Path, kit: Any, cluster: PostgresCluster) -> Step:
    directory.mkdir()
    tracking = cluster.url("mlflow")
    kit.write_experiment(directory, "faults", {**FAULT_GRID, "tracking_uri": tracking})
    storage = cluster.url("ledger")
    with start_barrier(storage, 4):
        # The two to be killed are this process's own children: forks of the test server would be
        # reaped by it at once, and a pid gone on this host frees a run without waiting for its lease.
        drivers = start_drivers(directory, kit, "faults", storage, 4, "--lease-seconds", str(LEASE), executed=2)
    signalled_at = signal_each_mid_run(drivers[:3], [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
    survivor = drivers[3].finish()
    # Reaped only now: until here the killed drivers' pids existed, so only the lease freed their runs.
    results = [d.finish() for d in drivers[:3]] + [survivor]
    return Step(results, ledger_rows(storage, "faults"), tracked_runs(tracking, "faults"), directory,
                {"killed_at": signalled_at[:2], "pids": [d.pid for d in drivers]})


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
                raise AssertionError(f"driver exited before its first epoch:\n{victim.finish().explain()}")
        assert time.monotonic() < deadline, f"no 'epoch 1/' from every victim within {timeout}s"
        time.sleep(0.02)
    return [at for at in signalled_at if at is not None]


@contextmanager
def start_barrier(storage: str, workers: int) -> Iterator[None]:
    """Hold the ledger table locked until ``workers`` sessions wait for it, then let them all go.

    Drivers that start up at different speeds (imports take seconds on a busy machine)
    would otherwise let the fastest take every run before the slowest is up. Each driver
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
                assert time.monotonic() < deadline, f"{workers} drivers never all reached the ledger"
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


def drivers_that_ran(step: Step, kit: Any) -> set[str]:
    return {kit.tag(run, "worker") for run in step.runs}


def assert_each_driver_saw_the_whole_grid_and_reported_it(step: Step, kit: Any, runs_in_grid: int) -> None:
    """Each driver waited for the others' runs, then printed the grid's counts and wrote the whole report."""
    for index, result in enumerate(step.results):
        assert f": {runs_in_grid} DONE" in result.stdout, result.explain()
        rows = kit.read_results(step.directory / f"reports-{index}" / NAME)
        assert len(rows) == runs_in_grid and {r["status"] for r in rows} == {"FINISHED"}


# ---------------------------------------------------------------------------
# 1. Journal file, one machine
# ---------------------------------------------------------------------------


def test_journal_two_drivers_run_every_run_exactly_once(scenario: Scenario, kit: Any) -> None:
    step = scenario.journal
    assert_clean_exits(step)
    assert_every_run_executed_once(step, kit, 16)
    # They really shared the work: both drivers trained runs.
    assert len(drivers_that_ran(step, kit)) == 2, drivers_that_ran(step, kit)


def test_journal_each_driver_waits_for_the_other_and_reports_everything(scenario: Scenario, kit: Any) -> None:
    step = scenario.journal
    assert_clean_exits(step)
    for result in step.results:
        assert "grid (journal://" in result.stdout, result.explain()
    assert_each_driver_saw_the_whole_grid_and_reported_it(step, kit, 16)


def test_the_journal_replays_to_the_same_state(scenario: Scenario) -> None:
    # A fresh reader, replaying the file from its first line, sees what the drivers saw.
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
    assert len(claimed) == 160 and len(set(claimed)) == 160
    assert {(r["status"], r["attempts"]) for r in race["rows"]} == {("DONE", 1)}
    assert sum(1 for c in race["claimers"] if c["claimed"]) >= 2  # they really raced


def test_postgres_three_drivers_run_every_run_exactly_once(postgres: Scenario, kit: Any) -> None:
    step = postgres.postgres
    assert step is not None
    assert_clean_exits(step)
    assert_every_run_executed_once(step, kit, 16)
    assert len(drivers_that_ran(step, kit)) >= 2, drivers_that_ran(step, kit)


def test_postgres_each_driver_waits_for_the_others_and_reports_everything(postgres: Scenario, kit: Any) -> None:
    step = postgres.postgres
    assert step is not None
    for result in step.results:
        assert "grid (postgresql+psycopg2://harness@127.0.0.1:" in result.stdout, result.explain()
    assert_each_driver_saw_the_whole_grid_and_reported_it(step, kit, 16)


def faulty_runs(step: Step, kit: Any, pid: int) -> list[Any]:
    return [run for run in step.runs if (kit.tag(run, "worker") or "").split(":")[1] == str(pid)]


def test_a_killed_drivers_runs_are_reclaimed_after_the_lease_and_finished(postgres: Scenario, kit: Any) -> None:
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
    assert kit.tag(killed[0], "reconciled") is None  # closed by its own driver, not by the others
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


# ---------------------------------------------------------------------------
# 5. Journal file: a FAILED run retried once by drivers started together
# ---------------------------------------------------------------------------


def test_drivers_started_together_retry_a_failed_run_once_in_all(scenario: Scenario, kit: Any) -> None:
    step = scenario.retry
    assert step is not None
    first, *drivers = step.results
    for result in step.results:  # a run failed: exit 1, but no crash
        assert result.returncode == 1 and "Traceback" not in result.output, result.explain()
    (row,) = step.ledger
    assert (row.status, row.attempts) == ("FAILED", 2), row  # the first attempt and one retry
    assert row.reason.startswith("nonfinite:"), row.reason
    # Exactly one of the two drivers took the retry; the other found the attempts changed and left it.
    assert sorted("attempt 2" in driver.stderr for driver in drivers) == [False, True], [d.stderr for d in drivers]
    assert "attempt 3" not in "".join(driver.stderr for driver in drivers)
    assert [run.info.status for run in step.runs] == ["FAILED", "FAILED"]
    assert {kit.tag(run, "run_key") for run in step.runs} == {row.key}
    assert row.mlflow_run_id == step.runs[-1].info.run_id
