"""The tuning part of a tuned experiment's report: what each cell's study searched and found.

Read from the Optuna storage (the report's MLflow runs are the re-training runs). Per task:
the budget each cell's study had and used (the fair-comparison protocol of Greff et al. 2017
and Melis et al. 2017), the search space, the distribution of every trial's result (not only
the best) with counts of complete, pruned and failed trials and the failure reasons, the
optimisation history, each cell's best values, and hyper-parameter importance by fANOVA
(Hutter et al. 2014, as Greff et al. used it) through Optuna's FanovaImportanceEvaluator.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.reports import plots as figures
from harness.experiment import LoadedExperiment, PrunerSettings
from harness.reports.document import Block, Bullets, Heading, Image, Para, Table
from harness.reports.report import TaskExtras
from harness.runs.storage import experiment_storage
from harness.tuning.tune import quiet_optuna, open_storage, slot_holders
from harness.tuning.space import study_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "tuning_section"]

#: fANOVA fits a random forest to the complete trials; with fewer it says nothing.
MIN_TRIALS_FOR_IMPORTANCE = 4
#: The forest's seed: a rebuilt report shows the same importances.
IMPORTANCE_SEED = 0


@dataclass
class _Study:
    """One cell's study of one task, as the report reads it."""

    cell: str
    study: optuna.Study
    trials: list[FrozenTrial]

    def __post_init__(self) -> None:
        self.attrs = self.study.user_attrs
        self.counted = slot_holders(self.trials)
        self.complete = [t for t in self.counted if t.state == TrialState.COMPLETE]
        self.maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.counted)

    def epochs(self) -> int:
        return sum(int(t.user_attrs.get("epochs") or 0) for t in self.counted)

    def best(self) -> FrozenTrial | None:
        return self.study.best_trial if self.complete else None


def tuning_section(loaded: LoadedExperiment, storage_url: str | None = None) -> TaskExtras | None:
    """The report hook for a tuned experiment; None when nothing was tuned in its storage yet."""
    quiet_optuna()
    storage = open_storage(experiment_storage(loaded, storage_url), create=False)
    if storage is None:
        return None
    names = set(optuna.study.get_all_study_names(storage))
    cells = [c.display for c in loaded.experiment.cells]
    colors = figures.colors(sorted(cells))

    def extras(task: str, plot_dir: Path, stem: str) -> list[Block]:
        studies = []
        for cell in cells:
            name = study_name(loaded.name, cell, task)
            if name in names:
                study = optuna.load_study(study_name=name, storage=storage)
                studies.append(_Study(cell, study, study.get_trials(deepcopy=False)))
        return _task_blocks(task, studies, plot_dir, stem, colors) if studies else []

    return extras


def _task_blocks(task: str, studies: list[_Study], plot_dir: Path, stem: str, colors: dict[str, str]) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Tuning: the same budget for every cell"), Para(_budget_text(studies)),
                           _space_table(studies), Heading(3, "Tuning: every trial"), _trial_table(studies)]
    reasons = [f"{s.cell}, trial {t.number}: {t.user_attrs.get('fail_reason') or 'no reason recorded'}"
               for s in studies for t in s.counted if t.state == TrialState.FAIL]
    if reasons:
        blocks += [Para("Failed trials (they used their slot of the budget):"), Bullets(tuple(reasons))]
    for kind, paint in (("tuning_history", _plot_history), ("tuning_distribution", _plot_distribution)):
        path = plot_dir / f"{stem}-{kind}.png"
        if figures.draw(path, lambda axes: paint(axes, task, studies, colors)):
            blocks.append(Image(path.relative_to(plot_dir.parent), f"{task}: {kind.replace('_', ' ')}"))
    blocks += [Heading(3, "Tuning: best configuration per cell"), _best_table(studies),
               Heading(3, "Tuning: hyper-parameter importance (fANOVA)")]
    blocks += _importance_blocks(studies)
    return blocks


