"""build_report against a real MLflow store on SQLite holding synthetic runs.

The runs are written with the Tracker's own methods, in the documented layout; the
expected numbers are computed here from the raw values, independently of the report.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.reports.report import ReportPaths, build_report
from harness.runs.tracking import Tracker

SEEDS = (0, 1, 2)
SCRIPT = "<script>alert(1)</script>"
GROUPS = ("01-05", "06-10", "11-15")
#: agreement: test accuracy per seed, and per distance bucket (same for every seed, plus a small offset).
AGREEMENT = {
    "vanilla": ("vanilla", [0.61, 0.64, 0.58], (0.96, 0.71, 0.51)),
    "gru": ("gru", [0.90, 0.93, 0.91], (0.99, 0.93, 0.86)),
    "lstm": ("lstm", [0.86, 0.88, 0.91], (0.99, 0.92, 0.80)),
    SCRIPT: ("gru_simple", [0.70, 0.72, 0.75], (0.98, 0.80, 0.62)),
}
#: adding: test mse per seed; lstm's seed 2 fails, vanilla has only seed 0.
ADDING = {"gru": ("gru", [0.010, 0.012, 0.011]), "lstm": ("lstm", [0.015, 0.017]), "vanilla": ("vanilla", [0.05])}
FAILURE = "error: RuntimeError: out of memory (<oops>)"


def _run(tracker: Tracker, task: str, cell: str, cell_name: str, seed: int, test: dict[str, float],
         status: str = "FINISHED", reason: str = "") -> str:
    primary, higher = ("accuracy", True) if task == "agreement" else ("mse", False)
    tags = {"run_key": f"{cell}|{task}|{seed}", "cell": cell, "cell_name": cell_name, "task": task,
            "family": "classification" if task == "agreement" else "regression", "seed": seed,
            "primary_metric": primary, "higher_is_better": higher, "param_count": 100 + 10 * len(cell_name),
            "hidden_size": 8, "execution_path": "cudnn" if cell_name in ("gru", "lstm") else "eager-loop"}
    run_id = tracker.start_run(f"{cell}-{task}-s{seed}", tags, {"model.hidden_size": 8})
    for epoch in range(3):
        tracker.log_metrics(run_id, {"train_loss": 1.0 / (epoch + 1) + seed * 0.01,
                                     "val_loss": 1.2 / (epoch + 1) + seed * 0.01}, step=epoch)
    tracker.log_metrics(run_id, {**test, "wall_time_s": 10.0 + seed + len(cell_name), "train_tokens_per_s": 500.0,
                                 "peak_memory_mb": 12.5, "epochs": 3})
    tracker.end_run(run_id, status, reason)
    return run_id


def _fill(tracker: Tracker) -> None:
    for cell, (name, accuracies, buckets) in AGREEMENT.items():
        for seed, accuracy in zip(SEEDS, accuracies):
            grouped = {f"test_accuracy/{g}": b + 0.01 * seed for g, b in zip(GROUPS, buckets)}
            if cell == "gru" and seed == 1:  # a killed attempt, then its rerun: only the rerun counts
                _run(tracker, "agreement", cell, name, seed, {"test_accuracy": 0.1}, "KILLED", "interrupted by SIGINT")
                time.sleep(0.01)
            _run(tracker, "agreement", cell, name, seed, {"test_accuracy": accuracy, "test_loss": 1 - accuracy,
                                                          **grouped})
    for cell, (name, errors) in ADDING.items():
        for seed, mse in zip(SEEDS, errors):
            _run(tracker, "adding", cell, name, seed, {"test_mse": mse})
    _run(tracker, "adding", "lstm", "lstm", 2, {"test_mse": 99.0}, "FAILED", FAILURE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tracker, Path]:
    root = tmp_path_factory.mktemp("store")
    tracker = Tracker(f"sqlite:///{root}/mlflow.db", "exp", root / "artifacts")
    _fill(tracker)
    return tracker, root


@pytest.fixture(scope="module")
def report(store: tuple[Tracker, Path]) -> tuple[ReportPaths, dict[str, bytes]]:
    tracker, root = store
    paths = build_report("exp", tracker, root / "report", experiment_file="experiments/exp.yaml", note="synthetic")
    files = {p.relative_to(paths.directory).as_posix(): p.read_bytes()
             for p in sorted(paths.directory.rglob("*")) if p.is_file()}
    return paths, files


def _ci(values: list[float], scale: str = "bounded") -> str:
    """``mean [low, high]`` as the report prints it, computed here with numpy and scipy.

    bounded: percentile bootstrap over seeds; log: geometric mean, t interval of the logs.
    """
    if len(values) == 1:
        return f"{values[0]:.4g} (n=1)"
    if scale == "log":
        logs = np.log(values)
        half = stats.t.ppf(0.975, len(values) - 1) * np.std(logs, ddof=1) / math.sqrt(len(values))
        centre, low, high = np.exp(logs.mean()), np.exp(logs.mean() - half), np.exp(logs.mean() + half)
    else:
        result = stats.bootstrap((np.array(values),), np.mean, n_resamples=10_000, method="percentile",
                                 random_state=np.random.default_rng(0))
        centre, (low, high) = np.mean(values), result.confidence_interval
    return f"{centre:.4g} \\[{low:.4g}, {high:.4g}\\]"


def _section(markdown: str, heading: str, task: str) -> str:
    """The text under ``### heading`` inside ``## Task: task``."""
    body = markdown.split(f"## Task: {task}\n", 1)[1].split("\n## ", 1)[0]
    return body.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].strip("\n")


