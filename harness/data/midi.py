"""Standard MIDI files (SMF) from piano rolls and back, through ``mido``.

Written: format 0, one track, a tempo, a piano program, note-on and note-off events.
Read: any SMF mido parses (format 0 or 1, running status, meta and sysex events), as the
notes it holds, so a written file can be checked by parsing it back.

A piano roll is a (T, 88) 0/1 grid: row t is a time step, column k is MIDI note
``21 + k`` (A0 … C8). A key active in consecutive steps becomes one held note: the roll
cannot tell a repeated note from a held one, and neither can the data sets it models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mido

from harness.core.errors import BadInputError

LOWEST_NOTE = 21  # A0, column 0 of a piano roll
KEYS = 88
TICKS_PER_BEAT = 480
DEFAULT_TEMPO = 500_000  # microseconds per quarter note: 120 beats per minute
VELOCITY = 80


@dataclass(frozen=True)
class Note:
    pitch: int  # MIDI note number
    start: int  # tick of its note-on
    end: int  # tick of its note-off
    velocity: int = VELOCITY


@dataclass(frozen=True)
class MidiFile:
    """What :func:`read_midi` found: the grid, the tempo, the notes and where the last track ends."""

    format: int
    tracks: int
    ticks_per_beat: int
    tempo: int  # microseconds per quarter note (the first tempo event; 500000 if none)
    notes: tuple[Note, ...]
    end_tick: int  # tick of the latest end-of-track event

    def piano_roll(self, step_ticks: int) -> list[list[int]]:
        """Back to a (T, 88) 0/1 grid with T = end_tick / step_ticks, rounded up."""
        steps = -(-self.end_tick // step_ticks)
        roll = [[0] * KEYS for _ in range(steps)]
        for note in self.notes:
            for step in range(note.start // step_ticks, -(-note.end // step_ticks)):
                roll[step][note.pitch - LOWEST_NOTE] = 1
        return roll


def roll_to_notes(roll: Sequence[Sequence[int]], step_ticks: int) -> list[Note]:
    """Notes of a piano roll; consecutive active steps of a key merge into one held note."""
    notes: list[Note] = []
    started: dict[int, int] = {}  # key -> step its current note began
    for step, frame in enumerate([*roll, [0] * KEYS]):  # a silent step closes every note at the end
        if len(frame) != KEYS:
            raise ValueError(f"piano-roll step {step} has {len(frame)} keys, expected {KEYS}")
        for key in range(KEYS):
            if frame[key] and key not in started:
                started[key] = step
            elif not frame[key] and key in started:
                begin = started.pop(key)
                notes.append(Note(LOWEST_NOTE + key, begin * step_ticks, step * step_ticks))
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def write_midi(path: Path, roll: Sequence[Sequence[int]], *, step_beats: float = 0.5,
               ticks_per_beat: int = TICKS_PER_BEAT, tempo: int = DEFAULT_TEMPO, name: str = "") -> Path:
    """Write a piano roll as a format-0 SMF; one step lasts ``step_beats`` quarter notes.

    The track ends exactly at ``len(roll)`` steps, trailing silence included, so the
    file's length in steps is the roll's.
    """
    step_ticks = round(step_beats * ticks_per_beat)
    if step_ticks < 1:
        raise ValueError(f"a step of {step_beats} beats is shorter than one tick at {ticks_per_beat} ticks per beat")
    events: list[tuple[int, int, int, mido.Message]] = []  # (tick, offs before ons, pitch, message)
    for note in roll_to_notes(roll, step_ticks):
        events.append((note.start, 1, note.pitch, mido.Message("note_on", note=note.pitch, velocity=note.velocity)))
        events.append((note.end, 0, note.pitch, mido.Message("note_off", note=note.pitch, velocity=64)))
    events.sort(key=lambda e: e[:3])
    track = mido.MidiTrack()
    if name:
        track.append(mido.MetaMessage("track_name", name=name.encode("ascii", "replace").decode("ascii")))
    track.append(mido.MetaMessage("set_tempo", tempo=tempo))
    track.append(mido.Message("program_change", program=0))  # acoustic grand piano
    now = 0
    for tick, _, _, message in events:
        track.append(message.copy(time=tick - now))  # mido's times are deltas in ticks
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=len(roll) * step_ticks - now))
    path = Path(path)
    mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track]).save(path)
    return path


def read_midi(path: Path) -> MidiFile:
    """Parse an SMF; raises BadInputError naming the file (and the byte offset) when it is malformed."""
    parsed = _parse(Path(path))
    if parsed.ticks_per_beat & 0x8000:
        raise BadInputError(f"{path}: SMPTE time division is not supported")
    tempo: int | None = None
    notes: list[Note] = []
    end_tick = 0
    for index, track in enumerate(parsed.tracks):
        if not track or track[-1].type != "end_of_track":
            raise BadInputError(f"{path}: track {index} has no end-of-track event")
        tick, sounding = 0, {}  # (channel, pitch) -> (start, velocity)
        for message in track:
            tick += message.time
            if message.type == "set_tempo" and tempo is None:
                tempo = message.tempo
            elif message.type in ("note_on", "note_off"):
                notes += _note_event(message, tick, sounding)
        notes += [Note(pitch, start, tick, velocity) for (_, pitch), (start, velocity) in sounding.items()]
        end_tick = max(end_tick, tick)
    return MidiFile(parsed.type, len(parsed.tracks), parsed.ticks_per_beat, tempo or DEFAULT_TEMPO,
                    tuple(sorted(notes, key=lambda n: (n.start, n.pitch))), end_tick)


def _parse(path: Path) -> mido.MidiFile:
    """mido's parse, its errors as one BadInputError with the byte where reading stopped."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"MThd":
            raise BadInputError(f"{path}: byte 0: not a standard MIDI file (no MThd header)")
        handle.seek(0)
        try:
            return mido.MidiFile(file=handle)
        except EOFError:
            raise BadInputError(f"{path}: byte {handle.tell()}: file ends early") from None
        except (OSError, ValueError, KeyError) as error:
            raise BadInputError(f"{path}: byte {handle.tell()}: {error}") from None


def _note_event(message: mido.Message, tick: int, sounding: dict[tuple[int, int], tuple[int, int]]) -> list[Note]:
    """The note a note-on or note-off ends, if any; a note-on (velocity > 0) starts one in ``sounding``."""
    key = (message.channel, message.note)
    ended = []
    if key in sounding:  # a note-off, a velocity-0 note-on, or a re-strike ends the sounding note
        start, velocity = sounding.pop(key)
        ended.append(Note(message.note, start, tick, velocity))
    if message.type == "note_on" and message.velocity > 0:
        sounding[key] = (tick, message.velocity)
    return ended
