"""A third-party task reuses a family without touching the core, and runs through the real runner."""

from __future__ import annotations

import random
from types import SimpleNamespace

from harness import hookimpl
from harness.experiment import load_experiment
from harness.core.loading import load_plugins
from harness.runs.grid import expand_grid
from harness.runs.runner import Runner
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.runs.tracking import Tracker, default_tracking_uri
from harness.core.vocab import Vocabulary


class FirstTokenConfig(TaskConfig):
    length: int = 6


class FirstToken(Task):
    """Many-to-one: the class is the first token (a one-step memory task)."""

    name = "first_token"
    family = "classification"
    Config = FirstTokenConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def load(self) -> TaskData:
        rng = random.Random(0)
        vocab = Vocabulary(["p", "q", "r"])
        labels = Vocabulary(["p", "q"], specials=())

        def split(size: int) -> list[Example]:
            out = []
            for _ in range(size):
                first = rng.choice("pq")
                tokens = [first] + [rng.choice("pqr") for _ in range(self.config.length - 1)]
                out.append(Example(vocab.encode(tokens), labels.id(first)))
            return out

        return TaskData(split(64), split(16), split(16), input_vocab=vocab, output_vocab=labels)


plugin = SimpleNamespace(register_tasks=hookimpl(lambda register: register(FirstToken)))


def test_third_party_task_trains_and_is_tracked(tmp_path) -> None:
    plugins = load_plugins(extra_plugins=[("first-token-plugin", plugin)])
    assert plugins.plugin_of_task("first_token").name == "first-token-plugin"
    experiment = tmp_path / "third.yaml"
    experiment.write_text(
        "# A third-party task: harness run third.yaml\n"
        "cells: [vanilla]\n"
        "tasks: [{name: first_token, options: {length: 4}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 8, embedding_size: 4}\n"
        "training: {max_epochs: 1, batch_size: 16}\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        f"reports_dir: {tmp_path / 'reports'}\n"
    )
    loaded = load_experiment(experiment)
    runner = Runner(loaded, plugins, expand_grid(loaded, plugins), verbose=False)
    runner.open()
    summary = runner.run()
    assert (summary.finished, summary.failed) == (1, 0)
    (record,) = Tracker(default_tracking_uri(tmp_path / "runs"), "third").runs()
    assert record.status == "FINISHED"
    assert record.tag("task") == "first_token" and record.tag("family") == "classification"
    assert 0.0 <= record.metrics["test_accuracy"] <= 1.0
    assert record.params["task.options.length"] == "4"
