"""Experiment files: YAML validated against a typed schema before anything starts.

Every error names the file, the line and the key path (``cells[1].options.reset``)
and says how to fix it; unknown cell and task names get a did-you-mean. Validation
has two stages: the schema (no plugins needed), then each cell's and task's own
options against the plugin's Config class (:func:`resolve`).

The line numbers are our own on purpose: pydantic reports key paths but not where they
are in the file, and PyYAML's composed nodes (``yaml.compose``) are the only place that
still knows each key's line, so :func:`_line_numbers` maps one to the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (BaseModel, Field, ValidationError,
                      field_validator, model_validator)

from harness.schema import StrictModel
from harness.errors import ConfigError, UnknownNameError

# Documented maxima of the schema's numbers (docs/reliability.md): far above any sensible run, low
# enough that a typo (1e29 epochs, a 1e12-wide embedding) is refused before anything is created.
#: Seeds are 32-bit unsigned: NumPy's and Python's generators take them, torch's would take more.
SEED_LIMIT = 2**32
MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536  # hidden and embedding sizes
MAX_PARAMETERS = 10**10
MAX_BATCH = 2**20
MAX_STEPS = 1_000_000  # bptt window


class _Strict(StrictModel):
    """The experiment schema's models (see :class:`harness.schema.StrictModel`)."""


