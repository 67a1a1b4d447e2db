"""What progress reporting records and computes, in-process: the ledger's epoch column (and its
migration onto older ledgers), ``harness status``'s summary, the grid ETA, and MLflow's params and tags."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import PostgresCluster, postgres_cluster  # noqa: F401 - a fixture

from harness.core.durations import format_duration
from harness.runs.grid_clock import GridClock
from harness.runs.run_states import DONE, FAILED, PENDING, RUNNING
from harness.runs.ledger import Ledger, open_ledger
from harness.cli.status import format_summary, summarize
from harness.experiment.storage_url import parse_storage

RUNS = [{"key": f"k{i}", "cell": "gru", "task": "adding", "seed": i, "spec": {"training": {"max_epochs": 5}}}
        for i in range(3)]


@pytest.fixture(params=["sqlite", "journal"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else f"journal://{tmp_path}/l.journal"
    opened = open_ledger(parse_storage(url, output_dir=tmp_path))
    yield opened
    opened.close()


def test_a_claim_records_its_start_and_each_epoch_end_its_count(ledger: Any) -> None:
    ledger.plan("grid", RUNS)
    claimed = ledger.claim("grid", "worker-a", 60.0)
    assert claimed.epoch == 0 and claimed.started_at is not None
    ledger.progress("k0", "worker-a", 1)
    ledger.progress("k0", "worker-a", 2)
    ledger.progress("k0", "worker-b", 4)  # not b's run: ignored
    rows = {r.key: r for r in ledger.rows("grid")}
    assert (rows["k0"].status, rows["k0"].epoch) == (RUNNING, 2)
    assert rows["k1"].epoch is None and rows["k1"].started_at is None
    ledger.finish("k0", "worker-a", DONE)
    ledger.progress("k0", "worker-a", 3)  # finished: no longer the worker's to change
    assert ledger.rows("grid")[0].epoch == 2


def test_an_older_sqlite_ledger_gets_the_progress_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as connection:  # the schema before progress was recorded
        connection.execute(
            "CREATE TABLE runs (experiment VARCHAR(200) NOT NULL, key VARCHAR(64) NOT NULL, position INTEGER NOT "
            "NULL, cell VARCHAR(200) NOT NULL, task VARCHAR(200) NOT NULL, seed INTEGER NOT NULL, spec TEXT NOT "
            "NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, mlflow_run_id VARCHAR(64), attempts INTEGER "
            "NOT NULL, owner VARCHAR(200), lease_expires FLOAT, updated_at FLOAT NOT NULL, "
            "PRIMARY KEY (experiment, key))")
        connection.execute("INSERT INTO runs VALUES ('grid', 'k0', 0, 'gru', 'adding', 0, '{}', 'FAILED', 'error: x', "
                           "'r0', 1, NULL, NULL, 0)")
    for _ in range(2):  # the second open finds nothing to add
        ledger = Ledger(f"sqlite:///{path}")
        ledger.close()
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    assert columns[-2:] == ["started_at", "epoch"]
    ledger = Ledger(f"sqlite:///{path}")
    ledger.plan("grid", RUNS)
    old = ledger.rows("grid")[0]
    assert (old.key, old.status, old.reason, old.epoch, old.started_at) == ("k0", FAILED, "error: x", None, None)
    assert ledger.claim("grid", "w", 60.0).key == "k0"
    ledger.progress("k0", "w", 1)
    assert ledger.rows("grid")[0].epoch == 1
    ledger.close()


def test_status_summarises_states_running_epochs_and_reasons(ledger: Any) -> None:
    ledger.plan("grid", RUNS)
    ledger.claim("grid", "worker-a", 60.0)
    ledger.finish("k0", "worker-a", DONE)
    ledger.claim("grid", "worker-a", 60.0)
    ledger.finish("k1", "worker-a", FAILED, "nonfinite: training loss is nan")
    # A worker on this host whose process is gone: status says so (the next run takes the run over).
    assert ledger.claim("grid", f"{socket.gethostname()}:999999999:dead", 60.0, statuses=(PENDING,)).key == "k2"
    ledger.progress("k2", f"{socket.gethostname()}:999999999:dead", 3)
    started = ledger.rows("grid")[2].started_at
    summary = summarize(ledger.rows("grid"), started + 75.0)
    assert summary["counts"] == {DONE: 1, FAILED: 1, RUNNING: 1}
    assert summary["running"][0]["epoch"] == 3 and summary["running"][0]["elapsed_s"] == pytest.approx(75.0)
    lines = format_summary("grid", "sqlite:///x", summary)
    assert lines[0] == "grid: 3 runs: 1 RUNNING, 1 DONE, 1 FAILED  (ledger sqlite:///x)"
    assert lines[2].startswith("  gru × adding × seed 2: epoch 3/5 done, running 1m15s, attempt 1, worker ")
    assert lines[2].endswith("[worker gone: the next `harness run` or worker takes it over]")
    assert lines[4] == "  gru × adding × seed 1: FAILED: nonfinite: training loss is nan"


def test_status_of_an_experiment_that_never_ran_creates_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from harness.cli.main import cli

    (tmp_path / "new.yaml").write_text("cells: [gru]\ntasks: [adding]\nseeds: [0]\noutput_dir: out\n")
    result = CliRunner().invoke(cli, ["status", str(tmp_path / "new.yaml")], catch_exceptions=False)
    assert result.exit_code == 0 and "no runs planned yet" in result.output
    assert not (tmp_path / "out").exists()


def test_the_grid_eta_is_the_mean_run_time_times_the_runs_left() -> None:
    now = [100.0]
    clock = GridClock(lambda: now[0])
    assert clock.eta(4) is None and clock.describe(4) == "elapsed 0s, ETA ?"
    for seconds in (10.0, 30.0):
        clock.start_run()
        now[0] += seconds
        clock.end_run()
    assert clock.eta(3) == pytest.approx(60.0)
    assert clock.describe(3) == "elapsed 40s, ETA 1m00s"


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, "0s"), (59.6, "1m00s"), (185, "3m05s"), (7620, "2h07m"),
                                                (None, "?"), (float("nan"), "?")])
def test_durations_read_as_minutes_and_hours(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_params_hold_settings_and_tags_hold_identity() -> None:
    from harness.runs.tracking import run_params

    config = {"cell": {"name": "gru", "label": "GRU", "options": {"reset": "after"}},
              "task": {"name": "adding", "label": "adding", "options": {"length": 5}}, "seed": 3,
              "model": {"hidden_size": None, "parameter_budget": 1000}, "training": {"max_epochs": 2},
              "device": "cpu", "plugin_versions": {"harness": "0.1.0"}}
    assert run_params(config, "abc") == {
        "cell.options.reset": "after", "task.options.length": 5, "model.parameter_budget": 1000,
        "training.max_epochs": 2, "device": "cpu", "config_hash": "abc"}


def test_a_pruned_trial_ends_finished_with_status_pruned_not_killed(tmp_path: Path) -> None:
    from harness.runs.tracking import PRUNED, Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "trials", tmp_path / "artifacts")
    run_id = tracker.start_run("t0", {"cell": "gru"}, {"model.hidden_size": 8})
    tracker.end_run(run_id, PRUNED, "pruned after epoch 2: val_mse 0.3")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.status"] == "PRUNED"
    assert run.data.tags["harness.pruned_reason"] == "pruned after epoch 2: val_mse 0.3"
    assert "harness.failure_reason" not in run.data.tags
    found = tracker.client.search_runs([tracker.experiment_id], "tags.`harness.status` = 'PRUNED'")
    assert [r.info.run_id for r in found] == [run_id]


def test_an_older_postgresql_ledger_gets_the_progress_columns(postgres_cluster: PostgresCluster) -> None:  # noqa: F811
    import sqlalchemy as sa

    from harness.experiment.storage_url import with_default_driver

    url = with_default_driver(postgres_cluster.new_database())
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # the schema before progress was recorded
        connection.execute(sa.text(
            "CREATE TABLE runs (experiment VARCHAR(200) NOT NULL, key VARCHAR(64) NOT NULL, position INTEGER "
            "NOT NULL, cell VARCHAR(200) NOT NULL, task VARCHAR(200) NOT NULL, seed INTEGER NOT NULL, spec TEXT "
            "NOT NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, mlflow_run_id VARCHAR(64), attempts "
            "INTEGER NOT NULL, owner VARCHAR(200), lease_expires DOUBLE PRECISION, updated_at DOUBLE PRECISION "
            "NOT NULL, PRIMARY KEY (experiment, key))"))
        connection.execute(sa.text("INSERT INTO runs VALUES ('grid', 'k0', 0, 'gru', 'adding', 0, '{}', 'DONE', "
                                   "'', 'r0', 1, NULL, NULL, 0)"))
    engine.dispose()
    for _ in range(2):  # the second open finds nothing to add
        Ledger(url).close()
    ledger = Ledger(url)
    columns = {c["name"]: c for c in sa.inspect(ledger.engine).get_columns("runs")}
    assert {"started_at", "epoch"} <= set(columns) and columns["epoch"]["nullable"]
    ledger.plan("grid", RUNS)
    assert [(r.key, r.status, r.epoch) for r in ledger.rows("grid")][0] == ("k0", DONE, None)
    assert ledger.claim("grid", "w", 60.0).key == "k1"
    ledger.progress("k1", "w", 2)
    assert ledger.rows("grid")[1].epoch == 2
    ledger.close()


def test_a_bar_only_on_a_terminal_and_never_for_workers_sharing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import pty

    from harness.training.progress import RunningLossBar, TimedProgressLines, progress_callbacks

    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "w") as shared_terminal:
        monkeypatch.setattr("sys.stdout", shared_terminal)
        monkeypatch.setattr("sys.stderr", shared_terminal)
        monkeypatch.delenv("HARNESS_PROGRESS_BAR", raising=False)
        assert [type(c) for c in progress_callbacks(True)] == [RunningLossBar]
        assert progress_callbacks(False) == []
        monkeypatch.setenv("HARNESS_PROGRESS_BAR", "0")  # no bars, as for drivers sharing a terminal
        assert [type(c) for c in progress_callbacks(True)] == [TimedProgressLines]
    os.close(controller)
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_PROGRESS_MINUTES", "0")  # a log, with the timed lines turned off
    assert progress_callbacks(True) == []
