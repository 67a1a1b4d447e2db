"""``harness run`` end to end on the tiny 2 cells × 2 tasks × 2 seeds grid (subprocesses).

One scenario (:func:`build_scenario`): the grid runs in folder A while the same file with seed 0
only runs in folder B (at the same time: separate stores); then A is run again, which
must skip everything. The tests below look at what each step left in MLflow, the
ledger, results.csv and the report.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness_processes import installed_provenance

CELLS = ("vanilla", "gru_simple")
TASKS = ("agreement", "copy")
SEEDS = (0, 1)
#: On the CPU, vanilla runs its fused kernel (faster there than ATen's RNN loop); gru_simple
#: has no torch.nn equivalent, so it runs the time loop: the reference loop, or its fused form
#: with the compiled step kernels (fused-native; ./setup.sh builds them).
EXECUTION_PATHS = {"vanilla": {"fused"}, "gru_simple": {"reference", "fused-native"}}


@dataclass
class Scenario:
    dir_a: Path
    dir_b: Path
    first: Any  # Finished
    second_dir_b: Any
    runs_after_first: list[Any]
    rerun: Any
    runs_after_rerun: list[Any]
    ledger_after_rerun: dict[str, dict[str, Any]]


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The subprocess story of this module (started with the other modules', see conftest)."""
    dir_a, dir_b = directory / "a", directory / "b"
    for folder in (dir_a, dir_b):
        folder.mkdir()
        kit.write_experiment(folder, "tiny", kit.tiny_config())
    first, second = kit.run_all((dir_a, ["run", "tiny.yaml"]), (dir_b, ["run", "tiny.yaml", "--set", "seeds=[0]"]))
    assert first.returncode == 0, first.explain()
    assert second.returncode == 0, second.explain()
    runs_after_first = kit.mlflow_runs(dir_a / "out", "tiny")
    rerun = kit.run_harness(dir_a, "run", "tiny.yaml")
    return Scenario(dir_a, dir_b, first, second, runs_after_first, rerun,
                    kit.mlflow_runs(dir_a / "out", "tiny"), kit.ledger_rows(dir_a / "out"))


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


def by_cell_task_seed(runs: list[Any], kit: Any) -> dict[tuple[str, str, int], Any]:
    return {(kit.tag(r, "cell"), kit.tag(r, "task"), int(kit.tag(r, "seed"))): r for r in runs}


def test_first_run_finishes_every_run(scenario: Scenario) -> None:
    assert scenario.first.returncode == 0, scenario.first.explain()
    assert "tiny: 8 finished, 0 failed, 0 skipped" in scenario.first.stdout, scenario.first.explain()


def test_one_mlflow_experiment_named_after_the_file_with_eight_finished_runs(scenario: Scenario, kit: Any) -> None:
    client = kit.mlflow_client(scenario.dir_a / "out")
    names = {e.name for e in client.search_experiments()} - {"Default"}
    assert names == {"tiny", "tiny.comparison"}  # the grid's runs; the report's comparison run (docs/reports.md)
    runs = scenario.runs_after_first
    assert len(runs) == 8
    assert [r.info.status for r in runs] == ["FINISHED"] * 8
    assert set(by_cell_task_seed(runs, kit)) == {(c, t, s) for c in CELLS for t in TASKS for s in SEEDS}
    assert {r.info.run_name for r in runs} == {f"{c}-{t}-s{s}" for c in CELLS for t in TASKS for s in SEEDS}


def test_every_run_has_the_documented_tags(scenario: Scenario, kit: Any) -> None:
    ledger_keys = set(scenario.ledger_after_rerun)
    keys = set()
    param_counts: dict[str, set[int]] = {c: set() for c in CELLS}
    paths: dict[str, set[str]] = {c: set() for c in CELLS}
    for run in scenario.runs_after_first:
        cell, task = kit.tag(run, "cell"), kit.tag(run, "task")
        key = kit.tag(run, "run_key")
        assert re.fullmatch(r"[0-9a-f]{16}", key or ""), run.data.tags
        keys.add(key)
        assert kit.tag(run, "cell_name") == cell
        assert kit.tag(run, "task_name") == task
        assert kit.tag(run, "family") == {"agreement": "classification", "copy": "tagging"}[task]
        assert kit.tag(run, "execution_path") in EXECUTION_PATHS[cell], (cell, task, kit.tag(run, "execution_path"))
        paths[cell].add(kit.tag(run, "execution_path"))
        # The hidden size is a setting: the param model.hidden_size, not also a tag.
        assert run.data.params["model.hidden_size"] == "8" and kit.tag(run, "hidden_size") is None
        param_counts[cell].add(int(kit.tag(run, "param_count")))
        versions = json.loads(kit.tag(run, "plugin_versions"))
        assert {"harness", cell, task} <= set(versions), versions
        assert all(isinstance(v, str) and v for v in versions.values()), versions
        # Built-in plugins come from the harness's own distribution: its RECORD, as installed.
        assert json.loads(kit.tag(run, "plugin_provenance")) == {
            "cell": installed_provenance(cell), "task": installed_provenance(task)}
        assert versions[cell] == versions[task] == installed_provenance(cell)["version"]
        assert kit.tag(run, "git_commit"), "git_commit tag is empty"
        assert kit.tag(run, "device") == "cpu"
        assert kit.tag(run, "status") == "FINISHED"
        assert kit.tag(run, "failure_reason") is None
        assert kit.tag(run, "primary_metric") == {"agreement": "accuracy", "copy": "cross_entropy"}[task]
    assert keys == ledger_keys and len(keys) == 8
    # One count per cell (the stack does not depend on the task: both use the embedding input)
    # and a GRU's three gates' worth of weights is more than the vanilla cell's one.
    assert all(len(counts) == 1 for counts in param_counts.values()), param_counts
    assert min(param_counts["gru_simple"]) > min(param_counts["vanilla"]) > 0
    assert all(len(p) == 1 for p in paths.values()), paths  # the same path for every run of a cell


