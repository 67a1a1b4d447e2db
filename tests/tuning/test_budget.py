"""Budget accounting and liveness on real Optuna storages (SQLite and a journal file), without training.

Several workers are played by several StudyDrivers on one study, each with its own worker
id, in one process: what they do to the storage is exactly what separate processes would do.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.experiment import load_experiment
from harness.training.interrupts import Interrupts
from harness.core.loading import load_plugins
from harness.experiment.storage_url import parse_storage
from harness.runs.tracking import Tracker
from harness.tuning.tune import open_storage
from harness.tuning.space import plan_studies, suggest
from harness.tuning.study import StudyDriver, Worker, slot_holders
from harness.tuning.trial import COMPLETE, TrialExecutor, TrialOutcome, check_still_ours
from manual_clock import ManualClock
from postgres_cluster import postgres_cluster  # noqa: F401 - a fixture

EXPERIMENT = """\
# Budget tests: harness tune budget.yaml
cells: [gru]
tasks: [{name: adding, options: {length: 5}}]
seeds: [0]
tuning:
  trials: 2
  max_retries: MAX_RETRIES
  search_space:
    training.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}
"""


@pytest.fixture(scope="module")
def plugins() -> Any:
    return load_plugins()


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    """The trials' MLflow store (creating one is slow: share it; no run here has an MLflow run)."""
    directory = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{directory / 'mlflow.db'}", "budget-trials", directory / "artifacts")


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def make_driver(request: pytest.FixtureRequest, tmp_path: Path, plugins: Any, tracker: Tracker) -> Any:
    """``make_driver(worker, max_retries=3, lease=60)``: a driver of one shared study, as worker ``worker``.

    On each storage kind ``harness tune`` takes; PostgreSQL is a fresh database on the session's server.
    """
    import optuna

    urls = {"sqlite": lambda: f"sqlite:///{tmp_path / 'ledger.db'}",
            "journal": lambda: f"journal://{tmp_path / 'x.journal'}",
            "postgresql": lambda: request.getfixturevalue("postgres_cluster").new_database()}
    url = urls[request.param]()
    storage = open_storage(parse_storage(url, output_dir=tmp_path))
    messages: list[str] = []

    clock = ManualClock()  # every driver's leases on one clock that only the test moves

    def make(worker: str, max_retries: int = 3, lease: float = 60.0) -> StudyDriver:
        path = tmp_path / "budget.yaml"
        path.write_text(EXPERIMENT.replace("MAX_RETRIES", str(max_retries)), encoding="utf-8")
        loaded = load_experiment(path)
        (plan,) = plan_studies(loaded, plugins)
        study = optuna.create_study(storage=storage, study_name=plan.name, direction=plan.direction,
                                    load_if_exists=True)
        assert loaded.experiment.tuning is not None
        return StudyDriver(plan, study, storage, loaded.experiment.tuning,
                           Worker(worker, lease, Interrupts(), tracker, messages.append, clock))

    make.messages = messages  # type: ignore[attr-defined]
    make.clock = clock  # type: ignore[attr-defined]
    return make


