"""The runner for an experiment's executor: this process for ``executor: local`` (a local process pool
when the file gives ``resources``), Ray tasks for ``ray``."""

from __future__ import annotations

from typing import Any

from harness.experiment import LoadedExperiment


def make_runner(loaded: LoadedExperiment, plugins: Any, specs: list[Any], *, ray_address: str | None = None,
                **options: Any) -> Any:
    """A :class:`harness.runs.runner.Runner` for ``executor: local``, a Ray-backed one for ``executor: ray``.

    ``executor: local`` with ``resources`` in the file packs runs in a local process pool
    (:class:`harness.runs.pool_executor.PoolRunner`); without, one run at a time in this process.
    """
    if loaded.experiment.executor == "ray":
        from harness.runs.ray_executor import RayRunner

        return RayRunner(loaded, plugins, specs, ray_address=ray_address, **options)
    from harness.runs.pool_executor import PoolRunner, packs_runs

    if packs_runs(loaded):
        return PoolRunner(loaded, plugins, specs, **options)
    from harness.runs.runner import Runner

    return Runner(loaded, plugins, specs, **options)
