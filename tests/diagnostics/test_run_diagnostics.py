"""Diagnostics inside real runs: the probe and the norm monitor never change training, and every
run records gradient_flow.json, the pre-clipping norm histogram and its summary metrics in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from harness.experiment import load_experiment
from harness.reports.diagnostics import diagnostics_section, read_artifact_json
from harness.core.loading import load_plugins
from harness.reports.report import build_report
from harness.runs.grid import expand_grid
from harness.runs.runner import Runner
from harness.runs.tracking import Tracker, default_tracking_uri, latest_per_key


def run_grid(tmp_path: Path, name: str, *, gradient_flow: bool, clip: float | str, sweep: bool = True) -> list:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"# harness run {name}.yaml\n"
        "cells: [vanilla, lstm]\n"
        "tasks:\n"
        "  - {name: agreement, options: {train_size: 48, validation_size: 16, test_size: 16, min_distance: 2, max_distance: 8},"
        + (" sweep: {max_distance: [3, 8]}}\n" if sweep else " label: agreement}\n") +
        "seeds: [0]\n"
        "model: {hidden_size: 6, embedding_size: 4}\n"
        f"training: {{max_epochs: 2, batch_size: 16, gradient_clip_norm: {clip}}}\n"
        f"diagnostics: {{gradient_flow: {str(gradient_flow).lower()}, probe_size: 8}}\n"
        "device: cpu\n"
        f"output_dir: {tmp_path / name}\n"
        f"reports_dir: {tmp_path / 'reports'}\n"
    )
    loaded = load_experiment(path)
    plugins = load_plugins()
    runner = Runner(loaded, plugins, expand_grid(loaded, plugins), verbose=False)
    runner.open()
    assert runner.run().failed == 0
    return Tracker(default_tracking_uri(tmp_path / name), name).runs()


def by_run(records: list) -> dict[tuple[str, str], object]:
    return {(r.tag("cell"), r.tag("task")): r for r in records}


def test_probing_and_monitoring_leave_training_unchanged_and_are_recorded(tmp_path: Path) -> None:
    probed = by_run(run_grid(tmp_path, "probed", gradient_flow=True, clip=1e-6, sweep=False))
    plain = by_run(run_grid(tmp_path, "plain", gradient_flow=False, clip=1e-6, sweep=False))
    assert set(probed) == set(plain) and len(probed) == 2
    for key, record in probed.items():
        tests = {k: v for k, v in record.metrics.items() if k.startswith("test_")}
        assert tests == {k: v for k, v in plain[key].metrics.items() if k.startswith("test_")}, key
        assert record.metrics["grad_clipped_fraction"] == 1.0  # every norm exceeds 1e-6
        assert 0 < record.metrics["grad_norm_after_clip_max"] <= 1e-6 * (1 + 1e-6)  # what the optimizer applied
        assert record.metrics["grad_norm_steps"] == 6  # 48 / 16 batches × 2 epochs
        assert record.tag("chance_level") == "0.5"
        histogram = read_artifact_json(record, "gradient_norms.json")
        assert sum(histogram["counts"]) + histogram["nonfinite"] == 6 and histogram["clip_threshold"] == 1e-6
        flow = read_artifact_json(record, "gradient_flow.json")
        assert set(flow) == {"when", "state", "distance", "norm", "examples"}
        assert set(flow["when"]) == {"init", "trained"}
        assert set(flow["state"]) == ({"a", "c"} if key[0] == "lstm" else {"a"})
        assert all(n >= 0 for n in flow["norm"])
        assert read_artifact_json(plain[key], "gradient_flow.json") is None


def test_no_clipping_records_norms_but_no_clipped_fraction_and_the_report_shows_it(tmp_path: Path) -> None:
    records = run_grid(tmp_path, "unclipped", gradient_flow=True, clip="null")
    assert all("grad_clipped_fraction" not in r.metrics and r.metrics["grad_norm_max"] > 0 for r in records)
    blocks, summary = diagnostics_section(latest_per_key(records), tmp_path / "section")
    assert set(summary["memory_horizon"]["agreement"]) == {"vanilla", "lstm"}
    assert set(summary["gradient_flow"]["agreement"]) == {"vanilla", "lstm"}
    assert summary["gradient_clipping"]["agreement[max_distance=8]"]["lstm"]["clipping"] is False
    json.dumps(summary)
    tracker = Tracker(default_tracking_uri(tmp_path / "unclipped"), "unclipped")
    paths = build_report("unclipped", tracker, tmp_path / "report")
    text = paths.markdown.read_text(encoding="utf-8")
    for heading in ("## Memory horizons", "## Gradient flow through time", "## Exploding gradients"):
        assert heading in text
    assert (tmp_path / "report" / "plots" / "gradient-flow-agreement.png").exists()
    assert "no clipping" in text