def dead_worker() -> str:
    """A worker id of this host whose process has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:deadbeef"


def claim(driver: StudyDriver) -> Any:
    claimed = driver._claim()
    if claimed is not None:
        suggest(claimed[0], driver.plan.space)
    return claimed


def test_a_worker_that_asks_after_the_budget_filled_gets_a_surplus_trial(make_driver: Any) -> None:
    # Three workers all counted fewer than 2 trials and asked: the third ask is surplus.
    a, b, c = make_driver("host:1:a"), make_driver("host:2:b"), make_driver("host:3:c")
    assert claim(a)[1] == 1 and claim(b)[1] == 2
    assert claim(c) is None
    trials = c.study.get_trials()
    assert [t.state.name for t in trials] == ["RUNNING", "RUNNING", "FAIL"]
    assert trials[2].user_attrs["surplus"] is True and "surplus" in trials[2].user_attrs["fail_reason"]
    assert [t.number for t in slot_holders(trials)] == [0, 1]


def test_a_claim_being_written_by_a_live_worker_is_never_reconciled(make_driver: Any) -> None:
    """Another tuner's reconcile can read a claim between its writes: whatever it sees (the order
    _claim writes in, or an owner without a lease yet), the live owner's trial stays RUNNING."""
    holder, other = make_driver(f"{socket.gethostname()}:{os.getpid()}:holder"), make_driver("otherhost:7:other")
    now = holder.clock()
    attributes = {"lease_expires": now + 60, "claimed_at": now, "worker": holder.worker}
    for order in (["lease_expires", "claimed_at", "worker"], ["worker", "claimed_at", "lease_expires"]):
        trial = holder.study.ask()
        for key in order:
            trial.set_user_attr(key, attributes[key])
            other.reconcile()
            assert other.study.get_trials()[trial.number].state.name == "RUNNING", (order, key)
        suggest(trial, holder.plan.space)  # the holder goes on with its trial


def test_a_dead_local_workers_trial_is_failed_and_queued_again(make_driver: Any) -> None:
    dead, alive = make_driver(dead_worker()), make_driver("otherhost:7:alive")
    trial, _ = claim(dead)
    claim(alive)  # another host, lease still valid: left alone
    rescuer = make_driver(f"{socket.gethostname()}:1:rescuer")
    rescuer.reconcile()
    trials = rescuer.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "WAITING"]
    assert trials[0].user_attrs["fail_reason"] == f"worker {dead.worker} stopped without finishing"
    assert trials[2].params == trials[0].params and trials[2].system_attrs["retry_history"] == [trial.number]
    assert len(slot_holders(trials)) == 2  # the retry holds the dead trial's slot: the budget is unchanged
    assert any("queued again" in m for m in make_driver.messages)
    # The next ask takes the queued retry, with its values, not a new point.
    retried, place = claim(rescuer)
    assert retried.number == 2 and retried.params == trials[0].params and place == 2


def test_an_expired_lease_of_another_host_is_reconciled_too(make_driver: Any) -> None:
    remote = make_driver("otherhost:7:remote", lease=30.0)
    claim(remote)
    local = make_driver("thishost:1:local")
    make_driver.clock.advance(29.9)
    local.reconcile()
    assert [t.state.name for t in local.study.get_trials()] == ["RUNNING"]  # lease not expired yet
    make_driver.clock.advance(0.2)
    local.reconcile()
    assert [t.state.name for t in local.study.get_trials()] == ["FAIL", "WAITING"]


def test_a_worker_whose_lease_ran_out_while_it_trained_records_nothing_of_its_trial(make_driver: Any) -> None:
    """A paused or cut-off worker comes back to a trial another worker failed and queued again. Even
    when its executor says COMPLETE (it finished as the other reconciled), nothing is told and nothing
    raises: the trial stays FAIL and its retry WAITING for whoever asks next."""
    import optuna

    paused, rescuer = make_driver("otherhost:7:paused", lease=30.0), make_driver("thishost:1:rescuer")

    class TrainsWhileItsLeaseRunsOut:
        def run(self, plan: Any, trial: Any, params: Any) -> TrialOutcome:
            make_driver.clock.advance(31)
            rescuer.reconcile()
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                check_still_ours(trial)  # the executor's last look before COMPLETE
            return TrialOutcome(COMPLETE, 0.5, epochs=4)

    trial, _ = claim(paused)
    paused._run(trial, trial.params, TrainsWhileItsLeaseRunsOut())  # type: ignore[arg-type]
    trials = rescuer.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"] and "epochs" not in trials[0].user_attrs
    assert any("STOPPED after 4 epoch(s): lease lost" in m for m in make_driver.messages)


