"""Standard MIDI files from piano rolls, parsed back; sampling; the piano-roll PNG."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.core.errors import BadInputError
from harness.data.midi import read_midi, roll_to_notes, write_midi
from harness.training.sampling import sample_multilabel
from harness.plugins.tasks.music import MusicConfig, MusicTask, plot_piano_roll


def roll_of(steps: list[list[int]]) -> list[list[int]]:
    return [[int(k in step) for k in range(88)] for step in steps]


def test_held_keys_merge_into_one_note_and_rests_split_them() -> None:
    roll = roll_of([[39], [39, 43], [43], [], [39]])
    notes = [(n.pitch, n.start, n.end) for n in roll_to_notes(roll, step_ticks=10)]
    assert notes == [(60, 0, 20), (64, 10, 30), (60, 40, 50)]


def test_written_file_is_a_valid_smf_of_the_rolls_length(tmp_path: Path) -> None:
    roll = roll_of([[39, 43, 46], [39, 43, 46], [], [0, 87], [], []])  # ends in two silent steps
    path = write_midi(tmp_path / "x.mid", roll, step_beats=0.5, name="test")
    raw = path.read_bytes()
    # Header chunk: MThd, length 6, format 0, one track, 480 ticks per quarter note.
    assert raw[:4] == b"MThd" and struct.unpack(">IHHH", raw[4:14]) == (6, 0, 1, 480)
    assert raw[14:18] == b"MTrk" and struct.unpack(">I", raw[18:22])[0] == len(raw) - 22
    assert raw.endswith(b"\xff\x2f\x00")
    midi = read_midi(path)
    assert (midi.format, midi.tracks, midi.ticks_per_beat, midi.tempo) == (0, 1, 480, 500_000)
    assert midi.end_tick == 6 * 240  # six eighth-note steps, trailing silence included
    assert midi.piano_roll(240) == roll
    assert {(n.pitch, n.start, n.end) for n in midi.notes} >= {(60, 0, 480), (21, 720, 960), (108, 720, 960)}


def test_reader_handles_running_status_and_refuses_broken_files(tmp_path: Path) -> None:
    # Note-on 60, then (running status) note-on 64 and velocity-0 "offs" for both.
    track = bytes([0, 0x90, 60, 90, 0, 64, 90, 0x60, 60, 0, 0, 64, 0, 0, 0xFF, 0x2F, 0])
    good = b"MThd" + struct.pack(">IHHH", 6, 1, 1, 96) + b"MTrk" + struct.pack(">I", len(track)) + track
    (tmp_path / "a.mid").write_bytes(good)
    midi = read_midi(tmp_path / "a.mid")
    assert [(n.pitch, n.start, n.end) for n in midi.notes] == [(60, 0, 96), (64, 0, 96)]
    (tmp_path / "b.mid").write_bytes(good[:-3])
    with pytest.raises(BadInputError, match="b.mid: byte"):
        read_midi(tmp_path / "b.mid")
    (tmp_path / "c.mid").write_bytes(b"RIFF" + good[4:])
    with pytest.raises(BadInputError, match="no MThd header"):
        read_midi(tmp_path / "c.mid")


class Bias(nn.Module):
    """A 'network' whose logits ignore its inputs; records what it was fed."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)
        self.fed: list[torch.Tensor] = []

    def forward(self, inputs, lengths, state=None):
        self.fed.append(inputs.clone())
        return self.logits.expand(inputs.shape[0], inputs.shape[1], 88), state


def test_sampling_draws_each_key_from_its_bernoulli_and_feeds_it_back() -> None:
    logits = torch.full((88,), -30.0)
    logits[[3, 40]] = 30.0  # keys 3 and 40 always on, every other always off
    net = Bias(logits)
    prime = [[1], [], [2, 7]]
    rolls = sample_multilabel(net, count=2, length=5, labels=88, prime=prime,
                              generator=torch.Generator().manual_seed(0))
    assert len(rolls) == 2 and all(len(r) == 3 + 5 for r in rolls)
    assert rolls[0][:3] == roll_of(prime)
    assert all(step == roll_of([[3, 40]])[0] for step in rolls[0][3:])
    # First call: x<1> = zeros then the prime; later calls: one step, the last sample.
    assert net.fed[0].shape == (2, 4, 88) and net.fed[0][0, 0].sum() == 0
    assert torch.equal(net.fed[0][0, 1:], torch.tensor(roll_of(prime), dtype=torch.float32))
    assert len(net.fed) == 5 and torch.equal(net.fed[1][0, 0].nonzero().flatten(), torch.tensor([3, 40]))


def test_sampling_at_probability_one_half_is_seeded_and_near_half() -> None:
    net = Bias(torch.zeros(88))
    first = sample_multilabel(net, count=4, length=50, labels=88, generator=torch.Generator().manual_seed(1))
    again = sample_multilabel(net, count=4, length=50, labels=88, generator=torch.Generator().manual_seed(1))
    assert first == again
    share = sum(map(sum, (step for roll in first for step in roll))) / (4 * 50 * 88)
    assert 0.45 < share < 0.55


def test_task_writes_midi_and_a_png_piano_roll(tmp_path: Path) -> None:
    rolls = [roll_of([[39, 43], [40], []]), roll_of([[0]] * 3)]
    paths = MusicTask(MusicConfig(dataset="jsb_chorales")).write_samples(rolls, tmp_path / "out" / "s.mid",
                                                                         prime_steps=1)
    assert [p.name for p in paths] == ["s-1.mid", "s-1.png", "s-2.mid", "s-2.png"]
    assert read_midi(paths[0]).end_tick == 3 * 480  # JSB: one quarter note per step
    assert read_midi(paths[2]).piano_roll(480) == rolls[1]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = plot_piano_roll(rolls[0], tmp_path / "one.png", title="t")
    assert single.stat().st_size > 1000
