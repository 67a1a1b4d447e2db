"""T15: five ``harness tune`` workers share one study; three are stopped mid-trial, two finish it.

Told twice, on a journal file and on PostgreSQL (the ledger, the Optuna study and MLflow on a
throwaway server, as for workers on several machines), each with a ``--lease-seconds`` of 10.
As soon as a victim's trial has written its first checkpoint, the victim is stopped:

- ``killed``: ``kill -9``. Its pid is gone at once, so the next survivor to look (before its
  next trial, or every 2 s while it waits) fails its trial without waiting for the lease.
- ``lost``: SIGSTOP, then ``kill -9`` once the survivors have exited. Its pid lives on (a
  machine that vanished looks the same), so only its lease, no longer renewed, frees its trial.
- ``paused``: SIGSTOP, then SIGCONT once the survivors have exited (a machine that comes back).
  Its trial was failed and run again meanwhile: at its next epoch it finds the lease lost,
  stops that trial without recording anything and exits 0 (before the fix it wrote its MLflow
  run FAILED over KILLED and died with UpdateFinishedTrialError).

A victim is stopped only at a moment it holds no lock (the journal's, SQLite's writer, an open
PostgreSQL transaction), which a stopped process would hold for ever. Each dead trial is FAIL
and queued again with its values (``tuning.max_retries: 1``); a survivor runs the retry, which
resumes from the dead trial's checkpoint. The survivors wait for RUNNING trials of other
workers, so they meet the budget in the same invocation: exactly 8 COMPLETE trials, one
FINISHED MLflow run each, the dead attempts KILLED, nothing left RUNNING.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness_processes import tuning_experiment
from postgres_cluster import MISSING, PostgresCluster, postgres_binaries, skip_without_postgres

NAME = "killtune"
STUDY = f"{NAME}/gru_simple/adding"
BUDGET, EPOCHS = 8, 6
VICTIMS, SURVIVORS = ("killed", "lost", "paused"), ("survivor1", "survivor2")
#: Short, so a stopped worker's trial is freed within seconds; long enough that a live worker on a
#: loaded machine still renews it in time (every sixth of it).
LEASE = 10.0
MAX_RETRIES = 1
#: A dead trial is failed by a survivor before its next trial, so within one trial; waiting
#: survivors look every POLL_SECONDS (harness.tuning.study); plus start-up jitter of a loaded machine.
SLACK = 2.0 + 3.0
#: 20 batches an epoch, a quarter of a second on an idle core: a victim seen after its first epoch's
#: checkpoint has five more to be stopped in, however late the test looks on a loaded machine.
EXPERIMENT = tuning_experiment(cell="gru_simple", budget=BUDGET, train_size=320, length=8, max_epochs=EPOCHS)
EXPERIMENT["tuning"]["max_retries"] = MAX_RETRIES
#: Without reconciliation the survivors would wait for ever for the dead trials: fail well before TIMEOUT.
SURVIVOR_TIMEOUT = 150


@dataclass
class Victim:
    result: Any  # Finished
    trial: int  # the trial it was in
    signalled_at: float  # time.time() of its SIGKILL (killed) or SIGSTOP (lost, paused)


@dataclass
class Story:
    survivors: list[Any]  # Finished
    victims: dict[str, Victim]  # by VICTIMS
    trials: list[Any]
    runs: list[Any]  # MLflow runs of the trials, oldest first
    checkpoints: Path


@dataclass
class Scenario:
    stories: dict[str, Story] = field(default_factory=dict)
    postgres_missing: str = ""


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The journal story beside the PostgreSQL one (they share nothing)."""
    bindir = postgres_binaries()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="killed-workers") as pool:
        journal = pool.submit(_journal_story, directory / "journal", kit)
        if bindir is None:
            return Scenario({"journal": journal.result()}, MISSING)
        cluster = PostgresCluster(bindir)
        try:
            cluster.start()
            postgres = _story(directory / "postgresql", kit, cluster.url("ledger"), cluster)
        finally:
            cluster.stop()
        return Scenario({"journal": journal.result(), "postgresql": postgres})


def _journal_story(directory: Path, kit: Any) -> Story:
    return _story(directory, kit, f"journal://{directory / 'out' / 'tune.journal'}", None)