def test_an_error_after_another_worker_failed_the_trial_ends_the_attempt_lost_not_failed(
        make_driver: Any, plugins: Any, tracker: Tracker, tmp_path: Path) -> None:
    """The paused worker, back, fails writing its checkpoint into the folder the finished retry deleted
    (seen in the five-worker scenario): that error is not the trial's, whose fate another worker already
    decided. The attempt is lost: its MLflow run KILLED (``lease lost``), nothing told to Optuna, the
    retry's checkpoint folder left alone."""
    paused, rescuer = make_driver("otherhost:7:paused", lease=30.0), make_driver("thishost:1:rescuer")
    checkpoint_folders: list[Path] = []

    class BackAfterItsLease(TrialExecutor):
        def _train(self, trial_loaded: Any, spec: Any, run_id: str, pruning: Any, checkpoint_key: str) -> Any:
            folder = self.loaded.output_dir / "checkpoints" / checkpoint_key
            folder.mkdir(parents=True)
            (folder / "step-0000000020.ckpt").write_bytes(b"the retry's")
            checkpoint_folders.append(folder)
            make_driver.clock.advance(31)
            rescuer.reconcile()
            raise FileNotFoundError(2, "No such file or directory", str(folder / "step-0000000100.ckpt.sha256"))

    executor = BackAfterItsLease(load_experiment(tmp_path / "budget.yaml"), plugins, tracker, Interrupts(),
                                 verbose=False)
    trial, _ = claim(paused)
    paused._run(trial, trial.params, executor)
    trials = rescuer.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"] and "epochs" not in trials[0].user_attrs
    assert any("STOPPED after 0 epoch(s): lease lost" in m for m in make_driver.messages)
    (run,) = [r for r in tracker.runs() if r.run_id == trials[0].user_attrs["mlflow_run_id"]]
    assert run.status == "KILLED" and run.tag("failure_reason").startswith("lease lost")
    assert (checkpoint_folders[0] / "step-0000000020.ckpt").read_bytes() == b"the retry's"


def test_after_max_retries_a_failed_trial_spends_its_slot(make_driver: Any) -> None:
    first = make_driver(dead_worker(), max_retries=1)
    claim(first)
    rescuer = make_driver("thishost:1:rescuer", max_retries=1)
    rescuer.reconcile()  # trial 0 dead → retried as trial 1
    second = make_driver(dead_worker(), max_retries=1)
    assert claim(second)[0].number == 1
    rescuer.reconcile()  # trial 1 dead too → max_retries reached: not queued again
    trials = rescuer.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert [t.number for t in slot_holders(trials)] == [1]
    assert any("not retried (max_retries 1)" in m for m in make_driver.messages)


def test_a_study_started_under_other_settings_is_refused_not_mixed(tmp_path: Path, plugins: Any) -> None:
    from harness.core.errors import ConfigError
    from harness.tuning.tune import open_study

    storage = open_storage(parse_storage(None, output_dir=tmp_path))
    path = tmp_path / "budget.yaml"
    path.write_text(EXPERIMENT.replace("MAX_RETRIES", "3"), encoding="utf-8")
    loaded = load_experiment(path)
    (plan,) = plan_studies(loaded, plugins)
    assert loaded.experiment.tuning is not None
    study = open_study(loaded, plan, storage, loaded.experiment.tuning)
    assert study.user_attrs["trials"] == 2 and study.user_attrs["metric"] == "val_mse"
    # A bigger budget continues the same study; other epochs per trial would not be comparable.
    more = load_experiment(path, ["tuning.trials=5"])
    assert more.experiment.tuning is not None
    assert open_study(more, plan, storage, more.experiment.tuning).user_attrs["trials"] == 5
    longer = load_experiment(path, ["training.max_epochs=9"])
    (longer_plan,) = plan_studies(longer, plugins)
    assert longer.experiment.tuning is not None
    with pytest.raises(ConfigError, match=r"started with other settings \(fixed\.training\.max_epochs differ\)"):
        open_study(longer, longer_plan, storage, longer.experiment.tuning)