class PluginChoice(_Strict):
    """A cell or task by name, with options for its plugin's Config."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: Shown in reports; defaults to the name plus any options, e.g. ``gru(reset=after)``.
    label: str | None = None
    #: Tasks only: one option → the values it takes, one task variant per value, each labelled
    #: ``agreement[max_distance=50]`` (:mod:`harness.sweeps`); the values replace ``options``' own.
    sweep: dict[str, list[str | bool | int | float]] | None = None

    _omit_when_default = frozenset({"sweep"})

    @field_validator("sweep")
    @classmethod
    def _one_swept_option(cls, sweep: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if sweep is None:
            return None
        if len(sweep) != 1:
            raise ValueError(f"sweep one option per task entry, got {len(sweep)} ({', '.join(sweep) or 'none'}); "
                             "list the task again to sweep another option")
        for option, values in sweep.items():
            if not values:
                raise ValueError(f"sweep {option!r} has no values; give a list such as [10, 25, 50]")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"sweep {option!r} lists a value twice: {values}")
        return sweep

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def display(self) -> str:
        """The label, or the name (the experiment adds options when a name is listed twice)."""
        return self.label or self.name

    def with_options_label(self) -> PluginChoice:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return self.model_copy(update={"label": f"{self.name}({options})" if options else self.name})


class ModelSettings(_Strict):
    #: Token embedding width (token inputs only).
    embedding_size: int = Field(32, gt=0, le=MAX_WIDTH)
    #: Width of each recurrent layer; leave unset when ``parameter_budget`` is given.
    hidden_size: int | None = Field(None, gt=0, le=MAX_WIDTH)
    #: Match cells by size: each cell gets the hidden size whose recurrent stack has the
    #: parameter count closest to this (Chung et al. 2014 and Greff et al. 2017 compare so).
    parameter_budget: int | None = Field(None, gt=0, le=MAX_PARAMETERS)
    #: Stacked recurrent layers (the notes' deep RNN).
    num_layers: int = Field(1, ge=1, le=8)
    bidirectional: bool = False
    #: Dropout between recurrent layers and before the output layer.
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: Which execution path the stack may take: auto (torch.nn where it is exact, else the fused
    #: kernel where the cell has one, else the reference loop), fused or reference.
    implementation: Literal["auto", "reference", "fused"] = "auto"
    #: How every parameter of the network starts: ``default`` (each layer's and cell's own
    #: initialisation, e.g. the LSTM forget-gate bias), ``uniform`` U(-init_scale, init_scale)
    #: (Zaremba et al. 2014 use 0.1) or ``normal`` N(0, init_scale²) (Cho et al. 2014 use 0.01).
    #: ``uniform`` and ``normal`` overwrite biases too, forget-gate bias included.
    initialization: Literal["default", "uniform", "normal"] = "default"
    init_scale: float = Field(0.1, gt=0, le=100)
    #: Many-to-one tasks (classification, regression): the feature vector the output layer reads.
    #: ``last``: the notes' state after the last real token (bidirectional: the forward state there
    #: and the backward state after the first token); ``mean``/``max``: pooled over every real step
    #: of the top layer's outputs. Other families ignore it.
    pooling: Literal["last", "mean", "max"] = "last"
    #: Encoder-decoders (seq2seq) only: ``initial_state``: the encoder's final state starts the decoder
    #: (Sutskever et al. 2014); ``every_step``: it is also concatenated, as the context c, to every
    #: decoder input and, with the embedded previous token, to the output layer's input (Cho et al. 2014).
    decoder_context: Literal["initial_state", "every_step"] = "initial_state"

    _omit_when_default = frozenset({"initialization", "init_scale", "pooling", "decoder_context"})

    @model_validator(mode="before")
    @classmethod
    def _one_size(cls, values: Any) -> Any:
        if isinstance(values, dict):
            given = [k for k in ("hidden_size", "parameter_budget") if values.get(k) is not None]
            if len(given) == 2:
                raise ValueError("give hidden_size or parameter_budget, not both")
            if not given:
                values = {**values, "hidden_size": 64}
        return values


class EarlyStopping(_Strict):
    """Stop when the monitored validation metric has not improved for ``patience`` epochs, then test
    the weights of the best validation epoch (reported as ``test_best_epoch``)."""

    _omit_when_default: ClassVar[frozenset[str]] = frozenset({"monitor"})

    #: Epochs without a validation-loss improvement before stopping.
    patience: int = Field(3, ge=1, le=MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0.0)
    monitor: Literal["loss", "primary"] = Field(
        "loss", description="What picks the stopping and the tested epoch: the validation loss, or the task's "
                            "primary metric on the validation split in its direction (F1 for NER, BLEU ...).")


class TrainingSettings(_Strict):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    #: constant, cosine (to zero over max_epochs) or step (× lr_gamma every lr_step_epochs).
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_step_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    #: step schedule: epochs trained at the initial rate before the first decay, then one decay every
    #: lr_step_epochs (Zaremba et al. 2014: 4, i.e. "halved every epoch after epoch 4"); null: lr_step_epochs.
    lr_decay_start_epoch: int | None = Field(None, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    #: Validation and test batch size (null: batch_size). For stream language models it is the
    #: number of columns the split is cut into: 1 scores every token after the first.
    eval_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH)
    #: Stream language models (truncated BPTT): steps per window; the state is carried across
    #: windows. Sentence-level tasks ignore it.
    bptt_steps: int = Field(35, ge=1, le=MAX_STEPS)
    max_epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    #: Rescale the gradient when its global norm exceeds this (the notes' clipping); null: off.
    gradient_clip_norm: float | None = Field(1.0, gt=0)
    early_stopping: EarlyStopping | None = None
    #: CPU threads for torch (null: torch's default). Small recurrent models step through
    #: many tiny kernels, where one thread avoids OpenMP hand-off costs on a busy machine.
    cpu_threads: int | None = Field(None, ge=1, le=4096)
    #: Standard deviation of Gaussian noise added to every parameter for each training step's
    #: forward and backward pass; the update is applied to the clean weights (Graves 2011;
    #: Chung et al. 2014 use 0.075). 0: off.
    weight_noise: float = Field(0.0, ge=0)
    #: Devices (GPUs, or CPU processes without one) that train one run data-parallel with
    #: Lightning's DDP (harness.distributed). Each takes an equal share of every batch, so
    #: batch_size (and eval_batch_size) must be divisible by it; 1: one process.
    devices: int = Field(1, ge=1, le=1024)

    _omit_when_default = frozenset({"weight_noise", "lr_decay_start_epoch", "eval_batch_size", "bptt_steps",
                                    "devices"})

    @model_validator(mode="after")
    def _batches_split_evenly(self) -> TrainingSettings:
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value % self.devices:
                raise ValueError(
                    f"{name} {value} does not split evenly over devices: {self.devices} (each device takes "
                    f"an equal share of every batch); use a multiple of {self.devices}"
                )
        return self


class Reference(_Strict):
    """Published results that reproduction presets carry, shown next to ours in the report."""

    #: Where the numbers come from, e.g. "Chung et al. 2014, Table 2".
    source: str
    #: Our test metrics (``test_*`` keys) that the published columns correspond to, in order.
    metrics: list[str] = Field(min_length=1)
    #: Absolute tolerance within which our mean counts as reproducing a number (optional).
    tolerance: float | None = Field(None, ge=0)
    #: task label → cell label → one published value per metric (null where none was published).
    results: dict[str, dict[str, list[float | None]]]

    @model_validator(mode="after")
    def _one_value_per_metric(self) -> Reference:
        for task, cells in self.results.items():
            for cell, values in cells.items():
                if len(values) != len(self.metrics):
                    raise ValueError(f"results.{task}.{cell} has {len(values)} values for "
                                     f"{len(self.metrics)} metrics ({', '.join(self.metrics)})")
        return self


class SearchParam(_Strict):
    """One searched setting of ``tuning.search_space``: a float or int range, or a list of choices.

    Which setting it changes is its key (``training.learning_rate``, ``cell.forget_bias``); the key
    and the values are checked against that setting by :mod:`harness.tuning_space`.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    #: Sample log-uniformly (learning rates, sizes: Greff et al. 2017 search both on a log scale).
    log: bool = False
    #: A grid step within [low, high] (not with log).
    step: float | None = Field(None, gt=0)
    choices: list[str | bool | int | float | None] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical entry needs choices: [...]")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("a categorical entry takes only choices; low, high, step and log are for float and int")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices are listed twice: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"choices are for categorical entries; a {self.type} entry takes low and high")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} entry needs low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined: Optuna samples on a log scale or on a grid")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int entry needs whole numbers for low, high and step")
        return self