def test_every_run_has_the_flattened_config_as_params(scenario: Scenario, kit: Any) -> None:
    for run in scenario.runs_after_first:
        params = run.data.params
        assert params["model.hidden_size"] == "8"
        assert params["model.embedding_size"] == "4"
        assert params["training.max_epochs"] == "2"
        assert params["training.batch_size"] == "16"
        assert params["config_hash"] == kit.tag(run, "run_key")
        assert params["task.options.train_size"] == "64"
        # Who the run is (cell, task, seed) is recorded once, as tags, not again as params.
        assert kit.tag(run, "cell_name") == kit.tag(run, "cell") and kit.tag(run, "seed") in ("0", "1")
        assert not {"seed", "cell.name", "cell.label", "task.name", "task.label"} & set(params)


def test_metrics_per_epoch_and_finite_test_metrics(scenario: Scenario, kit: Any) -> None:
    client = kit.mlflow_client(scenario.dir_a / "out")
    for run in scenario.runs_after_first:
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == [0, 1], history
        assert all(math.isfinite(m.value) for m in history)
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
        metrics = run.data.metrics
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        assert metrics["epochs"] == 2
        if kit.tag(run, "task") == "agreement":
            assert 0.0 <= metrics["test_accuracy"] <= 1.0
            buckets = {k: v for k, v in metrics.items() if k.startswith("test_accuracy/")}
            # max_distance 6 with the default bucket width 5: two distance buckets.
            assert set(buckets) == {"test_accuracy/01-05", "test_accuracy/06-10"}, sorted(metrics)
            assert all(0.0 <= v <= 1.0 for v in buckets.values())
        else:
            assert metrics["test_cross_entropy"] > 0
            assert "test_accuracy" not in metrics


def test_results_csv_has_one_finished_row_per_run(scenario: Scenario, kit: Any) -> None:
    rows = kit.read_results(scenario.dir_a / "reports" / "tiny")
    assert len(rows) == 8
    assert {r["status"] for r in rows} == {"FINISHED"}
    assert {(r["cell"], r["task"], int(r["seed"])) for r in rows} == {
        (c, t, s) for c in CELLS for t in TASKS for s in SEEDS}
    for row in rows:
        metric = "test_accuracy" if row["task"] == "agreement" else "test_cross_entropy"
        assert kit.is_finite_number(row[metric]), row


def test_report_has_a_table_per_task(scenario: Scenario) -> None:
    report = scenario.dir_a / "reports" / "tiny"
    markdown = (report / "report.md").read_text(encoding="utf-8")
    sections = markdown.split("## Task: ")[1:]
    assert [s.splitlines()[0].strip() for s in sections] == list(TASKS)
    for section in sections:
        assert re.search(r"^\|.*\|\n\|(?:-+\|)+$", section, re.MULTILINE), section[:500]
        assert "vanilla" in section and "gru_simple" in section
    page = (report / "index.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    positions = [page.find(f">Task: {task}</h2>") for task in TASKS]  # the headings, not the contents' links
    assert all(p >= 0 for p in positions), positions
    assert page.find("<table", positions[0]) < positions[1] and page.find("<table", positions[1]) > 0


def test_rerun_skips_every_finished_run(scenario: Scenario) -> None:
    rerun = scenario.rerun
    assert rerun.returncode == 0, rerun.explain()
    assert "tiny: 0 finished, 0 failed, 8 skipped" in rerun.stdout, rerun.explain()
    before = {r.info.run_id: r.info.status for r in scenario.runs_after_first}
    after = {r.info.run_id: r.info.status for r in scenario.runs_after_rerun}
    assert after == before
    assert {row["status"] for row in scenario.ledger_after_rerun.values()} == {"DONE"}
    assert {row["attempts"] for row in scenario.ledger_after_rerun.values()} == {1}


def test_same_seed_in_another_output_dir_gives_identical_test_metrics(scenario: Scenario, kit: Any) -> None:
    assert scenario.second_dir_b.returncode == 0, scenario.second_dir_b.explain()
    runs_a = by_cell_task_seed(scenario.runs_after_first, kit)
    runs_b = by_cell_task_seed(kit.mlflow_runs(scenario.dir_b / "out", "tiny"), kit)
    assert set(runs_b) == {(c, t, 0) for c in CELLS for t in TASKS}
    for where, b in runs_b.items():
        a = runs_a[where]
        assert kit.tag(a, "run_key") == kit.tag(b, "run_key"), where
        test_a = {k: v for k, v in a.data.metrics.items() if k.startswith("test_")}
        test_b = {k: v for k, v in b.data.metrics.items() if k.startswith("test_")}
        assert test_a and test_a == test_b, where


def test_a_different_seed_gives_different_test_metrics(scenario: Scenario, kit: Any) -> None:
    runs = by_cell_task_seed(scenario.runs_after_first, kit)
    for cell in CELLS:
        for task in TASKS:
            seed0, seed1 = runs[(cell, task, 0)], runs[(cell, task, 1)]
            assert seed0.data.metrics["test_loss"] != seed1.data.metrics["test_loss"], (cell, task)
            assert kit.tag(seed0, "run_key") != kit.tag(seed1, "run_key")
