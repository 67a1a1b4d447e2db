"""The ``tuning:`` block: every mistake is refused before anything starts, naming file:line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from harness.cli.main import cli
from harness.experiment import load_experiment
from harness.core.errors import ConfigError
from harness.core.loading import load_plugins
from harness.tuning.space import plan_studies

BASE = """\
# A tuning file: harness tune this.yaml
cells: [vanilla, lstm]
tasks:
  - name: adding
    options: {length: 5}
seeds: [0, 1]
model:
  hidden_size: 8
training:
  max_epochs: 2
output_dir: OUT
tuning:
  trials: 4
"""


@pytest.fixture(scope="module")
def plugins() -> Any:
    return load_plugins()


def write(tmp_path: Path, tuning_tail: str, base: str = BASE) -> Path:
    path = tmp_path / "this.yaml"
    path.write_text(base.replace("OUT", str(tmp_path / "out")) + tuning_tail, encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def refused(path: Path, plugins: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        plan_studies(load_experiment(path), plugins)
    return str(caught.value)


@pytest.mark.parametrize(("entry", "message"), [
    ("{type: float, low: 0.1, high: 0.01}", "low (0.1) must be below high (0.01)"),
    ("{type: float, low: 0, high: 0.1, log: true}", "log: true needs low > 0"),
    ("{type: float, low: 0.001, high: 0.1, log: true, step: 0.01}", "log and step cannot be combined"),
    ("{type: categorical, low: 1, high: 2}", "a categorical entry needs choices"),
    ("{type: float, high: 0.1}", "a float entry needs low and high"),
    ("{type: normal, low: 0.1, high: 0.2}", "Input should be 'float', 'int' or 'categorical'"),
    ("{type: float, lo: 0.1, high: 0.2}", "unknown key 'lo'"),
])
def test_a_bad_entry_names_its_line_and_key(tmp_path: Path, plugins: Any, entry: str, message: str) -> None:
    path = write(tmp_path, f"  search_space:\n    training.learning_rate: {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    line = line_of(path, "training.learning_rate:")
    assert f"{path}:{line}: tuning.search_space.training.learning_rate" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("key", "entry", "message"), [
    ("training.learnin_rate", "{type: float, low: 0.001, high: 0.1}",
     "training has no setting 'learnin_rate' (did you mean 'learning_rate'?)"),
    ("training.max_epochs", "{type: int, low: 1, high: 9}",
     "training.max_epochs cannot be searched: it is the per-trial epoch budget"),
    ("optimiser.lr", "{type: float, low: 0.001, high: 0.1}", "a search-space key is <section>.<setting>"),
    ("model.hidden_size", "{type: float, low: 4, high: 64}", "model.hidden_size takes whole numbers: use type: int"),
    ("model.dropout", "{type: float, low: 0.0, high: 1.5}", "1.5 is not a valid model.dropout"),
    ("training.optimizer", "{type: categorical, choices: [adam, adagrad]}",
     "'adagrad' is not a valid training.optimizer"),
    ("cell.forget_bias", "{type: float, low: 0.0, high: 2.0}", "cell 'vanilla' has no option 'forget_bias'"),
    ("task.lenght", "{type: int, low: 5, high: 9}", "task 'adding' has no option 'lenght' (did you mean 'length'?)"),
])
def test_a_key_that_names_no_searchable_setting_is_refused(tmp_path: Path, plugins: Any, key: str, entry: str,
                                                           message: str) -> None:
    path = write(tmp_path, f"  search_space:\n    {key}: {entry}\n")
    error = refused(path, plugins)
    assert error.startswith(f"{path}:{line_of(path, key + ':')}: tuning.search_space.{key}: "), error
    assert message in error


def test_pruner_and_sampler_options_must_belong_to_the_chosen_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "  pruner: {name: median, reduction_factor: 2}\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    assert f"{path}:{line_of(path, 'pruner:')}: tuning.pruner" in str(caught.value)
    assert "reduction_factor: not an option of the median pruner (its options: startup_trials, warmup_epochs)" \
        in str(caught.value)
    path = write(tmp_path, "  sampler: {name: random, startup_trials: 3}\n")
    with pytest.raises(ConfigError, match="startup_trials is an option of the tpe sampler"):
        load_experiment(path)


def test_a_metric_other_than_the_primary_one_needs_a_direction(tmp_path: Path, plugins: Any) -> None:
    path = write(tmp_path, "  metric: mse_ratio_to_baseline\n")
    error = refused(path, plugins)
    assert f"{path}:{line_of(path, 'metric:')}: tuning.metric: " in error and "add tuning.direction" in error
    path = write(tmp_path, "  metric: mse_ratio_to_baseline\n  direction: minimize\n")
    assert {p.monitor for p in plan_studies(load_experiment(path), plugins)} == {"val_mse_ratio_to_baseline"}


def test_plugin_defaults_merge_under_the_files_entries(tmp_path: Path, plugins: Any) -> None:
    entry = "{type: float, low: 0.001, high: 0.1, log: true}"
    path = write(tmp_path, f"  search_space:\n    training.learning_rate: {entry}\n")
    vanilla, lstm = plan_studies(load_experiment(path), plugins)
    assert list(vanilla.space) == ["training.learning_rate"]
    assert list(lstm.space) == ["training.learning_rate", "cell.forget_bias"]
    assert lstm.sources == {"training.learning_rate": "file", "cell.forget_bias": "plugin lstm"}
    assert (lstm.space["cell.forget_bias"].low, lstm.space["cell.forget_bias"].high) == (0.0, 2.0)
    assert (lstm.name, lstm.metric, lstm.direction) == ("this/lstm/adding", "mse", "minimize")
    # The file's own entry wins over the plugin's; plugin_search_space: false leaves plugins out.
    path = write(tmp_path, "  search_space:\n    cell.forget_bias: {type: categorical, choices: [0.0, 1.0]}\n",
                 BASE.replace("[vanilla, lstm]", "[lstm]"))
    (lstm,) = plan_studies(load_experiment(path), plugins)
    assert lstm.space["cell.forget_bias"].choices == [0.0, 1.0] and lstm.sources["cell.forget_bias"] == "file"
    path = write(tmp_path, "  plugin_search_space: false\n", BASE.replace("[vanilla, lstm]", "[lstm]"))
    (lstm,) = plan_studies(load_experiment(path), plugins)
    assert "cell.forget_bias" not in lstm.space


def test_without_a_search_space_the_default_one_is_searched(tmp_path: Path, plugins: Any) -> None:
    base = BASE.replace("  hidden_size: 8\n", "  parameter_budget: 400\n").replace("[vanilla, lstm]", "[vanilla]")
    (plan,) = plan_studies(load_experiment(write(tmp_path, "", base)), plugins)
    assert set(plan.space) == {"training.learning_rate", "model.parameter_budget", "model.dropout",
                               "training.gradient_clip_norm"}
    assert plan.space["training.learning_rate"].log and plan.space["model.parameter_budget"].log
    assert (plan.space["model.parameter_budget"].low, plan.space["model.parameter_budget"].high) == (100, 1600)
    assert set(plan.sources.values()) == {"default"}


def test_harness_tune_refuses_a_bad_file_before_creating_anything(tmp_path: Path) -> None:
    path = write(tmp_path, "  search_space:\n    cell.forget_bias: {type: float, low: 0, high: 2}\n")
    result = CliRunner().invoke(cli, ["tune", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}:{line_of(path, 'cell.forget_bias')}: tuning.search_space.cell.forget_bias: cell 'vanilla' " \
           "has no option 'forget_bias'" in result.output
    assert not (tmp_path / "out").exists()


def test_harness_tune_needs_a_tuning_block(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    data = yaml.safe_load(BASE.replace("OUT", str(tmp_path / "out")))
    del data["tuning"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(cli, ["tune", str(path)])
    assert result.exit_code == 2 and "no tuning: block" in result.output
    assert not (tmp_path / "out").exists()