class SamplerSettings(_Strict):
    """How each study proposes configurations."""

    #: tpe (Optuna's default, Bergstra et al. 2011) or random (Greff et al. 2017's random search).
    name: Literal["tpe", "random"] = "tpe"
    #: The same seed for every study: with one worker, a study is reproducible; null: unseeded.
    seed: int | None = Field(0, ge=0, lt=SEED_LIMIT)
    #: tpe only: random trials before the model takes over (Optuna's default is 10).
    startup_trials: int = Field(10, ge=1, le=MAX_EPOCHS)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _own_options(self) -> SamplerSettings:
        if self.name == "random" and "startup_trials" in self.model_fields_set:
            raise ValueError("startup_trials is an option of the tpe sampler, not of random")
        return self


class PrunerSettings(_Strict):
    """When to stop an unpromising trial early, from its per-epoch validation metric."""

    #: none; median (stop a trial whose value at an epoch is worse than the median of earlier
    #: trials at that epoch); successive_halving (asynchronous successive halving, Li et al. 2020).
    name: Literal["none", "median", "successive_halving"] = "median"
    #: median: no trial is pruned until this many trials have completed (Optuna's default is 5).
    startup_trials: int = Field(5, ge=0, le=MAX_EPOCHS)
    #: median: epochs every trial trains before it can be pruned.
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    #: successive_halving: epochs every trial trains before the first rung (Optuna's min_resource).
    min_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    #: successive_halving: 1/reduction_factor of the trials are promoted at each rung.
    reduction_factor: int = Field(3, ge=2, le=1000)

    _OPTIONS: ClassVar[dict[str, frozenset[str]]] = {
        "none": frozenset(), "median": frozenset({"startup_trials", "warmup_epochs"}),
        "successive_halving": frozenset({"min_epochs", "reduction_factor"}),
    }

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _own_options(self) -> PrunerSettings:
        foreign = sorted(self.model_fields_set - {"name"} - self._OPTIONS[self.name])
        if foreign:
            own = ", ".join(sorted(self._OPTIONS[self.name])) or "none"
            raise ValueError(f"{', '.join(foreign)}: not an option of the {self.name} pruner (its options: {own})")
        return self


