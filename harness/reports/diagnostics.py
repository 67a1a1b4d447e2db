"""The report's diagnostics section: memory horizons, gradient flow through time and clipping statistics.

One entry point, :func:`diagnostics_section`, reads finished runs (and their ``gradient_flow.json``)
and returns report blocks plus the numbers for ``summary.json``. Every sentence comes from the runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.reports.diagnostic_plots import mean_flow, plot_gradient_flow, plot_sweep
from harness.reports.document import Block, Heading, Image, Para, Table
from harness.reports.memory_horizon import (
    DEFAULT_FRACTION,
    SweptTask,
    memory_horizons,
    swept_tasks,
)
from harness.runs.sweeps import sweep_point
from harness.runs.tracking import RunRecord

VANILLA = "vanilla"


def diagnostics_section(records: Sequence[RunRecord], report_dir: Path, *, colors: Mapping[str, str] | None = None,
                        fraction: float = DEFAULT_FRACTION) -> tuple[list[Block], dict[str, Any]]:
    """Blocks (plots under ``report_dir/plots``) and ``{"memory_horizon", "gradient_flow", "gradient_clipping"}``.

    ``records``: the latest attempt of every run key. Sections without data are left out.
    """
    finished = [r for r in records if r.status == "FINISHED"]
    if colors is None:
        from harness.reports.plots import colors as palette

        colors = palette(sorted({r.tag("cell") for r in finished}))
    plot_dir = Path(report_dir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    horizon_blocks, horizons = _horizon_section(swept_tasks(finished), plot_dir, colors, fraction)
    flow_blocks, flows = _flow_section(finished, plot_dir, colors)
    clip_blocks, clipping = _clipping_section(records)
    summary = {"memory_horizon": horizons, "gradient_flow": flows, "gradient_clipping": clipping}
    return horizon_blocks + flow_blocks + clip_blocks, summary


def _horizon_section(tasks: list[SweptTask], plot_dir: Path, colors: Mapping[str, str],
                     fraction: float) -> tuple[list[Block], dict[str, Any]]:
    if not tasks:
        return [], {}
    blocks: list[Block] = [Heading(2, "Memory horizons"), Para(
        f"A cell's memory horizon on a swept task is the hardest swept value it still solves, counting from the "
        f"easiest (the first listed) up to its first failure. Solved: its mean test metric is at least "
        f"{fraction:.0%} of the way from chance to the best cell's mean at the easiest value. The interval is a "
        f"{95}% percentile bootstrap over seeds (seeds resampled jointly for every cell). "
        "'none' means the cell already fails at the easiest value.")]
    summary: dict[str, Any] = {}
    rows = []
    for task in tasks:
        horizons = memory_horizons(task, fraction)
        summary[task.task] = {cell: {k: v for k, v in h.items() if k != "position"} for cell, h in horizons.items()}
        order = sorted(horizons, key=lambda c: (-horizons[c]["position"], c))
        for cell in order:
            h = horizons[cell]
            rows.append((task.task, cell, _show(h["value"]), f"[{_show(h['interval'][0])}, {_show(h['interval'][1])}]",
                         str(len(task.seeds))))
        path = plot_dir / f"sweep-{_slug(task.task)}.png"
        if plot_sweep(path, task, colors, horizons[order[0]]["criterion"]["thresholds"]):
            blocks.append(Image(path.relative_to(plot_dir.parent), f"{task.task}: metric by {task.option}"))
        blocks.append(Para(_horizon_sentence(task, horizons)))
    blocks.insert(2, Table(("task", "cell", "memory horizon", "95% bootstrap interval", "seeds"), tuple(rows)))
    return blocks, summary


def _horizon_sentence(task: SweptTask, horizons: Mapping[str, Mapping[str, Any]]) -> str:
    criterion = next(iter(horizons.values()))["criterion"]
    levels = criterion["thresholds"]
    shown = f"{levels[0]:.4g}" if len(set(levels)) == 1 else ", ".join(
        f"{level:.4g} at {value}" for level, value in zip(levels, task.values))
    text = (f"{task.task} (swept {task.option}: {', '.join(map(str, task.values))}); criterion "
            f"{task.metric} {'>=' if task.higher_is_better else '<='} {shown}.")
    vanilla = [c for c in horizons if c.split("(")[0] == VANILLA]
    gated = [c for c in horizons if c not in vanilla]
    if vanilla and gated:
        v = horizons[vanilla[0]]
        below = [c for c in gated if horizons[c]["position"] > v["position"]]
        separated = [c for c in below if _interval_position(task, horizons[c])[0] > _interval_position(task, v)[1]]
        text += (f" The vanilla RNN's horizon ({_show(v['value'])}) is below {len(below)} of {len(gated)} gated "
                 f"cells' ({', '.join(below) or 'none'})")
        text += f"; with non-overlapping bootstrap intervals for {', '.join(separated)}." if separated else "."
    return text


def _interval_position(task: SweptTask, horizon: Mapping[str, Any]) -> tuple[int, int]:
    def position(value: Any) -> int:
        return task.values.index(value) if value is not None else -1

    return position(horizon["interval"][0]), position(horizon["interval"][1])


def _flow_section(records: Sequence[RunRecord], plot_dir: Path,
                  colors: Mapping[str, str]) -> tuple[list[Block], dict[str, Any]]:
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task, group in _flow_tasks(records).items():
        for record in group:
            columns = read_artifact_json(record, "gradient_flow.json")
            if columns:
                by_task.setdefault(task, {}).setdefault(record.tag("cell"), []).append(columns)
    if not by_task:
        return [], {}
    blocks: list[Block] = [Heading(2, "Gradient flow through time"), Para(
        "‖∂L/∂a⟨T−d⟩‖: how much of the gradient of the loss read at the last step T reaches the state d steps "
        "earlier, on a fixed validation batch, at initialisation (dashed) and after training (solid); log scale. "
        "A swept task is shown at its hardest value.")]
    summary: dict[str, Any] = {}
    for task, flows in sorted(by_task.items()):
        path = plot_dir / f"gradient-flow-{_slug(task)}.png"
        if plot_gradient_flow(path, task, flows, colors):
            blocks.append(Image(path.relative_to(plot_dir.parent), f"{task}: gradient flow through time"))
        summary[task] = {cell: _flow_summary(runs) for cell, runs in sorted(flows.items())}
        blocks.append(Para(_flow_sentence(task, summary[task])))
    return blocks, summary


def _flow_tasks(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Task → runs to draw: an unswept task's runs, or a swept task's runs at its hardest value."""
    hardest: dict[str, int] = {}
    for record in records:
        point = sweep_point(record)
        if point is not None:
            hardest[point.task] = max(hardest.get(point.task, 0), point.position)
    tasks: dict[str, list[RunRecord]] = {}
    for record in records:
        point = sweep_point(record)
        if point is None:
            tasks.setdefault(record.tag("task"), []).append(record)
        elif point.position == hardest[point.task]:
            tasks.setdefault(point.task, []).append(record)
    return tasks


