"""Every built-in option is documented and bounded, and ``harness cells|tasks [show]`` print them.

The bounds (issue #18) refuse a huge number when the experiment file is read, in one line with
file:line, key and the allowed range; the descriptions are what ``harness tasks show`` prints.
Neither may change a run key: the dumped defaults are pinned to those of every earlier version.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from harness.cli.main import cli
from harness.experiment import content_hash, load_experiment, resolve
from harness.core.errors import ConfigError
from harness.core.plugin_options import allowed_values, describe_options
from harness.core.loading import load_plugins

#: content_hash of each built-in Config's dumped defaults, as of 738e021 (before descriptions and
#: bounds). Run keys hash the dumped config: a change here re-runs every finished experiment.
DEFAULT_DUMP_HASHES = {
    "cell:gru": "2489b45dc1a63837",
    "cell:gru_simple": "00bb68aa4b491909",
    "cell:lstm": "fd96af94e7f46444",
    "cell:peephole_lstm": "00caa4320f6ff491",
    "cell:vanilla": "2b6fe2dbe793a205",
    "task:adding": "c1627553220fc834",
    "task:agreement": "e3fdd1f990b65a87",
    "task:brackets": "6206f0576a612862",
    "task:char_lm": "ad40d03b9fc42f53",
    "task:copy": "80da32c16c4dfaf2",
    "task:music": "18845b13bd84a987",
    "task:ner": "c7c5e9d8bfa39bb6",
    "task:numbers": "17011654f0189444",
    "task:sentiment": "efab14719f01da2e",
    "task:translation": "ce7db9e503e692d7",
    "task:word_lm": "1ad8f1f653bf1dec",
}


def builtin_configs() -> dict[str, type[BaseModel]]:
    loaded = load_plugins(autoload=False)
    configs = {f"cell:{n}": loaded.cells.get(n).Config for n in loaded.cells.names()}
    configs.update({f"task:{n}": loaded.tasks.get(n).Config for n in loaded.tasks.names()})
    return configs


def test_defaults_dump_exactly_as_before() -> None:
    hashes = {key: content_hash(config().model_dump(mode="json")) for key, config in builtin_configs().items()}
    assert hashes == DEFAULT_DUMP_HASHES


def test_every_builtin_option_has_a_description_and_every_number_a_maximum() -> None:
    undocumented, unbounded = [], []
    for key, config in builtin_configs().items():
        for name, field in config.model_fields.items():
            if len((field.description or "").split()) < 3:
                undocumented.append(f"{key}.{name}")
            arguments = typing.get_args(field.annotation) or (field.annotation,)
            numeric = any(a in (int, float) for a in arguments)
            if numeric and not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata):
                unbounded.append(f"{key}.{name}")
    assert undocumented == [] and unbounded == []


def test_options_are_described_with_type_default_range_and_text() -> None:
    options = {o.name: o for o in describe_options(load_plugins(autoload=False).tasks.get("translation").Config)}
    beam = options["beam_size"]
    assert (beam.type, beam.default, beam.allowed) == ("int", 1, "1 to 1,000")
    assert beam.description.startswith("Decoding of validation and test outputs: 1 greedy")
    assert options["validation_stem"].type == "str | null" and options["validation_stem"].default == "val"
    assert options["validation_fraction"].allowed == "> 0 and < 1"
    cells = load_plugins(autoload=False).cells
    initial = {o.name: o for o in describe_options(cells.get("gru").Config)}["initial_state"]
    assert initial.allowed == "one of: zeros, learned" and initial.default == "zeros"
    assert allowed_values(cells.get("lstm").Config.model_fields["forget_bias"]) == "-100.0 to 100.0"


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("train_size", 10**12, "allowed: 1 to 1,000,000"),
    ("max_distance", 10**12, "allowed: 1 to 10,000"),
    ("data_seed", 2**32, "allowed: 0 to 4,294,967,295"),
])
def test_a_huge_task_option_is_refused_in_one_line_with_its_range(
    tmp_path: Path, option: str, value: int, allowed: str
) -> None:
    experiment = tmp_path / "huge.yaml"
    experiment.write_text(f"cells: [vanilla]\ntasks:\n  - name: agreement\n    options:\n      {option}: {value}\n"
                          "seeds: [0]\n")
    with pytest.raises(ConfigError) as raised:
        resolve(load_experiment(experiment), load_plugins(autoload=False))
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 2
    assert message.startswith(f"{experiment}:5: tasks[0].options.{option}: Input should be less than or equal to ")
    assert f"(got {value}); {allowed} (agreement is from plugin 'agreement'" in message
    assert message.endswith("see `harness tasks show agreement`)")


def test_generated_splits_too_large_together_are_refused(tmp_path: Path) -> None:
    experiment = tmp_path / "long.yaml"
    experiment.write_text("cells: [vanilla]\ntasks:\n  - name: adding\n"
                          "    options: {train_size: 1000000, length: 10000}\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"huge|steps in memory; at most 20,000,000 are allowed"):
        resolve(load_experiment(experiment), load_plugins(autoload=False))


def test_harness_run_refuses_a_huge_option_before_creating_anything(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("huge.yaml").write_text("cells: [vanilla]\ntasks:\n  - name: copy\n    options: {train_size: 1000000000000}\n"
                                 "seeds: [0]\n")
    result = CliRunner().invoke(cli, ["run", "huge.yaml"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: huge.yaml:4: tasks[0].options.train_size: ") and "allowed: 1 to 1,000,000" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]


def test_harness_tasks_lists_and_shows_every_option() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["tasks", "--json"])
    assert listing.exit_code == 0, listing.output
    rows = {row["name"]: row for row in json.loads(listing.output)}
    assert {"agreement", "ner", "translation", "word_lm"} <= set(rows)
    assert rows["ner"]["source"] == "built-in" and rows["ner"]["primary_metric"] == "f1"
    assert rows["ner"]["description"].startswith("Tag each word with its entity")

    shown = runner.invoke(cli, ["tasks", "show", "NER"])  # as the issue typed it
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "  primary metric: f1 (higher is better)" in text
    for name in load_plugins(autoload=False).tasks.get("ner").Config.model_fields:
        assert f"\n    {name}: " in text  # every option, each followed by its description
    assert '    vocab_size: int | null = 20000; allowed: 1 to 1,000,000\n        K: the K most frequent' in text

    details = json.loads(runner.invoke(cli, ["tasks", "show", "agreement", "--json"]).output)
    assert details["direction"] == "higher is better" and details["family"] == "classification"
    train_size = next(o for o in details["options"] if o["name"] == "train_size")
    assert train_size == {"name": "train_size", "type": "int", "default": 3000, "required": False,
                          "allowed": "1 to 1,000,000",
                          "description": "Training sentences; a few thousand keeps a 2-core CPU quickstart quick."}


def test_harness_cells_lists_and_shows_every_option() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["cells"])
    assert listing.exit_code == 0 and "lstm " in listing.output
    assert "The LSTM of the lecture notes" in listing.output
    shown = runner.invoke(cli, ["cells", "show", "peephole_lstm", "--json"])
    options = [o["name"] for o in json.loads(shown.output)["options"]]
    assert options == ["initial_state", "variant", "forget_bias"]
    unknown = runner.invoke(cli, ["cells", "show", "lsmt"])
    assert unknown.exit_code == 2 and "unknown cell 'lsmt'. Did you mean 'lstm'?" in unknown.output


@pytest.mark.parametrize("command", [[], ["run"], ["tasks"], ["tasks", "show"], ["cells", "show"], ["conformance"],
                                     ["report"], ["evaluate"], ["plugins"]])
def test_dash_h_is_help_and_says_where_outputs_go(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: ")
    if command:
        text = " ".join(result.output.split())
        assert any(words in text for words in ("Outputs:", "stdout", "writes no files")), text
