"""Trials that cannot produce a finite result (in-process ``tune``): how each one ends.

* NaN: a ReLU vanilla RNN on the adding task with learning rate 100 and no clipping (the
  runner's own NaN case): the training loss becomes inf/NaN in the first epoch.
* +inf: a task whose validation metric is +inf while every loss is finite. Optuna alone
  would record +inf as a COMPLETE trial (it only checks for NaN); here it must FAIL.

Both are FAILED with the reason and spend their slot of the budget. A metric the task never
logs is the file's fault, not the trial's: the search stops (exit 2) and the trial is queued again.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml

from harness import hookimpl
from harness.experiment import load_experiment
from harness.core.loading import load_plugins
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.tuning.tune import tune
from harness.core.vocab import Vocabulary


class InfiniteScore(Task):
    """Many-to-one with a task metric that is always +inf (its losses are ordinary)."""

    name = "infinite_score"
    family = "classification"
    Config = TaskConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def load(self) -> TaskData:
        rng = random.Random(0)
        vocab, labels = Vocabulary(["p", "q"]), Vocabulary(["p", "q"], specials=())

        def split(size: int) -> list[Example]:
            rows = [[rng.choice("pq") for _ in range(4)] for _ in range(size)]
            return [Example(vocab.encode(r), labels.id(r[0])) for r in rows]

        return TaskData(split(32), split(16), split(16), input_vocab=vocab, output_vocab=labels)

    def evaluate(self, predictions: Any, examples: Any) -> dict[str, float]:
        return {"score": math.inf}


PLUGIN = SimpleNamespace(register_tasks=hookimpl(lambda register: register(InfiniteScore)))


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    base = {"seeds": [0], "model": {"hidden_size": 8}, "device": "cpu", "output_dir": str(tmp_path / "out"),
            "reports_dir": str(tmp_path / "reports")}
    path.write_text(f"# Non-finite trials: harness tune {path.name}\n" + yaml.safe_dump({**base, **data}),
                    encoding="utf-8")
    return path


def only_trial(tmp_path: Path, study: str) -> optuna.trial.FrozenTrial:
    (trial,) = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}").get_trials()
    return trial


def trial_runs(tmp_path: Path, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    return list(client.search_runs([client.get_experiment_by_name(experiment).experiment_id]))


def test_a_nan_loss_fails_the_trial_with_its_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "nan", {
        "cells": [{"name": "vanilla", "options": {"activation": "relu"}}],
        "tasks": [{"name": "adding", "options": {"train_size": 64, "validation_size": 32, "test_size": 32,
                                                 "length": 12}}],
        "training": {"max_epochs": 1, "batch_size": 16, "gradient_clip_norm": None, "cpu_threads": 1},
        "tuning": {"trials": 1, "pruner": "none",
                   "search_space": {"training.learning_rate": {"type": "categorical", "choices": [100.0]}}},
    })
    summary = tune(load_experiment(path), load_plugins(), verbose=False)
    (study,) = summary.studies
    assert study.counts == {"COMPLETE": 0, "PRUNED": 0, "FAIL": 1} and study.best_value is None
    assert summary.exit_code == 1  # no study result: nothing could be re-trained
    trial = only_trial(tmp_path, "nan/vanilla/adding")
    assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
    assert trial.user_attrs["fail_reason"].startswith("nonfinite: training loss is ")
    (run,) = trial_runs(tmp_path, "nan-trials")
    assert run.info.status == "FAILED" and run.data.tags["harness.failure_reason"] == trial.user_attrs["fail_reason"]
    assert summary.retrain.finished == summary.retrain.failed == 0


def test_an_infinite_objective_fails_the_trial_instead_of_completing_it(tmp_path: Path) -> None:
    path = write(tmp_path, "inf", {
        "cells": ["gru"],
        "tasks": ["infinite_score"],
        "training": {"max_epochs": 2, "batch_size": 16, "cpu_threads": 1},
        "tuning": {"trials": 1, "metric": "score", "direction": "maximize", "pruner": "none",
                   "search_space": {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}},
    })
    plugins = load_plugins(extra_plugins=[("infinite-score", PLUGIN)])
    summary = tune(load_experiment(path), plugins, verbose=False)
    assert summary.studies[0].counts["FAIL"] == 1 and summary.exit_code == 1
    trial = only_trial(tmp_path, "inf/gru/infinite_score")
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "nonfinite: val_score is inf after epoch 1"
    assert not trial.intermediate_values  # the infinite value was never reported to Optuna
    (run,) = trial_runs(tmp_path, "inf-trials")
    assert run.info.status == "FAILED"


def test_a_metric_the_task_never_logs_stops_the_search_without_spending_the_budget(tmp_path: Path) -> None:
    from harness.core.errors import BadInputError

    path = write(tmp_path, "metric", {
        "cells": ["gru"],
        "tasks": [{"name": "adding", "options": {"train_size": 32, "validation_size": 16, "test_size": 16,
                                                 "length": 5}}],
        "training": {"max_epochs": 1, "batch_size": 16, "cpu_threads": 1},
        "tuning": {"trials": 3, "metric": "accuracy", "direction": "maximize", "pruner": "none",
                   "search_space": {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}},
    })
    with pytest.raises(BadInputError, match="never logs the validation metric 'val_accuracy'; the metrics it "
                                            "logs: loss, mse, mse_ratio_to_baseline"):
        tune(load_experiment(path), load_plugins(), verbose=False)
    study = optuna.load_study(study_name="metric/gru/adding", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    failed, queued = study.get_trials()
    # Not the trial's fault: it is queued again with its values, so the budget is still whole.
    assert failed.state.name == "FAIL" and failed.user_attrs["fail_reason"].startswith("bad_input: tuning.metric")
    assert queued.state.name == "WAITING" and queued.params == failed.params
