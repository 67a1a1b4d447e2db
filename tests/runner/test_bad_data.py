"""A bad data file stops `harness run` and `harness tune` before anything is recorded: exit 2, file:line, no output.

One case per task that reads files, each with small made-up files in that task's format
and one bad spot; the run must name the spot and leave no output, report or cache behind.
An empty split (T12 of the fault plan) stops `harness run` and `harness tune` the same way,
naming the split and its file: no run trains 0 steps and reports a metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from forked_harness import harness_run

#: Three made-up CoNLL-style sentences (token POS chunk tag), not CoNLL-2003 text.
CONLL = "Alice NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n\n"
MUSIC = '{"train": [[[60, 64], [62]]], "valid": [[[60]]], "test": [[[200]]]}'  # 200 is no MIDI note


@dataclass(frozen=True)
class BadData:
    """``files`` (relative to the data folder) for ``task`` and what stderr must name."""

    task: str
    files: dict[str, bytes]
    bad_spot: str  # relative to the data folder: "<file>:<line>" or "<file>: <where>"
    options: str = ""


CASES = [
    BadData("sentiment", {"sst2/stsa.binary.train": b"1 a fine film\n0 a dull film\npositive a third line\n",
                          "sst2/stsa.binary.dev": b"1 good\n", "sst2/stsa.binary.test": b"0 bad\n"},
            "sst2/stsa.binary.train:3"),
    BadData("ner", {"conll2003/eng.train": (CONLL + "Bob NNP B-PER\n").encode(),  # line 6: 3 columns, not 4
                    "conll2003/eng.testa": CONLL.encode(), "conll2003/eng.testb": CONLL.encode()},
            "conll2003/eng.train:6"),
    BadData("translation", {"pairs.tsv": "ein Hund\ta dog\neine Katze\ta cat\nkein Tab hier\n".encode()},
            "pairs.tsv:3", ", pairs_file: pairs.tsv, subfolder: ."),
    BadData("word_lm", {"ptb/ptb.train.txt": b"the cat sat\non the mat \xff\n",
                        "ptb/ptb.valid.txt": b"the cat\n", "ptb/ptb.test.txt": b"the mat\n"},
            "ptb/ptb.train.txt:2"),
    BadData("char_lm", {"tinyshakespeare/input.txt": b"First Citizen:\nBefore we \xc3\x28proceed\n"},
            "tinyshakespeare/input.txt:2"),
    BadData("music", {"polyphonic-music/JSB_Chorales.json": MUSIC.encode()},
            "polyphonic-music/JSB_Chorales.json: split 'test', sequence 0, step 0: note 200"),
]


#: Splits with nothing in them: (case, what stderr must say after the data folder).
EMPTY = [
    (BadData("word_lm", {"ptb/ptb.train.txt": b"the cat sat\n", "ptb/ptb.valid.txt": b"the cat\n",
                         "ptb/ptb.test.txt": b""}, "ptb/ptb.test.txt"), "the test split ("),
    (BadData("sentiment", {"sst2/stsa.binary.train": b"1 a fine film\n0 a dull film\n",
                           "sst2/stsa.binary.dev": b"", "sst2/stsa.binary.test": b"0 bad\n"},
             "sst2/stsa.binary.dev"), "validation"),
    (BadData("ner", {"conll2003/eng.train": b"-DOCSTART- -X- -X- O\n\n", "conll2003/eng.testa": CONLL.encode(),
                     "conll2003/eng.testb": CONLL.encode()}, "conll2003/eng.train"), "train"),
]
#: What `harness tune` needs beyond a grid: a budget and a search space.
TUNING = ("tuning: {trials: 1, pruner: none, search_space: "
          "{training.learning_rate: {type: float, low: 0.001, high: 0.01}}}\n")


def write_case(tmp_path: Path, case: BadData) -> Path:
    """The case's data files under ``tmp_path/data`` and ``tmp_path/bad.yaml`` reading them."""
    data = tmp_path / "data"
    for name, content in case.files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    experiment = tmp_path / "bad.yaml"
    experiment.write_text(
        "# harness run bad.yaml\n"
        "cells: [gru]\n"
        f"tasks: [{{name: {case.task}, options: {{data_dir: {data}{case.options}}}}}]\n"
        "seeds: [0]\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        f"reports_dir: {tmp_path / 'reports'}\n"
    )
    return experiment


def invoke(tmp_path: Path, case: BadData, command: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``harness run`` or ``harness tune`` (in process) of the case's experiment, with its own cache folder."""
    from harness.cli.main import cli

    experiment = write_case(tmp_path, case)
    if command == "tune":
        experiment.write_text(experiment.read_text() + TUNING)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner().invoke(cli, [command, str(experiment)])


def assert_nothing_created(tmp_path: Path) -> None:
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["bad.yaml", "data"], left  # no runs/, reports/, ledger, MLflow store or cache


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize("case", CASES, ids=[case.task for case in CASES])
def test_a_bad_data_file_exits_2_naming_its_spot_and_creates_nothing(tmp_path: Path, case: BadData, command: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(tmp_path, case, command, monkeypatch)
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'data'}/{case.bad_spot}" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # one line, not a report
    assert_nothing_created(tmp_path)


def test_as_a_process_the_error_is_one_line_on_stderr_without_traceback(tmp_path: Path) -> None:
    experiment = write_case(tmp_path, CASES[0])
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    result = harness_run(["run", str(experiment)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and f"{tmp_path / 'data'}/{CASES[0].bad_spot}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == "", result.stderr
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize(("case", "says"), EMPTY, ids=[case.task for case, _ in EMPTY])
def test_an_empty_split_exits_2_naming_it_and_creates_nothing(tmp_path: Path, case: BadData, says: str, command: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(tmp_path, case, command, monkeypatch)
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'data'}/{case.bad_spot}" in result.output and says in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    # The processed-data cache may keep the parse of the files (they are well formed, one just says nothing).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["bad.yaml", "data"]