class TuningSettings(_Strict):
    """``harness tune``: one Optuna study per (cell, task), every study with the same budget.

    The budget is ``trials`` trials of at most ``training.max_epochs`` epochs each (the
    fair-comparison protocol of Greff et al. 2017 and Melis et al. 2017); the best trial's
    configuration is then re-trained over ``seeds`` like a grid run.
    """

    #: Trials per study, counted to a fixed total: a resumed search runs only what is missing.
    trials: int = Field(ge=1, le=MAX_EPOCHS)
    #: Validation metric to optimise (without ``val_``); default: each task's primary metric.
    metric: str | None = None
    #: Needed only when ``metric`` is neither the task's primary metric nor ``loss``.
    direction: Literal["minimize", "maximize"] | None = None
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    pruner: PrunerSettings = Field(default_factory=PrunerSettings)
    #: setting → range or choices; keys ``model.<field>``, ``training.<field>``, ``cell.<option>``,
    #: ``task.<option>``. Left out: the harness's default space (learning rate, size, dropout, clipping).
    search_space: dict[str, SearchParam] | None = None
    #: Merge each cell's and task's own ``search_space`` defaults (e.g. the LSTM's forget_bias)
    #: under the entries above.
    plugin_search_space: bool = True
    #: Times a trial whose worker died (kill -9, a lost machine) is run again with the same values;
    #: after that its failure spends its slot. A trial ended by SIGINT/SIGTERM is always run again.
    max_retries: int = Field(3, ge=0, le=100)


class DiagnosticsSettings(_Strict):
    """Measurements taken beside training that never change it (:mod:`harness.run_diagnostics`)."""

    #: Measure ‖∂L/∂a<t>‖ (and ‖∂L/∂c<t>‖) by distance from the step where the loss is read, on a fixed
    #: validation batch, at initialisation and after training; logged as ``gradient_flow.json``.
    gradient_flow: bool = False
    #: Sequences in the gradient-flow probe batch (the first of the validation split).
    probe_size: int = Field(64, ge=1)


class ReportSettings(_Strict):
    """How the report compares cells; never part of a run key (changing it only rebuilds the report)."""

    correction: Literal["holm", "fdr_bh"] = Field(
        "holm", description="Multiple-comparison correction: Holm–Bonferroni or Benjamini–Hochberg (fdr_bh).")
    reference_cell: str = Field("lstm", description="The cell label the forest plot subtracts from every other.")
    memory_horizon_fraction: float = Field(0.95, gt=0, le=1, description=(
        "A swept task counts as solved at a value where the cell's mean is at least this share of the way "
        "from chance to the best cell's mean at the easiest value (the memory horizon's criterion)."))


class RunResources(_Strict):
    """What one run of the grid asks of a Ray cluster (``executor: ray``): CPUs and a GPU share."""

    #: CPU cores reserved per run.
    cpus: float = Field(1.0, gt=0)
    #: GPUs per run; a fraction packs runs onto one GPU (0.25: four runs share it). With
    #: ``training.devices: N`` > 1 a run asks for N whole GPUs instead.
    gpus: float = Field(0.0, ge=0)