def _row(section: str, first_cell: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(f"| {first_cell} |"))


# results.csv ----------------------------------------------------------------


def _rows(paths: ReportPaths) -> list[dict[str, str]]:
    with paths.results_csv.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_one_row_per_run_key_sorted(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    rows = _rows(report[0])
    keys = [(r["task"], r["cell"], int(r["seed"])) for r in rows]
    assert len(rows) == 12 + 3 + 3 + 1  # the killed attempt is superseded
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_csv_columns(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    with report[0].results_csv.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    required = ["cell", "task", "seed", "status", "failure_reason", "param_count", "hidden_size", "execution_path",
                "wall_time_s", "train_tokens_per_s", "peak_memory_mb", "epochs", "run_id", "path"]
    assert [c for c in header if c in required] == required
    tests = [c for c in header if c.startswith("test_")]
    assert tests == sorted(["test_accuracy", "test_loss", "test_mse", *(f"test_accuracy/{g}" for g in GROUPS)])
    assert header.index("failure_reason") < header.index(tests[0]) < header.index("param_count")


def test_csv_values(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    rows = {(r["task"], r["cell"], r["seed"]): r for r in _rows(report[0])}
    rerun = rows["agreement", "gru", "1"]
    assert (rerun["status"], float(rerun["test_accuracy"]), rerun["test_mse"]) == ("FINISHED", 0.93, "")
    assert float(rerun["test_accuracy/11-15"]) == pytest.approx(0.87)
    assert (rerun["param_count"], rerun["hidden_size"], rerun["execution_path"]) == ("130", "8", "cudnn")
    assert (rerun["wall_time_s"], rerun["epochs"], rerun["peak_memory_mb"]) == ("14", "3", "12.5")
    assert rerun["path"].startswith("file:") and rerun["run_id"] in rerun["path"]
    assert (rerun["primary_metric"], rerun["higher_is_better"], float(rerun["primary_value"])) == (
        "accuracy", "true", 0.93)
    assert (rows["adding", "gru", "0"]["primary_metric"], rows["adding", "gru", "0"]["higher_is_better"],
            float(rows["adding", "gru", "0"]["primary_value"])) == ("mse", "false", 0.010)
    failed = rows["adding", "lstm", "2"]
    assert (failed["status"], failed["failure_reason"], failed["test_accuracy"]) == ("FAILED", FAILURE, "")
    assert failed["primary_value"] == ""  # a failed run has no result to pivot
    assert rows["agreement", SCRIPT, "0"]["cell"] == SCRIPT


# report.md ------------------------------------------------------------------


def test_header(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    markdown = report[0].markdown.read_text(encoding="utf-8")
    assert markdown.startswith("# Report: exp\n")
    assert "Experiment file: experiments/exp.yaml" in markdown
    assert re.search(r"Generated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", markdown)
    assert "Runs (latest attempt per run key): 19 (FINISHED 18, FAILED 1); superseded attempts: 1" in markdown
    assert "Note: synthetic" in markdown


def test_agreement_table_means_and_best(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    table = _section(report[0].markdown.read_text(encoding="utf-8"), "Cells", "agreement")
    assert table.splitlines()[0].startswith("| cell | accuracy ↑ | loss | finished | not finished | params |")
    for cell, (_, accuracies, _) in AGREEMENT.items():
        shown = "\\<script\\>alert(1)\\</script\\>" if cell == SCRIPT else cell
        row = _row(table, shown)
        assert _ci(accuracies) in row
        assert _ci([1 - a for a in accuracies], "log") in row
        assert "| 3 | 0 |" in row
    assert "**" not in table  # three seeds: no pair is tested, so no cell is bolded as the winner
    assert "| 130 | 8 | cudnn | 14 |" in _row(table, "gru")  # params, hidden, path, mean wall time


def test_adding_table_excludes_failed_run_and_shows_n1(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    markdown = report[0].markdown.read_text(encoding="utf-8")
    table = _section(markdown, "Cells", "adding")
    assert f"| gru | {_ci(ADDING['gru'][1], 'log')} |" in table
    assert f"| lstm | {_ci([0.015, 0.017], 'log')} | 2 | 1 |" in table
    assert f"| vanilla | {_ci([0.05])} | 1 | 0 |" in table
    assert "0.05 (n=1)" in table
    assert "lstm, seed 2: FAILED: error: RuntimeError: out of memory (\\<oops\\>)" in markdown
    assert f"{np.mean([0.015, 0.017, 99.0]):.4g}" not in markdown


def test_comparisons_are_paired_by_seed_and_never_significant_below_five_seeds(
        report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    markdown = report[0].markdown.read_text(encoding="utf-8")
    section = _section(markdown, "Comparisons (paired by seed)", "agreement")
    gru, lstm = AGREEMENT["gru"][1], AGREEMENT["lstm"][1]
    p = stats.ttest_rel(gru, lstm).pvalue
    row = _row(section, "gru")
    assert row.startswith(f"| gru | lstm | 3 | paired t | {np.mean(gru) - np.mean(lstm):.4g} | \\[")
    assert f"| {p:.3g} |" in row and "n = 3: too few seeds to test; run at least" in row
    assert "significant at" not in markdown and "better (adjusted" not in markdown
    adding = _section(markdown, "Comparisons (paired by seed)", "adding")
    ratio = math.exp(np.mean(np.log([0.010, 0.012]) - np.log([0.015, 0.017])))
    assert f"| gru | lstm | 2 | paired t | {ratio:.4g} |" in adding  # seed 2 of lstm failed: paired on 0 and 1
    assert "| gru | vanilla | 1 | none (one seed) |" in adding


def test_summary_json(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    summary = json.loads(report[0].summary.read_text(encoding="utf-8"))
    assert summary["cells"][:3] == ["gru", "lstm", "vanilla"]
    agreement = summary["tasks"]["agreement"]
    assert (agreement["primary_metric"], agreement["higher_is_better"]) == ("accuracy", True)
    gru = agreement["cells"]["gru"]
    assert gru["n"] == 3 and gru["mean"] == pytest.approx(np.mean(AGREEMENT["gru"][1]))
    assert 0 <= gru["interval"][0] <= gru["mean"] <= gru["interval"][1] <= 1
    assert {c["rank"] for c in agreement["cells"].values()} == {2.5}  # n = 3: every cell ties
    assert summary["mean_rank"]["gru"] == pytest.approx(np.mean([2.5, 2.0]))
    assert summary["friedman"] is None and "at least 3 tasks" in summary["friedman_not_computed"]
    keys = {"task", "a", "b", "n", "test", "p", "p_adjusted", "correction", "difference", "interval", "verdict"}
    assert all(keys <= set(c) for c in summary["comparisons"])
    assert len(summary["comparisons"]) == 6 + 3
    assert all(c["p_adjusted"] is None and c["correction"] == "holm" for c in summary["comparisons"])


def test_verdict_opens_the_report(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    markdown = report[0].markdown.read_text(encoding="utf-8")
    first = markdown.split("\n## ")[1:4]
    assert [part.split("\n", 1)[0] for part in first] == ["Verdict", "Leaderboard", "Critical-difference diagram"]
    verdict = first[0]
    assert "gru, lstm, vanilla share the best mean rank (2.25" in verdict and "Friedman's test was not run" in verdict
    assert "GRU vs LSTM: too few seeds to test on adding, agreement (at the observed differences, " in verdict
    assert "significant" not in verdict.replace("significant difference", "").replace("no corrected", "")
    board = first[1]
    assert board.splitlines()[4].startswith("| # | cell | mean rank | adding: mse ↓ | agreement: accuracy ↑ |")
    assert f"| 1 | gru | 2.25 | {_ci(ADDING['gru'][1], 'log')} (2) | {_ci(AGREEMENT['gru'][1])} (2.5) |" in board


def test_accuracy_by_distance_table_and_narrative(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    markdown = report[0].markdown.read_text(encoding="utf-8")
    table = _section(markdown, "Accuracy by distance", "agreement")
    assert table.splitlines()[0] == "| distance | 01-05 | 06-10 | 11-15 |"
    assert _ci([0.51, 0.52, 0.53]) in _row(table, "vanilla")
    assert "### Accuracy by distance" not in markdown.split("## Task: adding\n")[1].split("## Task:")[0]
    story = _section(markdown, "What the numbers say", "agreement")
    assert "Best mean by accuracy (higher is better): gru" in story
    assert "The runner-up is lstm" in story and "gru vs lstm: n = 3: too few seeds to test" in story
    assert f"vanilla {0.97:.4g} → {0.52:.4g}" in story
    assert "At the last distance bucket vanilla is within 0.05 of chance (0.5)." in story
    adding_story = _section(markdown, "What the numbers say", "adding")
    assert "Best mean by mse (lower is better): gru" in adding_story
    assert "1 run(s) did not finish" in adding_story


def test_markdown_references_plots(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    paths = report[0]
    markdown = paths.markdown.read_text(encoding="utf-8")
    for plot in paths.plots:
        assert f"]({plot.relative_to(paths.directory).as_posix()})" in markdown


# plots and index.html ----------------------------------------------------------


def test_plot_files_are_pngs(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    paths = report[0]
    names = sorted(p.name for p in paths.plots)
    assert names == sorted(["agreement-learning_curves.png", "agreement-accuracy_by_distance.png",
                            "agreement-quality_vs_time.png", "adding-learning_curves.png",
                            "adding-quality_vs_time.png", "verdict-forest.png"])
    for plot in paths.plots:
        assert plot.parent == paths.directory / "plots"
        assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert plot.stat().st_size < 200_000


def test_html_is_self_contained_and_escaped(report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    page = report[0].html.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(report[0].plots)
    assert not re.search(r"https?://|<link|@import|url\(", page, re.IGNORECASE)
    assert not re.search(r"""(?:src|href)=["'](?!data:|#)""", page)  # only embedded images and in-page links
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "out of memory (&lt;oops&gt;)" in page
    assert '<h3 id="comparisons-paired-by-seed">Comparisons (paired by seed)</h3>' in page
    assert '<a href="#verdict">Verdict</a>' in page


def test_rebuild_gives_the_same_files_except_the_timestamp(
        store: tuple[Tracker, Path], report: tuple[ReportPaths, dict[str, bytes]]) -> None:
    tracker, _ = store
    paths, first = report
    (paths.directory / "plots" / "stale.png").write_bytes(b"old")
    again = build_report("exp", tracker, paths.directory, experiment_file="experiments/exp.yaml", note="synthetic")
    second = {p.relative_to(again.directory).as_posix(): p.read_bytes()
              for p in sorted(again.directory.rglob("*")) if p.is_file()}
    assert sorted(second) == sorted(first)

    def untimed(data: bytes) -> bytes:
        return re.sub(rb"Generated: [^<\n]*", b"Generated: -", data)

    assert {k: untimed(v) for k, v in second.items()} == {k: untimed(v) for k, v in first.items()}


def test_empty_experiment(store: tuple[Tracker, Path], tmp_path: Path) -> None:
    tracker, root = store
    empty = Tracker(tracker.tracking_uri, "empty", root / "artifacts")
    paths = build_report("empty", empty, tmp_path / "report")
    assert paths.plots == ()
    assert "No runs are recorded" in paths.markdown.read_text(encoding="utf-8")
    assert paths.results_csv.read_text(encoding="utf-8").startswith("cell,task,seed,status,failure_reason,")


def test_groups_are_named_as_the_task_names_them(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "grouped", tmp_path / "artifacts")
    for seed in (0, 1):
        run_id = tracker.start_run(f"gru-s{seed}", {
            "run_key": f"gru|lengths|{seed}", "cell": "gru", "cell_name": "gru", "task": "lengths", "seed": seed,
            "primary_metric": "accuracy", "higher_is_better": True, "group_name": "length"}, {})
        tracker.log_metrics(run_id, {"test_accuracy": 0.9, "test_accuracy/short": 1.0, "test_accuracy/long": 0.8})
        tracker.end_run(run_id, "FINISHED")
    markdown = build_report("grouped", tracker, tmp_path / "report").markdown.read_text(encoding="utf-8")
    assert "### Accuracy by length" in markdown and "| length | long | short |" in markdown
    assert "first length bucket" in markdown