def _budget_text(studies: list[_Study]) -> str:
    first = studies[0].attrs
    trials, epochs = first.get("trials"), first.get("max_epochs")
    budgets = {(s.attrs.get("trials"), s.attrs.get("max_epochs")) for s in studies}
    used = {len(s.counted) for s in studies}
    if len(budgets) == 1 and used == {trials}:
        text = (f"Each cell had its own Optuna study with the same budget: {trials} trials × at most {epochs} "
                f"epochs ({trials * epochs} epochs), and every study used all of it: the fair-comparison "
                "protocol of Greff et al. (2017) and Melis et al. (2017), so cells are compared after equal "
                "search effort, not at hand-picked settings.")
    else:
        shown = "; ".join(f"{s.cell} {len(s.counted)} of {s.attrs.get('trials')} trials × at most "
                          f"{s.attrs.get('max_epochs')} epochs" for s in studies)
        text = f"The budgets are NOT equal (yet): {shown}. Run harness tune again to finish the studies."
    direction = "higher is better" if studies[0].maximize else "lower is better"
    text += (f" Objective: {first.get('metric')} ({direction}) after the last epoch, with seed "
             f"{first.get('seed')}; the test set plays no part in the search. Pruned trials stopped early and "
             f"used fewer epochs (the epochs column). Sampler: {_options(first.get('sampler'))}; pruner: "
             f"{_options(first.get('pruner'))}. The best configuration of each study was then re-trained over "
             "the file's seeds: those runs are the cell table above.")
    return text


def _space_table(studies: list[_Study]) -> Table:
    rows: dict[str, list[str]] = {}
    for study in studies:
        space = json.loads(study.attrs.get("search_space") or "{}")
        sources = json.loads(study.attrs.get("sources") or "{}")
        for key, param in space.items():
            row = rows.setdefault(key, [key, _range(param), sources.get(key, "?"), ""])
            row[3] = f"{row[3]}, {study.cell}" if row[3] else study.cell
    return Table(("setting", "searched over", "from", "cells"), tuple(tuple(r) for r in rows.values()))


def _trial_table(studies: list[_Study]) -> Table:
    header = ("cell", "budget", "complete", "pruned", "failed", "running or queued", "epochs trained", "best",
              "min", "25%", "median", "75%", "max")
    rows = []
    for s in studies:
        values = np.array([t.value for t in s.complete], dtype=float)
        quantiles = [_fmt(q) for q in np.quantile(values, [0, 0.25, 0.5, 0.75, 1.0])] if len(values) else ["—"] * 5
        best = s.best()
        rows.append((s.cell, str(s.attrs.get("trials", "?")), str(s.count(TrialState.COMPLETE)),
                     str(s.count(TrialState.PRUNED)), str(s.count(TrialState.FAIL)),
                     str(s.count(TrialState.RUNNING) + s.count(TrialState.WAITING)), str(s.epochs()),
                     _fmt(best.value) if best else "—", *quantiles))
    return Table(header, tuple(rows))


def _best_table(studies: list[_Study]) -> Table:
    keys = sorted({k for s in studies for k in json.loads(s.attrs.get("search_space") or "{}")})
    header = ("setting", *(s.cell for s in studies))
    best = [s.best() for s in studies]
    rows = [("trial", *(str(b.number) if b else "—" for b in best)),
            (str(studies[0].attrs.get("metric")), *(_fmt(b.value) if b else "—" for b in best))]
    rows += [(key, *(_fmt(b.params[key]) if b and key in b.params else "—" for b in best)) for key in keys]
    return Table(header, tuple(rows))


