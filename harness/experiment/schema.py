"""The schema of an experiment file: one typed model, checked before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from harness.core.errors import ConfigError
from harness.experiment.search_settings import TuningSettings
from harness.experiment.settings import (
    SEED_LIMIT,
    DiagnosticsSettings,
    ModelSettings,
    PluginChoice,
    Reference,
    ReportSettings,
    RunResources,
    TrainingSettings,
    _Strict,
)


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
    #: Per run: ``{cpus: 1, gpus: 0.25}`` (Ray's resources; with ``executor: local`` given, runs are packed).
    resources: RunResources = RunResources()  # frozen: one shared default is safe, and _omit_when_default sees it

    _omit_when_default = frozenset({"diagnostics", "checkpoint_minutes", "executor", "resources"})

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str | None) -> str | None:
        from harness.experiment.storage_url import parse_storage

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
