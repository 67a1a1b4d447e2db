"""Memory horizons from hand-made runs: the criterion, the first-failure rule, both metric directions,
the bootstrap interval over seeds, and the report section built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.experiment import SweepPoint
from harness.reports.diagnostics import diagnostics_section
from harness.reports.memory_horizon import memory_horizons, swept_tasks
from harness.runs.sweeps import sweep_tags
from harness.runs.tracking import TAG_PREFIX, RunRecord

VALUES = [10, 25, 50, 100]


def record(cell: str, seed: int, position: int, value: float, *, metric: str = "accuracy", higher: bool = True,
           chance: float | None = 0.5, task: str = "agreement") -> RunRecord:
    tags = {"cell": cell, "seed": str(seed), "task": f"{task}[max_distance={VALUES[position]}]",
            "primary_metric": metric, "higher_is_better": str(higher),
            **sweep_tags(SweepPoint(task, "max_distance", VALUES[position], position))}
    if chance is not None:
        tags["chance_level"] = repr(chance)
    return RunRecord(f"{cell}-{seed}-{position}", "FINISHED", 0, {TAG_PREFIX + k: v for k, v in tags.items()}, {},
                     {f"test_{metric}": value}, "file:///nonexistent")


#: cell → mean accuracy per swept value; every seed adds ±0.005 noise around it.
CURVES = {"lstm": [1.0, 0.99, 0.98, 0.9], "gru": [1.0, 1.0, 0.8, 0.6], "vanilla": [0.99, 0.7, 0.55, 0.5]}


def runs(curves: dict[str, list[float]] = CURVES, seeds: int = 3, **kwargs: object) -> list[RunRecord]:
    return [record(cell, seed, position, value + 0.005 * (seed - 1), **kwargs)
            for cell, curve in curves.items() for seed in range(seeds) for position, value in enumerate(curve)]


def test_the_horizon_is_the_last_value_before_the_first_failure() -> None:
    (task,) = swept_tasks(runs())
    assert task.task == "agreement" and task.option == "max_distance" and task.values == VALUES
    horizons = memory_horizons(task)
    # Best at the easiest value: 1.0; criterion 0.5 + 0.95 * 0.5 = 0.975.
    assert horizons["lstm"]["criterion"]["threshold"] == pytest.approx(0.975)
    assert {cell: h["value"] for cell, h in horizons.items()} == {"lstm": 50, "gru": 25, "vanilla": 10}
    for horizon in horizons.values():
        low, high = horizon["interval"]
        assert VALUES.index(low) <= VALUES.index(horizon["value"]) <= VALUES.index(high)


def test_a_looser_criterion_lengthens_horizons_and_a_cell_can_fail_at_the_easiest() -> None:
    (task,) = swept_tasks(runs())
    assert memory_horizons(task, fraction=0.5)["gru"]["value"] == 50  # 0.75 criterion: 0.8 passes at 50, 0.6 not
    curves = {"lstm": [1.0, 1.0, 1.0, 1.0], "vanilla": [0.6, 0.55, 0.5, 0.5]}
    assert memory_horizons(swept_tasks(runs(curves))[0])["vanilla"]["value"] is None


def test_lower_is_better_metrics_use_the_same_criterion_from_the_other_side() -> None:
    curves = {"lstm": [0.1, 0.1, 0.2, 0.6], "vanilla": [0.1, 0.6, 0.69, 0.69]}  # chance (memoryless) 0.693
    (task,) = swept_tasks(runs(curves, metric="cross_entropy", higher=False, chance=0.693))
    horizons = memory_horizons(task)
    assert horizons["lstm"]["criterion"]["threshold"] == pytest.approx(0.693 + 0.95 * (0.1 - 0.693))
    assert {c: h["value"] for c, h in horizons.items()} == {"lstm": 25, "vanilla": 10}


def test_noisy_seeds_widen_the_bootstrap_interval() -> None:
    # Seed 2 of the GRU fails at 25; seeds 0 and 1 hold to 50: resampling seeds moves the horizon.
    records = runs({"lstm": [1.0] * 4})
    for seed, curve in enumerate(([1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.0, 0.5], [1.0, 0.6, 0.6, 0.5])):
        records += [record("gru", seed, position, value) for position, value in enumerate(curve)]
    horizon = memory_horizons(swept_tasks(records)[0])["gru"]
    assert horizon["value"] == 10  # the mean at 25 (0.867) is below 0.975
    assert horizon["interval"] == [10, 50]


def test_the_report_section_and_summary_hold_every_cell(tmp_path: Path) -> None:
    blocks, summary = diagnostics_section(runs(), tmp_path)
    horizon = summary["memory_horizon"]["agreement"]
    assert set(horizon) == set(CURVES)
    assert set(horizon["vanilla"]) == {"value", "interval", "criterion"}
    json.dumps(summary)  # summary.json material
    text = " ".join(getattr(b, "text", "") for b in blocks)
    assert "The vanilla RNN's horizon (10) is below 2 of 2 gated cells' (gru, lstm)" in text
    assert Path("plots/sweep-agreement.png") in [b.path for b in blocks if hasattr(b, "path")]
    assert (tmp_path / "plots" / "sweep-agreement.png").stat().st_size > 1000


def test_a_chance_level_that_changes_with_the_value_scales_the_criterion() -> None:
    # Copy: the memoryless cross-entropy falls as blanks are added; solving means removing the same share of it.
    chances = [0.6, 0.3, 0.1]
    records = [record(cell, seed, position, value, metric="cross_entropy", higher=False, chance=chances[position])
               for cell, curve in {"gru": [0.06, 0.03, 0.01], "vanilla": [0.06, 0.29, 0.1]}.items()
               for seed in range(2) for position, value in enumerate(curve)]
    horizons = memory_horizons(swept_tasks(records)[0])
    assert horizons["gru"]["criterion"]["thresholds"] == pytest.approx([0.087, 0.0435, 0.0145])
    assert {c: h["value"] for c, h in horizons.items()} == {"gru": 50, "vanilla": 10}
