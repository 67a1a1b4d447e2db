"""The experiment file: its typed schema, loading with line-numbered errors, and grid resolution.

Two stages, as a user meets them: :func:`load_experiment` checks the file against
:class:`Experiment` (no plugins needed); :func:`resolve` then checks each cell's and task's
options against its plugin's Config and expands sweeps.
"""

from harness.experiment.grid import ResolvedChoice, SweepPoint, content_hash, resolve
from harness.experiment.loading import LoadedExperiment, format_key_path, load_experiment
from harness.experiment.schema import Experiment
from harness.experiment.search_settings import PrunerSettings, SamplerSettings, SearchParam, TuningSettings
from harness.experiment.settings import (MAX_BATCH, MAX_EPOCHS, MAX_PARAMETERS, MAX_STEPS, MAX_WIDTH, SEED_LIMIT,
                                         DiagnosticsSettings, EarlyStopping, ModelSettings, PluginChoice, Reference,
                                         ReportSettings, RunResources, TrainingSettings)

__all__ = [
    "MAX_BATCH", "MAX_EPOCHS", "MAX_PARAMETERS", "MAX_STEPS", "MAX_WIDTH", "SEED_LIMIT",
    "DiagnosticsSettings", "EarlyStopping", "Experiment", "LoadedExperiment", "ModelSettings", "PluginChoice",
    "PrunerSettings", "Reference", "ReportSettings", "ResolvedChoice", "RunResources", "SamplerSettings",
    "SearchParam", "SweepPoint", "TrainingSettings", "TuningSettings", "content_hash", "format_key_path",
    "load_experiment", "resolve",
]
