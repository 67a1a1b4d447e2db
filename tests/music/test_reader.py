"""The music task's reader: the real JSON files, slicing, batching, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.training.batching import Collator
from harness.core.errors import BadInputError, ConfigError
from harness.core.tasks import Example, TaskData
from harness.plugins.tasks.music import DATASETS, MusicConfig, MusicTask, read_pieces


def test_jsb_splits_have_the_documented_sizes_note_range_and_rests(data_dir: Path) -> None:
    data = MusicTask(MusicConfig(dataset="jsb_chorales")).load()
    # DATASET.md: 229 / 76 / 77 chorales of 13,807 / 4,602 / 4,725 steps, notes 43..96, 18 empty train steps.
    assert [len(data.train), len(data.validation), len(data.test)] == [229, 76, 77]
    assert [sum(len(e.inputs) for e in split) for split in (data.train, data.validation, data.test)] == [
        13807, 4602, 4725]
    assert data.input_size == 88 and data.input_vocab is None
    keys = [k for e in data.train for step in e.inputs for k in step]
    assert min(keys) + 21 == 43 and max(keys) + 21 == 96
    assert sum(1 for e in data.train for step in e.inputs if step == []) == 18
    assert all(step == sorted(set(step)) for e in data.train for step in e.inputs)
    assert data.info["train_steps"] == 13807 and len(data.info["data_sha256"]) == 64


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_data_set_reads_within_the_88_keys(data_dir: Path, dataset: str) -> None:
    pieces, _ = read_pieces(data_dir / "polyphonic-music" / DATASETS[dataset][0])
    assert all(pieces[split] for split in ("train", "validation", "test"))
    assert all(0 <= k < 88 for piece in pieces["test"] for step in piece for k in step)


def test_slices_take_the_first_pieces_and_steps_and_parsing_is_cached(data_dir: Path) -> None:
    whole = MusicTask(MusicConfig()).load()
    sliced = MusicTask(MusicConfig(max_sequences=3, max_steps=10)).load()
    assert len(sliced.train) == len(sliced.test) == 3
    assert [e.inputs for e in sliced.test] == [e.inputs[:10] for e in whole.test[:3]]
    path = data_dir / "polyphonic-music" / "JSB_Chorales.json"
    assert read_pieces(path) is read_pieces(path)  # parsed once per process


def test_collator_feeds_the_previous_step_and_targets_the_current_one() -> None:
    examples = [Example(inputs=[[0, 87], [], [5]]), Example(inputs=[[1]])]
    data = TaskData(examples, examples, examples, input_size=88)
    batch = Collator("multilabel_sequence", data)(list(enumerate(examples)))
    targets, inputs = batch["targets"], batch["inputs"]
    assert targets.shape == inputs.shape == (2, 3, 88)
    assert batch["lengths"].tolist() == [3, 1]
    assert targets[0, 0].nonzero().flatten().tolist() == [0, 87]
    assert targets[0, 1].sum() == 0 and targets[0, 2].nonzero().flatten().tolist() == [5]
    assert inputs[0, 0].sum() == 0  # x<1> = zeros
    assert torch.equal(inputs[0, 1:], targets[0, :-1])  # x<t> = y<t-1>
    assert targets[1, 1:].sum() == 0 and inputs[1, 0].sum() == 0


def write(tmp_path: Path, document: object, raw: str | None = None) -> MusicConfig:
    folder = tmp_path / "polyphonic-music"
    folder.mkdir(exist_ok=True)
    (folder / "JSB_Chorales.json").write_text(raw if raw is not None else json.dumps(document))
    return MusicConfig(data_dir=str(tmp_path))


GOOD = {"train": [[[60, 64], [], [67]]], "valid": [[[60]]], "test": [[[21, 108]]]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["train"][0].__setitem__(1, [60, 109]), "split 'train', sequence 0, step 1: note 109 is not"),
    (lambda d: d["test"][0].__setitem__(0, [20]), "split 'test', sequence 0, step 0: note 20"),
    (lambda d: d["valid"].append([[60, 60]]), "split 'valid', sequence 1, step 0: a note is listed twice"),
    (lambda d: d["valid"].append([]), "split 'valid', sequence 1: expected a non-empty list of time steps"),
    (lambda d: d["train"][0].__setitem__(0, 60), "split 'train', sequence 0, step 0: expected a list of MIDI"),
    (lambda d: d["train"][0].__setitem__(0, [60.5]), "note 60.5 is not a MIDI note"),
    (lambda d: d.pop("valid"), "missing split(s) valid"),
])
def test_bad_files_name_the_file_split_sequence_and_step(tmp_path: Path, change, message: str) -> None:
    document = json.loads(json.dumps(GOOD))
    change(document)
    config = write(tmp_path, document)
    with pytest.raises(BadInputError) as error:
        MusicTask(config).load()
    assert message in str(error.value) and "JSB_Chorales.json" in str(error.value)


def test_a_good_small_file_reads_with_its_rest(tmp_path: Path) -> None:
    data = MusicTask(write(tmp_path, GOOD)).load()
    assert data.train[0].inputs == [[39, 43], [], [46]] and data.test[0].inputs == [[0, 87]]


def test_invalid_json_and_missing_data_folder_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInputError, match="not valid JSON"):
        MusicTask(write(tmp_path, None, raw='{"train": [')).load()
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        MusicTask(MusicConfig()).load()
    with pytest.raises(ConfigError, match="does not exist"):
        MusicTask(MusicConfig(data_dir=str(tmp_path / "nowhere"))).load()