def _story(directory: Path, kit: Any, storage: str, cluster: PostgresCluster | None) -> Story:
    import optuna

    from harness.experiment.storage_url import parse_storage
    from harness.tuning.tune import open_storage, trials_experiment

    directory.mkdir(parents=True)
    # MLflow: the default SQLite store in the output folder beside the journal, a database of the server else.
    tracking = cluster.url("mlflow") if cluster else f"sqlite:///{directory / 'out' / 'mlflow.db'}"
    kit.write_experiment(directory, NAME, {**EXPERIMENT, "tracking_uri": tracking} if cluster else EXPERIMENT)
    workers = {name: kit.start_harness(directory, "tune", f"{NAME}.yaml", "--storage", storage,
                                       "--lease-seconds", str(LEASE), label=name) for name in (*VICTIMS, *SURVIVORS)}
    checkpoints = directory / "out" / "checkpoints"
    try:
        stopped = _stop_inside_trials({name: workers[name] for name in VICTIMS}, checkpoints, cluster)
        survivors = [workers[name].finish(SURVIVOR_TIMEOUT) for name in SURVIVORS]
        workers["lost"].signal(signal.SIGKILL)  # the machine never comes back (a stopped process dies too)
        workers["paused"].signal(signal.SIGCONT)  # it comes back, its trial long failed and run again
        victims = {name: Victim(workers[name].finish(SURVIVOR_TIMEOUT), *stopped[name]) for name in VICTIMS}
    finally:  # never leave a worker behind, least of all a stopped one
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.kill()
    optuna_storage = open_storage(parse_storage(storage, output_dir=directory), create=False)
    trials = optuna.load_study(study_name=STUDY, storage=optuna_storage).get_trials()
    return Story(survivors, victims, trials, kit.tracked_runs(tracking, trials_experiment(NAME)), checkpoints)


def _stop_inside_trials(victims: dict[str, Any], checkpoints: Path,
                        cluster: PostgresCluster | None) -> dict[str, tuple[int, float]]:
    """SIGKILL ``killed`` and SIGSTOP the others once each one's trial has a checkpoint; return
    (trial, when) for each. Watched together: on a loaded machine one victim can finish a whole
    trial while the test still waits for another."""
    stopped: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + 300
    while len(stopped) < len(victims):
        for name, victim in victims.items():
            trial = None if name in stopped else _checkpointed_trial(victim, checkpoints)
            if trial is not None and name == "killed":
                stopped[name] = (trial, time.time())
                victim.signal(signal.SIGKILL)
            elif trial is not None:
                stopped[name] = (trial, _freeze(victim, cluster))
            elif name not in stopped and victim.process.poll() is not None:
                raise AssertionError(f"{name} exited before it was stopped:\n{victim.finish().explain()}")
        assert time.monotonic() < deadline, f"only {sorted(stopped)} of the victims checkpointed a trial"
        time.sleep(0.02)
    return stopped


def _checkpointed_trial(worker: Any, checkpoints: Path) -> int | None:
    """The trial ``worker`` is training, once it has written a checkpoint (else None)."""
    claims = [line for line in worker.stderr().splitlines() if ": trial " in line and " of the budget)" in line]
    if not claims:
        return None
    trial = int(claims[-1].split(": trial ", 1)[1].split()[0])
    return trial if any(checkpoints.glob(f"tuning/**/trial-{trial}-*/step-*.ckpt.sha256")) else None


def _freeze(victim: Any, cluster: PostgresCluster | None) -> float:
    """SIGSTOP ``victim`` at a moment it holds no lock; returns when it was stopped."""
    import psutil

    for _ in range(500):
        victim.signal(signal.SIGSTOP)
        # The signal lands at the victim's next scheduling point, on a loaded machine some milliseconds
        # later, and it may renew its lease until then: the stop counts from when it has taken effect.
        while psutil.Process(victim.pid).status() != psutil.STATUS_STOPPED:
            time.sleep(0.001)
        stopped_at = time.time()
        time.sleep(0.05)  # a statement it already sent finishes (or waits for a lock: then not idle)
        if not _holds_a_lock(victim.pid, cluster):
            return stopped_at
        victim.signal(signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"worker {victim.pid} never stopped without a lock")