def _importance_blocks(studies: list[_Study]) -> list[Block]:
    importances: dict[str, dict[str, float]] = {}
    notes = []
    for s in studies:
        if len(s.complete) < MIN_TRIALS_FOR_IMPORTANCE:
            notes.append(f"{s.cell}: {len(s.complete)} complete trial(s), fewer than {MIN_TRIALS_FOR_IMPORTANCE}: "
                         "importance not computed.")
            continue
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
            importances[s.cell] = optuna.importance.get_param_importances(s.study, evaluator=evaluator)
        except (ValueError, RuntimeError) as error:
            notes.append(f"{s.cell}: importance could not be computed: {error}")
    blocks: list[Block] = [Para(
        "Share of the variance of the objective over the complete trials that each setting explains on its own "
        "(fANOVA on a random forest fitted to the trials, Optuna's FanovaImportanceEvaluator, seed "
        f"{IMPORTANCE_SEED}; each cell's column sums to 1). With few trials these shares are rough.")]
    if importances:
        keys = sorted({k for values in importances.values() for k in values},
                      key=lambda k: -max(v.get(k, 0.0) for v in importances.values()))
        cells = [s.cell for s in studies if s.cell in importances]
        rows = tuple((key, *(_fmt(importances[c][key]) if key in importances[c] else "—" for c in cells))
                     for key in keys)
        blocks.append(Table(("setting", *cells), rows))
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _plot_history(axes: Axes, task: str, studies: list[_Study], colors: dict[str, str]) -> bool:
    """Each trial's value by trial number (x: pruned, at its last reported value) and the best so far."""
    drawn = False
    for s in studies:
        color = colors.get(s.cell, "black")
        done = sorted(s.complete, key=lambda t: t.number)
        if done:
            axes.scatter([t.number for t in done], [t.value for t in done], color=color, s=14)
            best, steps = [], math.inf if not s.maximize else -math.inf
            for t in done:
                steps = max(steps, t.value) if s.maximize else min(steps, t.value)
                best.append(steps)
            axes.step([t.number for t in done], best, where="post", color=color, label=figures._mpl(s.cell))
            drawn = True
        pruned = [(t.number, _last_value(t)) for t in s.counted
                  if t.state == TrialState.PRUNED and t.intermediate_values]
        if pruned:
            xs, ys = zip(*pruned)
            axes.scatter(xs, ys, color=color, marker="x", s=18)
            drawn = True
    metric = studies[0].attrs.get("metric", "objective")
    axes.set(title=figures._mpl(f"{task}: {metric} per trial (x: pruned), line: best so far"),
             xlabel="trial number", ylabel=figures._mpl(str(metric)))
    return drawn


def _plot_distribution(axes: Axes, task: str, studies: list[_Study], colors: dict[str, str]) -> bool:
    """Every trial's result per cell: complete trials as dots over a box, pruned ones as x."""
    rng = np.random.default_rng(0)  # jitter only; fixed so a rebuilt report draws the same picture
    drawn = False
    for position, s in enumerate(studies):
        color = colors.get(s.cell, "black")
        values = [t.value for t in s.complete]
        if values:
            axes.boxplot([values], positions=[position], widths=0.5, showfliers=False)
            axes.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, color=color, s=14,
                         label=figures._mpl(s.cell))
            drawn = True
        pruned = [_last_value(t) for t in s.counted if t.state == TrialState.PRUNED and t.intermediate_values]
        if pruned:
            axes.scatter(position + rng.uniform(-0.15, 0.15, len(pruned)), pruned, color=color, marker="x", s=18)
            drawn = True
    axes.set_xticks(range(len(studies)), [figures._mpl(s.cell) for s in studies])
    metric = studies[0].attrs.get("metric", "objective")
    axes.set(title=figures._mpl(f"{task}: {metric} of every trial (x: pruned, last value)"),
             ylabel=figures._mpl(str(metric)))
    return drawn


def _last_value(trial: FrozenTrial) -> float:
    return trial.intermediate_values[max(trial.intermediate_values)]


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def _range(param: dict[str, Any]) -> str:
    if param.get("type") == "categorical":
        return "one of " + ", ".join(str(c) for c in param.get("choices") or [])
    scale = "log-uniform" if param.get("log") else "uniform"
    step = f", step {_fmt(param['step'])}" if param.get("step") else ""
    return f"{param.get('type')} {scale} [{_fmt(param.get('low'))}, {_fmt(param.get('high'))}]{step}"


def _options(text: Any) -> str:
    """A sampler's or pruner's settings as recorded with the study, only the options of its kind."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return "?"
    name = values.get("name", "?")
    own = PrunerSettings._OPTIONS.get(name) if "reduction_factor" in values else (
        {"seed", "startup_trials"} if name == "tpe" else {"seed"})
    shown = ", ".join(f"{k} {values[k]}" for k in sorted(own or ()) if k in values)
    return f"{name} ({shown})" if shown else str(name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