class Experiment(_Strict):
    """The schema of an experiment file."""

    #: MLflow experiment and report folder name; defaults to the file's stem.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    cells: list[PluginChoice] = Field(min_length=1)
    tasks: list[PluginChoice] = Field(min_length=1)
    #: Each seed in [0, 2**32).
    seeds: list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]] = Field(min_length=1, max_length=10_000)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    #: auto uses a GPU when one is present.
    device: Literal["auto", "cpu", "gpu"] = "auto"
    #: MLflow tracking URI; default: SQLite in the output folder.
    tracking_uri: str | None = None
    #: Where the run ledger (and Optuna's studies) live: default SQLite in the output folder
    #: (one process); journal:///abs/path/ledger.journal (several processes on one machine);
    #: postgresql://user:password@host:5432/db (many machines). ``--storage`` overrides it.
    storage: str | None = None
    #: Where the ledger, MLflow store and checkpoints go; default runs/<name>.
    output_dir: str | None = None
    #: Where reports go: <reports_dir>/<name>/.
    reports_dir: str = "reports"
    #: Published numbers to compare with (reproduction presets).
    reference: Reference | None = None
    #: The hyper-parameter search of ``harness tune`` (``harness run`` ignores it).
    tuning: TuningSettings | None = None
    #: Also checkpoint every this many minutes inside an epoch (every epoch end always writes one).
    checkpoint_minutes: float | None = Field(None, gt=0, le=10080)
    #: Optional measurements per run (gradient flow through time); they do not change the run keys.
    diagnostics: DiagnosticsSettings = DiagnosticsSettings()
    #: How the report compares cells (correction, reference cell of the forest plot).
    report: ReportSettings = Field(default_factory=ReportSettings)

    #: Who trains the runs: ``local`` (this process) or ``ray`` (Ray tasks on the cluster that
    #: ``--ray-address``/$RAY_ADDRESS names, else a Ray instance started here; pip extra ``rnn-harness[ray]``).
    executor: Literal["local", "ray"] = "local"
    #: Per run, with ``executor: ray``: ``{cpus: 1, gpus: 0.25}``.
    resources: RunResources = RunResources()  # frozen: one shared default is safe, and _omit_when_default sees it

    _omit_when_default = frozenset({"diagnostics", "checkpoint_minutes", "executor", "resources"})

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str | None) -> str | None:
        from harness.storage import parse_storage

        if url is not None:
            try:
                parse_storage(url, output_dir=Path("."), where="")
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return url

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("cells")
    @classmethod
    def _cells_not_swept(cls, choices: list[PluginChoice]) -> list[PluginChoice]:
        swept = [c.name for c in choices if c.sweep]
        if swept:
            raise ValueError(f"sweep is for tasks ({', '.join(swept)} is a cell); list each cell variant with "
                             "its options instead")
        return choices

    @field_validator("cells", "tasks")
    @classmethod
    def _unique_labels(cls, choices: list[PluginChoice]) -> list[PluginChoice]:
        # A name listed twice (gru with reset before and after) is told apart by its options.
        names = [c.name for c in choices]
        choices = [c.with_options_label() if names.count(c.name) > 1 and not c.label else c for c in choices]
        labels = [c.display for c in choices]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ValueError(f"listed twice: {', '.join(duplicates)}; give one of them a different label")
        return choices


