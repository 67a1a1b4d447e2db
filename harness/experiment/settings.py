"""The settings of one run and of its report: which cell and task, the network, training, resources,
diagnostics and how the report compares cells. Every number has a documented maximum."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from harness.core.schema import StrictModel

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
    """The experiment schema's models (see :class:`harness.core.schema.StrictModel`)."""


class PluginChoice(_Strict):
    """A cell or task by name, with options for its plugin's Config."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: Shown in reports; defaults to the name plus any options, e.g. ``gru(reset=after)``.
    label: str | None = None
    #: Tasks only: one option → the values it takes, one task variant per value, each labelled
    #: ``agreement[max_distance=50]`` (:mod:`harness.runs.sweeps`); the values replace ``options``' own.
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
    #: Lightning's DDP (harness.training.distributed). Each takes an equal share of every batch, so
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


class DiagnosticsSettings(_Strict):
    """Measurements taken beside training that never change it (:mod:`harness.training.diagnostics`)."""

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
    """What one run of the grid asks for: CPUs and a GPU share. With ``executor: ray``, of the Ray cluster;
    with ``executor: local``, given at all, it packs runs in a local process pool: floor(cores / cpus) at
    once on the CPU, floor(1 / gpus) per visible GPU (left out: one run at a time, as always)."""

    #: CPU cores reserved per run.
    cpus: float = Field(1.0, gt=0)
    #: GPUs per run; a fraction packs runs onto one GPU (0.25: four runs share it). With
    #: ``training.devices: N`` > 1 a run asks for N whole GPUs instead.
    gpus: float = Field(0.0, ge=0)
