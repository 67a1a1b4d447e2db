"""harness export, harness.reports.results.load and harness compare on real MLflow stores (SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from harness.cli.main import cli
from harness.reports.results import load
from harness.runs.tracking import Tracker, default_tracking_uri


def _experiment(tmp_path: Path, name: str, accuracy: dict[str, float]) -> Path:
    output = tmp_path / "runs" / name
    output.mkdir(parents=True)
    file = tmp_path / f"{name}.yaml"
    file.write_text(f"cells: [gru, lstm]\ntasks: [agreement]\nseeds: [0, 1]\noutput_dir: {output}\n"
                    f"reports_dir: {tmp_path / 'reports'}\n", encoding="utf-8")
    tracker = Tracker(default_tracking_uri(output), name, output / "artifacts")
    for cell, value in accuracy.items():
        for seed in (0, 1):
            run_id = tracker.start_run(f"{cell}-s{seed}", {
                "run_key": f"{cell}|agreement|{seed}", "cell": cell, "cell_name": cell, "task": "agreement",
                "seed": seed, "primary_metric": "accuracy", "higher_is_better": True}, {"model.hidden_size": 8})
            tracker.log_metrics(run_id, {"val_loss": 0.5}, step=0)
            tracker.log_metrics(run_id, {"test_accuracy": value + 0.01 * seed, "wall_time_s": 2.0})
            tracker.end_run(run_id, "FINISHED")
    return file


def test_load_export_and_compare(tmp_path: Path) -> None:
    first = _experiment(tmp_path, "quick", {"gru": 0.9, "lstm": 0.8})
    second = _experiment(tmp_path, "tuned", {"gru": 0.95})
    table = load(first)
    assert len(table) == 4 and list(table["seed"]) == [0, 1, 0, 1]
    assert set(table["cell"]) == {"gru", "lstm"} and (table["param.model.hidden_size"] == "8").all()
    assert table.loc[(table.cell == "lstm") & (table.seed == 1), "test_accuracy"].item() == pytest.approx(0.81)
    assert table["primary_value"].tolist() == table["test_accuracy"].tolist()

    runner = CliRunner()
    for fmt in ("csv", "parquet"):
        target = tmp_path / f"runs.{fmt}"
        result = runner.invoke(cli, ["export", str(first), "--format", fmt, "--output", str(target)])
        assert result.exit_code == 0, result.output
        back = pd.read_csv(target) if fmt == "csv" else pd.read_parquet(target)
        assert len(back) == 4 and back["test_accuracy"].tolist() == pytest.approx(table["test_accuracy"].tolist())

    result = runner.invoke(cli, ["compare", str(first), str(second)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "reports" / "compare-quick-tuned" / "summary.json").read_text())
    cells = summary["tasks"]["agreement"]["cells"]
    assert set(cells) == {"gru [quick]", "gru [tuned]", "lstm"}  # gru ran in both: one entry per experiment
    assert cells["gru [tuned]"]["mean"] == pytest.approx(0.955)
    pair = next(c for c in summary["comparisons"] if {c["a"], c["b"]} == {"gru [quick]", "gru [tuned]"})
    assert pair["test"] == "paired t" and pair["n"] == 2


def test_export_before_any_run_is_a_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text(f"cells: [gru]\ntasks: [agreement]\nseeds: [0]\noutput_dir: {tmp_path / 'none'}\n")
    result = CliRunner().invoke(cli, ["export", str(file)])
    assert result.exit_code == 2
    assert "no runs recorded" in result.output and "harness run" in result.output