@dataclass(frozen=True)
class LoadedExperiment:
    """A validated experiment file and where it came from."""

    experiment: Experiment
    path: Path
    lines: dict[tuple[Any, ...], int]
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.experiment.name or self.path.stem

    @property
    def output_dir(self) -> Path:
        return Path(self.experiment.output_dir or f"runs/{self.name}")

    @property
    def report_dir(self) -> Path:
        return Path(self.experiment.reports_dir) / self.name

    def where(self, *key_path: Any) -> str:
        """``file:line: key.path: `` for messages, using the closest key that has a line."""
        path = tuple(key_path)
        for override in reversed(self.overrides):
            # A value that came from --set has no line in the file: blame the --set, not a parent's line.
            key = tuple(_split_key(override.partition("=")[0]))
            if path[: len(key)] == key:
                return f"{self.path}: --set {override}: {format_key_path(path)}: "
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return f"{self.path}:{self.lines[path[:cut]]}: {format_key_path(path)}: "
        return f"{self.path}: {format_key_path(path)}: "


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> LoadedExperiment:
    """Read, override (``key.path=value``) and validate an experiment file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(_where_not_utf8(path, error)) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file: {error}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: an experiment file must be a mapping with cells, tasks and seeds")
    lines = _line_numbers(root) if root is not None else {}
    for override in overrides:
        _apply_override(data, override, path)
        key = tuple(_split_key(override.partition("=")[0]))
        lines = {k: v for k, v in lines.items() if k[: len(key)] != key}
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as error:
        loaded = LoadedExperiment(Experiment.model_construct(), path, lines, tuple(overrides))
        raise ConfigError(_describe_validation(error, loaded)) from None
    return LoadedExperiment(experiment, path, lines, tuple(overrides))


def _where_not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """``file:line:column`` of the first byte that is not UTF-8 (columns count bytes from 1)."""
    data = error.object
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (f"{path}:{line}:{column}: not UTF-8 (byte 0x{data[error.start]:02x}); "
            "save the experiment file as UTF-8")


def format_key_path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe_validation(error: ValidationError, loaded: LoadedExperiment, prefix: tuple[Any, ...] = (),
                         options: type[BaseModel] | None = None) -> str:
    """One line per problem; with ``options`` (a plugin's Config), a value out of range also gets the range."""
    messages = []
    for problem in error.errors():
        location = prefix + tuple(p for p in problem["loc"] if p not in ("function-after", "function-before"))
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            parent = location[:-1]
            message = f"unknown key {location[-1]!r}"
            known = _known_keys(loaded, parent)
            if known:
                message += f"; valid keys here: {', '.join(known)}"
        elif "input" in problem and problem["type"] not in ("missing",):
            message += f" (got {problem['input']!r})"
            message += _allowed(options, problem["loc"])
        messages.append(f"{loaded.where(*location)}{message}")
    return "\n".join(messages)


def _allowed(options: type[BaseModel] | None, location: tuple[Any, ...]) -> str:
    from harness.plugin_options import allowed_values

    field = options.model_fields.get(location[0]) if options is not None and location else None
    allowed = allowed_values(field) if field is not None else ""
    return f"; allowed: {allowed}" if allowed else ""


def _known_keys(loaded: LoadedExperiment, parent: tuple[Any, ...]) -> list[str]:
    model: Any = Experiment
    for part in parent:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _line_numbers(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            lines.update(_line_numbers(value_node, key))
            lines[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*path, index)))
    return lines


def _split_key(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in key.strip().split(".")]


def _apply_override(data: dict[str, Any], override: str, path: Path) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set training.max_epochs=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {error}") from None
    parts = _split_key(key)
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(target, dict) and isinstance(part, str):
                target = target.setdefault(part, {})
                continue
            raise ConfigError(
                f"--set {override!r}: {format_key_path(parts[: depth + 1])} does not exist in {path}"
            ) from None
    try:
        target[parts[-1]] = value
    except (IndexError, TypeError):
        raise ConfigError(f"--set {override!r}: cannot set {format_key_path(parts)} in {path}") from None


# ---------------------------------------------------------------------------
# Second stage: plugin options, once plugins are loaded.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """Where a task variant sits in its sweep: the listed task's label, the option and this value."""

    task: str
    option: str
    value: Any
    #: The value's place in the listed sweep: 0 is the first (by convention the easiest) value.
    position: int = 0


@dataclass(frozen=True)
class ResolvedChoice:
    """A cell or task choice with its plugin class and validated Config instance."""

    choice: PluginChoice
    plugin_class: type
    config: BaseModel
    #: Set on the variants of a swept task.
    sweep: SweepPoint | None = None

    @property
    def name(self) -> str:
        return self.choice.name

    @property
    def label(self) -> str:
        return self.choice.display

    def options(self) -> dict[str, Any]:
        """All options, defaults included: what the run really used."""
        return self.config.model_dump(mode="json")


