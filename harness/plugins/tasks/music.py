"""Polyphonic music: predict the next 88-key piano-roll step (Boulanger-Lewandowski et al. 2012).

What it tests: the lecture notes' music generation (one-to-many: generate a sequence
from nothing, or from its first notes) with sigmoid outputs for binary targets, on the
four benchmarks of Chung, Gulcehre, Cho & Bengio (2014), "Empirical Evaluation of
Gated Recurrent Neural Networks on Sequence Modeling", Table 2: JSB Chorales,
Nottingham, MuseData and Piano-midi.de.

Family ``multilabel_sequence``: each time step is an 88-key binary vector (MIDI notes
21..108); the network reads steps 1..t-1 (x<1> = all zeros) and predicts step t with
one sigmoid per key. Loss = binary cross-entropy summed over the 88 keys.

Metric ``nll``: the average negative log-likelihood per time step, in nats, on the
test split — the quantity of Chung et al.'s Table 2. It is averaged as Boulanger-
Lewandowski et al. prescribe: summed over every key of every time step of every test
sequence, divided by the total number of test time steps (every step weighs the
same; longer pieces count more; it is *not* a mean of per-sequence means).
``train_nll`` is the same quantity on the training split, for the network that is
tested (no weight noise), as in Table 2's "train" column.

Data: ``<data_dir>/polyphonic-music/<file>.json`` (see that folder's DATASET.md). The
JSON is read, never a pickle. ``data_dir`` defaults to the environment variable
``HARNESS_DATA_DIR`` (the folder that *contains* ``polyphonic-music/``). Files are
parsed and validated once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from harness import hookimpl
from harness.core.errors import BadInputError
from harness.core.limits import MAX_SLICE
from harness.data.midi import KEYS, LOWEST_NOTE, write_midi
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.data.reading import data_folder, require_file
from harness.plugins.tasks.data_sets import JSB_CHORALES, MUSEDATA, NOTTINGHAM, PIANO_MIDI

SUBFOLDER = "polyphonic-music"
HIGHEST_NOTE = LOWEST_NOTE + KEYS - 1  # 108, C8
#: data set -> (file, quarter notes per time step): the authors sampled every eighth
#: note, JSB Chorales every quarter note (DATASET.md).
DATASETS: dict[str, tuple[str, float]] = {
    "jsb_chorales": ("JSB_Chorales.json", 1.0),
    "nottingham": ("Nottingham.json", 0.5),
    "musedata": ("MuseData.json", 0.5),
    "piano_midi": ("Piano-midi.de.json", 0.5),
}
#: our split name -> the key in the JSON file
SPLIT_KEYS = {"train": "train", "validation": "valid", "test": "test"}

Piece = tuple[tuple[int, ...], ...]  # time steps of key indices 0..87


class MusicConfig(TaskConfig):
    dataset: Literal["jsb_chorales", "nottingham", "musedata", "piano_midi"] = Field("jsb_chorales", description=(
        "Which of the four data sets."))
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``polyphonic-music/``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    max_sequences: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Keep only the first N pieces of each split (a quick slice); null: all."))
    max_steps: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Truncate every piece to its first M time steps; null: whole pieces."))


def data_file(config: MusicConfig) -> Path:
    """The JSON file of ``config.dataset``; ConfigError when the folder is not given or not there."""
    folder = data_folder("music", config.data_dir, SUBFOLDER)
    return require_file("music", folder / DATASETS[config.dataset][0])


def read_pieces(path: Path) -> tuple[dict[str, tuple[Piece, ...]], str]:
    """All three splits of one JSON file as key indices, validated; cached per file state.

    Returns ``({"train"|"validation"|"test": pieces}, sha256 of the file)``.
    Raises BadInputError naming the file, split, piece and step of the first problem.
    """
    stat = Path(path).stat()
    return _read_cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> tuple[dict[str, tuple[Piece, ...]], str]:
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadInputError(f"{path}: expected an object with keys train, valid, test; got {type(document).__name__}")
    missing = [key for key in SPLIT_KEYS.values() if key not in document]
    if missing:
        raise BadInputError(f"{path}: missing split(s) {', '.join(missing)} (expected keys train, valid, test)")
    return {split: _parse_split(path, key, document[key]) for split, key in SPLIT_KEYS.items()}, digest


def _parse_split(path: str, key: str, pieces: object) -> tuple[Piece, ...]:
    if not isinstance(pieces, list):
        raise BadInputError(f"{path}: split {key!r}: expected a list of sequences, got {type(pieces).__name__}")
    parsed = []
    for index, piece in enumerate(pieces):
        where = f"{path}: split {key!r}, sequence {index}"
        if not isinstance(piece, list) or not piece:
            raise BadInputError(f"{where}: expected a non-empty list of time steps, got {piece!r:.60}")
        steps = []
        for step_index, step in enumerate(piece):
            if not isinstance(step, list):
                raise BadInputError(f"{where}, step {step_index}: expected a list of MIDI notes, got {step!r:.60}")
            for note in step:
                if not isinstance(note, int) or isinstance(note, bool) or not LOWEST_NOTE <= note <= HIGHEST_NOTE:
                    raise BadInputError(f"{where}, step {step_index}: note {note!r} is not a MIDI note "
                                        f"{LOWEST_NOTE}..{HIGHEST_NOTE}")
            if len(set(step)) != len(step):
                raise BadInputError(f"{where}, step {step_index}: a note is listed twice in {step}")
            steps.append(tuple(sorted(note - LOWEST_NOTE for note in step)))  # [] is a rest
        parsed.append(tuple(steps))
    return tuple(parsed)


class MusicTask(Task):
    """Model polyphonic piano rolls step by step; sample new pieces as MIDI."""

    name = "music"
    data_sets = (JSB_CHORALES, NOTTINGHAM, MUSEDATA, PIANO_MIDI)
    family = "multilabel_sequence"
    Config = MusicConfig
    primary_metric = "nll"
    higher_is_better = False
    input_size = KEYS

    @property
    def step_beats(self) -> float:
        """Quarter notes per time step, for writing MIDI."""
        return DATASETS[self.config.dataset][1]

    def load(self) -> TaskData:
        path = data_file(self.config)
        pieces, digest = read_pieces(path)
        keep, cut = self.config.max_sequences, self.config.max_steps
        splits = {split: [Example(inputs=[list(step) for step in piece[:cut]]) for piece in items[:keep]]
                  for split, items in pieces.items()}
        info: dict[str, object] = {"dataset": self.config.dataset, "data_file": path.name, "data_sha256": digest,
                                   "nll_average": "summed over keys and all steps of all sequences / total steps"}
        for split, examples in splits.items():
            steps = sum(len(e.inputs) for e in examples)
            info[f"{split}_sequences"] = len(examples)
            info[f"{split}_steps"] = steps
            info[f"{split}_notes_per_step"] = sum(len(s) for e in examples for s in e.inputs) / max(steps, 1)
        return TaskData(train=splits["train"], validation=splits["validation"], test=splits["test"],
                        input_size=KEYS, info=info)

    def write_samples(self, rolls: Sequence[Sequence[Sequence[int]]], output: Path, *,
                      prime_steps: int = 0) -> list[Path]:
        """One MIDI file and one piano-roll PNG per roll: ``output`` (or ``<stem>-<i>.mid`` for several)."""
        output = Path(output)
        if output.suffix.lower() not in (".mid", ".midi"):
            output = output.with_name(output.name + ".mid")
        output.parent.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for index, roll in enumerate(rolls, start=1):
            midi = output if len(rolls) == 1 else output.with_name(f"{output.stem}-{index}{output.suffix}")
            title = f"{self.config.dataset} sample {index}" + (f", first {prime_steps} steps primed" * bool(prime_steps))
            written.append(write_midi(midi, roll, step_beats=self.step_beats, name=title))
            written.append(plot_piano_roll(roll, midi.with_suffix(".png"), title=title, prime_steps=prime_steps))
        return written


def plot_piano_roll(roll: Sequence[Sequence[int]], path: Path, *, title: str = "", prime_steps: int = 0) -> Path:
    """A PNG of the roll: time across, pitch up; primed steps left of a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = len(roll)
    grid = [[roll[t][k] for t in range(steps)] for k in range(KEYS)]  # (88, T)
    figure = Figure(figsize=(min(max(6.0, steps / 12), 24.0), 4.0), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(grid, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
                extent=(-0.5, steps - 0.5, LOWEST_NOTE - 0.5, LOWEST_NOTE + KEYS - 0.5))
    if prime_steps:
        axes.axvline(prime_steps - 0.5, color="tab:red", linestyle="--", linewidth=1, label="end of prime")
        axes.legend(fontsize="small", loc="upper right")
    c_notes = list(range(24, HIGHEST_NOTE + 1, 12))
    axes.set_yticks(c_notes, [f"C{n // 12 - 1}" for n in c_notes])
    axes.set(title=title, xlabel="time step", ylabel="pitch")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    return Path(path)


@hookimpl
def register_tasks(register) -> None:
    register(MusicTask)
