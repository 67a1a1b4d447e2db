"""Standard MIDI files (SMF), written and read without a third-party library.

Only what a piano roll needs: format 0, one track, a tempo, a piano program, note-on
and note-off events. The reader understands any SMF (format 0 or 1, running status,
meta and sysex events) and returns the notes, so a written file can be checked by
parsing it back.

A piano roll is a (T, 88) 0/1 grid: row t is a time step, column k is MIDI note
``21 + k`` (A0 … C8). A key active in consecutive steps becomes one held note: the roll
cannot tell a repeated note from a held one, and neither can the data sets it models.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadInputError

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
    events: list[tuple[int, int, bytes]] = []  # (tick, order: offs before ons, message)
    for note in roll_to_notes(roll, step_ticks):
        events.append((note.start, 1, bytes((0x90, note.pitch, note.velocity))))
        events.append((note.end, 0, bytes((0x80, note.pitch, 64))))
    events.sort(key=lambda e: (e[0], e[1], e[2][1]))
    track = bytearray()
    if name:
        encoded = name.encode("ascii", "replace")
        track += _vlq(0) + b"\xff\x03" + _vlq(len(encoded)) + encoded  # track name
    track += _vlq(0) + b"\xff\x51\x03" + tempo.to_bytes(3, "big")  # set tempo
    track += _vlq(0) + b"\xc0\x00"  # program change: acoustic grand piano
    now = 0
    for tick, _, message in events:
        track += _vlq(tick - now) + message
        now = tick
    track += _vlq(len(roll) * step_ticks - now) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
    path = Path(path)
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))
    return path


def read_midi(path: Path) -> MidiFile:
    """Parse an SMF; raises BadInputError naming the file and the byte offset when it is malformed."""
    data = Path(path).read_bytes()
    reader = _Reader(data, str(path))
    if reader.take(4) != b"MThd":
        raise reader.error("not a standard MIDI file (no MThd header)")
    length = reader.u32()
    if length < 6:
        raise reader.error(f"header chunk of {length} bytes, expected 6")
    file_format, track_count, division = struct.unpack(">HHH", reader.take(6))
    reader.take(length - 6)
    if division & 0x8000:
        raise reader.error("SMPTE time division is not supported")
    tempo: int | None = None
    notes: list[Note] = []
    end_tick = 0
    for _ in range(track_count):
        kind, size = reader.take(4), reader.u32()
        chunk_end = reader.position + size
        if kind != b"MTrk":
            reader.take(size)  # an unknown chunk: skip it, as the standard says
            continue
        tick, status, sounding = 0, 0, {}  # (channel, pitch) -> (start, velocity)
        ended = False
        while reader.position < chunk_end:
            tick += reader.vlq()
            byte = reader.u8()
            if byte == 0xFF:  # meta event
                meta, meta_length = reader.u8(), reader.vlq()
                payload = reader.take(meta_length)
                if meta == 0x51 and tempo is None:
                    tempo = int.from_bytes(payload, "big")
                elif meta == 0x2F:
                    ended = True
                    break
                continue
            if byte in (0xF0, 0xF7):  # sysex
                reader.take(reader.vlq())
                continue
            if byte & 0x80:
                status, first = byte, reader.u8()
            elif status:
                first = byte  # running status
            else:
                raise reader.error("data byte without a status byte")
            kind_nibble, channel = status & 0xF0, status & 0x0F
            second = reader.u8() if kind_nibble not in (0xC0, 0xD0) else 0
            key = (channel, first)
            if kind_nibble == 0x90 and second > 0:
                if key in sounding:  # a re-strike ends the sounding note
                    start, velocity = sounding.pop(key)
                    notes.append(Note(first, start, tick, velocity))
                sounding[key] = (tick, second)
            elif kind_nibble in (0x80, 0x90) and key in sounding:
                start, velocity = sounding.pop(key)
                notes.append(Note(first, start, tick, velocity))
        if not ended:
            raise reader.error("track without an end-of-track event")
        if reader.position != chunk_end:
            raise reader.error(f"track chunk length says it ends at byte {chunk_end}, events end at {reader.position}")
        for (_, pitch), (start, velocity) in sounding.items():
            notes.append(Note(pitch, start, tick, velocity))
        end_tick = max(end_tick, tick)
    return MidiFile(file_format, track_count, division, tempo or DEFAULT_TEMPO,
                    tuple(sorted(notes, key=lambda n: (n.start, n.pitch))), end_tick)


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    if value < 0:
        raise ValueError(f"negative delta time {value}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.position = data, name, 0

    def error(self, message: str) -> BadInputError:
        return BadInputError(f"{self.name}: byte {self.position}: {message}")

    def take(self, count: int) -> bytes:
        if self.position + count > len(self.data):
            raise self.error(f"file ends early (wanted {count} more bytes)")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def vlq(self) -> int:
        value = 0
        for _ in range(4):
            byte = self.u8()
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return value
        raise self.error("variable-length quantity longer than 4 bytes")