def _holds_a_lock(pid: int, cluster: PostgresCluster | None) -> bool:
    """An exclusive file lock (the journal's flock, SQLite's writer) or a PostgreSQL session that is not idle.

    Shared locks do not count: each SQLite connection in WAL mode holds some for its lifetime."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> …"; a waiter has "->" after the number
        if fields[1:2] != ["->"] and fields[3:5] == ["WRITE", str(pid)]:
            return True
    if cluster is None:
        return False
    import psutil
    import sqlalchemy as sa

    from harness.experiment.storage_url import with_default_driver

    ports = [c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
             if c.raddr and c.raddr.port == cluster.port]
    engine = sa.create_engine(with_default_driver(cluster.url("postgres")), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            busy = connection.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(:ports) "
                                              "AND state <> 'idle'"), {"ports": ports}).scalar_one()
    finally:
        engine.dispose()
    return busy > 0


# ---------------------------------------------------------------------------
# What each story left behind
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["journal", "postgresql"])
def story(request: pytest.FixtureRequest, scenario_of: Any) -> Story:
    scenario = scenario_of(__name__)
    if request.param not in scenario.stories:
        skip_without_postgres(scenario.postgres_missing)
    return scenario.stories[request.param]


def _trial(story: Story, number: int) -> Any:
    return next(t for t in story.trials if t.number == number)


def _retry_of(story: Story, number: int) -> Any:
    retries = [t for t in story.trials if (t.system_attrs.get("retry_history") or [None])[-1] == number]
    assert len(retries) == 1, f"trial {number} was queued again {len(retries)} times"
    return retries[0]


def _longest_trial(story: Story) -> float:
    return max((t.datetime_complete - t.datetime_start).total_seconds()
               for t in story.trials if t.state.name == "COMPLETE")


def test_the_survivors_finish_the_budget_in_the_same_invocation(story: Story) -> None:
    from harness.tuning.tune import slot_holders

    for survivor in story.survivors:
        assert survivor.returncode == 0 and "Traceback" not in survivor.output, survivor.explain()
    for name in ("killed", "lost"):
        assert story.victims[name].result.returncode == -signal.SIGKILL, story.victims[name].result.explain()
    counted = slot_holders(story.trials)
    assert len(counted) == BUDGET and all(t.state.name == "COMPLETE" for t in counted)
    assert not [t.number for t in story.trials if t.state.name in ("RUNNING", "WAITING")]
    # Any other trial is a dead attempt or a surplus ask that never trained.
    dead = {victim.trial for victim in story.victims.values()}
    assert all(t in counted or t.number in dead or t.user_attrs.get("surplus") for t in story.trials)
    assert not list(story.checkpoints.glob("tuning/**/*.ckpt"))  # discarded once the retries completed


@pytest.mark.parametrize("victim", VICTIMS)
def test_a_dead_workers_trial_fails_and_its_retry_resumes_from_its_checkpoint(story: Story, victim: str) -> None:
    dead = _trial(story, story.victims[victim].trial)
    assert dead.state.name == "FAIL" and "stopped without finishing" in dead.user_attrs["fail_reason"]
    retry = _retry_of(story, dead.number)
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert len(retry.system_attrs["retry_history"]) <= MAX_RETRIES
    assert retry.user_attrs["worker"] != dead.user_attrs["worker"]
    assert 1 <= retry.user_attrs["resumed_from_epoch"] < EPOCHS
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))  # each epoch reported once


def test_a_killed_workers_trial_fails_within_one_trial(story: Story) -> None:
    """Its pid is gone: the next survivor to look fails it, before its next trial at the latest."""
    killed = story.victims["killed"]
    failed_at = _trial(story, killed.trial).datetime_complete.timestamp()
    assert killed.signalled_at <= failed_at <= killed.signalled_at + _longest_trial(story) + SLACK


@pytest.mark.parametrize("victim", ["lost", "paused"])
def test_a_stopped_workers_trial_fails_once_its_lease_runs_out_within_one_trial(story: Story, victim: str) -> None:
    """Its pid lives: only the lease frees it, not before it runs out and within one trial after."""
    stopped = story.victims[victim]
    dead = _trial(story, stopped.trial)
    lease_expires = float(dead.user_attrs["lease_expires"])  # the last renewal, before SIGSTOP
    assert lease_expires <= stopped.signalled_at + LEASE
    failed_at = dead.datetime_complete.timestamp()
    assert lease_expires <= failed_at <= lease_expires + _longest_trial(story) + SLACK


def test_a_worker_back_after_its_lease_ran_out_stops_that_trial_and_records_nothing(story: Story, kit: Any) -> None:
    paused = story.victims["paused"]
    assert paused.result.returncode == 0 and "Traceback" not in paused.result.output, paused.result.explain()
    assert "STOPPED after" in paused.result.stderr and "lease lost" in paused.result.stderr
    dead = _trial(story, paused.trial)
    assert "epochs" not in dead.user_attrs  # nothing written by the worker that came back
    run = next(r for r in story.runs if r.info.run_id == dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and kit.tag(run, "failure_reason").startswith("lease lost")


def test_mlflow_has_one_finished_run_per_complete_trial_and_the_dead_attempts_killed(story: Story, kit: Any) -> None:
    by_id = {run.info.run_id: run for run in story.runs}
    complete = [t for t in story.trials if t.state.name == "COMPLETE"]
    assert sorted(by_id[t.user_attrs["mlflow_run_id"]].info.status for t in complete) == ["FINISHED"] * BUDGET
    finished = [run for run in story.runs if run.info.status == "FINISHED"]
    assert sorted(int(kit.tag(run, "trial_number")) for run in finished) == sorted(t.number for t in complete)
    for victim in story.victims.values():
        dead_run = by_id[_trial(story, victim.trial).user_attrs["mlflow_run_id"]]
        assert dead_run.info.status == "KILLED" and kit.tag(dead_run, "reconciled") == "1"
        resumed = by_id[_retry_of(story, victim.trial).user_attrs["mlflow_run_id"]]
        assert kit.tag(resumed, "resumed_from_run") == dead_run.info.run_id
    assert len(story.runs) == BUDGET + len(VICTIMS)  # nothing else: no RUNNING run, no duplicate