def _flow_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per moment: the mean norm at d = 0 and at the longest distance, and their ratio."""
    out: dict[str, Any] = {}
    for when in ("init", "trained"):
        curve = mean_flow(runs, when, "a")
        if curve:
            out[when] = {"distance": curve[-1][0], "norm_at_0": curve[0][1], "norm_at_distance": curve[-1][1],
                         "ratio": curve[-1][1] / curve[0][1] if curve[0][0] == 0 else math.nan}
    return out


def _flow_sentence(task: str, summary: Mapping[str, Mapping[str, Any]]) -> str:
    parts = [f"{cell} {s['trained']['ratio']:.2g}" for cell, s in summary.items() if "trained" in s]
    distance = next((s["trained"]["distance"] for s in summary.values() if "trained" in s), None)
    if not parts:
        return f"{task}: no trained gradient-flow measurement."
    return (f"{task}: after training, the share of the last step's gradient norm that reaches {distance} steps back: "
            + ", ".join(parts) + ".")


def _clipping_section(records: Sequence[RunRecord]) -> tuple[list[Block], dict[str, Any]]:
    rows, summary = [], {}
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        if "grad_norm_steps" in record.metrics:
            groups.setdefault((record.tag("task"), record.tag("cell")), []).append(record)
    for (task, cell), group in sorted(groups.items()):
        fractions = [r.metrics["grad_clipped_fraction"] for r in group if "grad_clipped_fraction" in r.metrics]
        medians = [r.metrics["grad_norm_median"] for r in group if "grad_norm_median" in r.metrics]
        maxima = [r.metrics["grad_norm_max"] for r in group if "grad_norm_max" in r.metrics]
        diverged = sum(1 for r in group if r.status == "FAILED" and "nonfinite" in r.tag("failure_reason"))
        entry = {"clipped_fraction": _mean(fractions), "median_norm": _mean(medians),
                 "max_norm": max(maxima) if maxima else None, "runs": len(group), "diverged": diverged,
                 "clipping": bool(fractions)}
        summary.setdefault(task, {})[cell] = entry
        rows.append((task, cell, _show(entry["clipped_fraction"]) if fractions else "no clipping",
                     _show(entry["median_norm"]), _show(entry["max_norm"]),
                     f"{diverged} of {len(group)}" + (" (without clipping)" if diverged and not fractions else "")))
    if not rows:
        return [], {}
    return [Heading(2, "Exploding gradients"), Para(
        "Per optimizer step, the gradient's global norm before clipping: the share of steps above the clipping "
        "threshold (mean over runs), the median and the largest norm; runs that diverged (non-finite loss)."),
        Table(("task", "cell", "steps clipped", "median norm", "max norm", "diverged"), tuple(rows))], summary


def read_artifact_json(record: RunRecord, name: str) -> Any:
    """A run's JSON artifact, or None when the run has none (older runs, probe switched off)."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{record.artifact_uri}/{name}")
    except Exception:  # noqa: BLE001 - MLflow raises its own or OSError for a missing artifact
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "task"