def resolve(loaded: LoadedExperiment, plugins: Any) -> tuple[list[ResolvedChoice], list[ResolvedChoice]]:
    """Look up every cell and task and validate its options against the plugin's Config.

    A swept task becomes one task per swept value (:func:`_resolve_sweep`), in the listed order.
    """
    experiment = loaded.experiment
    cells = [_resolve_choice(loaded, plugins.cells, "cells", i, c) for i, c in enumerate(experiment.cells)]
    tasks = []
    for index, task in enumerate(experiment.tasks):
        if task.sweep:
            tasks += _resolve_sweep(loaded, plugins.tasks, index, task)
        else:
            tasks.append(_resolve_choice(loaded, plugins.tasks, "tasks", index, task))
    labels = [t.label for t in tasks]
    for index, task in enumerate(experiment.tasks):
        if task.sweep and len(set(labels)) != len(labels):
            twice = sorted({x for x in labels if labels.count(x) > 1})
            raise ConfigError(f"{loaded.where('tasks', index, 'sweep')}the task variant(s) {', '.join(twice)} "
                              "are listed twice; give one of the entries a different label")
    return cells, tasks


def _resolve_sweep(loaded: LoadedExperiment, registry: Any, index: int, task: PluginChoice) -> list[ResolvedChoice]:
    """One ResolvedChoice per swept value, labelled ``label[option=value]``, each variant validated.

    A problem with the swept value names ``tasks[i].sweep.<option>[j]``; one with another option
    names ``tasks[i].options.<key>`` (a required option may be given by the sweep alone).
    """
    try:
        plugin_class = registry.get(task.name, where=loaded.where("tasks", index, "name"))
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    ((option, values),) = task.sweep.items()
    fields = plugin_class.Config.model_fields
    if option not in fields:
        raise ConfigError(f"{loaded.where('tasks', index, 'sweep', option)}task {task.name!r} has no option "
                          f"{option!r} to sweep; its options: {', '.join(fields) or '(none)'}")
    variants = []
    for position, value in enumerate(values):
        options = {**task.options, option: value}
        try:
            config = plugin_class.Config(**options)
        except ValidationError as error:
            raise ConfigError(_describe_sweep_error(error, loaded, index, option, position, value, task.name)) from None
        label = f"{task.display}[{option}={value}]"
        choice = task.model_copy(update={"options": options, "sweep": None, "label": label})
        variants.append(ResolvedChoice(choice, plugin_class, config, sweep=SweepPoint(task.display, option, value,
                                                                                       position)))
    return variants


def _describe_sweep_error(error: ValidationError, loaded: LoadedExperiment, index: int, option: str, position: int,
                          value: Any, task: str) -> str:
    problems = error.errors()
    about_value = [p["msg"] for p in problems if not p["loc"] or p["loc"][0] == option]
    if about_value or len(problems) == 0:
        return (f"{loaded.where('tasks', index, 'sweep', option, position)}{option}={value!r} is not a valid value "
                f"for task {task!r}: {'; '.join(about_value or [str(error)])}")
    return _describe_validation(error, loaded, ("tasks", index, "options"))


def _resolve_choice(loaded: LoadedExperiment, registry: Any, section: str, index: int, choice: PluginChoice) -> ResolvedChoice:
    try:
        plugin_class = registry.get(choice.name, where=loaded.where(section, index, "name"))
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    try:
        config = plugin_class.Config(**choice.options)
    except ValidationError as error:
        plugin = registry.entry(choice.name).plugin
        message = _describe_validation(error, loaded, (section, index, "options"), plugin_class.Config)
        known = ", ".join(plugin_class.Config.model_fields) or "(none)"
        raise ConfigError(f"{message} ({choice.name} is from plugin {plugin!r}; its options: {known}; "
                          f"see `harness {section} show {choice.name}`)") from None
    return ResolvedChoice(choice, plugin_class, config)


def content_hash(payload: Any) -> str:
    """A stable short hash of JSON-able content (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
