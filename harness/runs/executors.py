"""Which executor trains a grid (``executor: local | ray``), checked before anything starts.

This module never imports Ray at import time: ``executor: local`` (the default) needs no Ray,
and asking for ``ray`` without it installed is bad input (exit 2) naming the pip extra.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.experiment import LoadedExperiment
from harness.core.errors import ConfigError

#: What to install for ``executor: ray``.
RAY_EXTRA = 'pip install "rnn-harness[ray]"'


def require_ray(where: str = "") -> Any:
    """The ``ray`` module, or a ConfigError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{where}executor ray needs Ray, which is not installed here; install the extra: "
                          f"{RAY_EXTRA} (or use executor: local)") from None
    return ray


def choose_executor(loaded: LoadedExperiment, flag: str | None,
                    ray_address_flag: str | None = None) -> LoadedExperiment:
    """The experiment with ``executor`` set from ``--executor`` (else the file's); Ray checked when asked for.

    ``ray_address_flag``: a ``--ray-address`` given on the command line (not from $RAY_ADDRESS),
    which makes no sense with the local executor.
    """
    executor = flag or loaded.experiment.executor
    where = "--executor ray: " if flag else loaded.where("executor")
    if executor == "ray":
        require_ray(where)
    elif ray_address_flag:
        raise ConfigError(f"--ray-address {ray_address_flag}: the executor is local ({loaded.where('executor')}"
                          "default local); add --executor ray to train on that Ray cluster")
    if executor == loaded.experiment.executor:
        return loaded
    return dataclasses.replace(loaded, experiment=loaded.experiment.model_copy(update={"executor": executor}))


def ray_task_options(loaded: LoadedExperiment) -> dict[str, Any]:
    """Ray resources of one run: ``resources`` of the file; ``training.devices: N`` asks for N GPUs."""
    experiment = loaded.experiment
    cpus, gpus = experiment.resources.cpus, experiment.resources.gpus
    devices = experiment.training.devices
    if devices > 1:
        if experiment.device == "cpu":  # data-parallel over CPU processes: one core each
            cpus = max(cpus, float(devices))
        else:
            gpus = float(devices)
    if experiment.device == "gpu" and gpus == 0:
        raise ConfigError(f"{loaded.where('resources', 'gpus')}device is 'gpu' but resources.gpus is 0, so Ray "
                          "would give each run no GPU; set resources.gpus (0.25 packs four runs on one GPU)")
    return {"num_cpus": cpus, "num_gpus": gpus}
