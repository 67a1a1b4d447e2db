"""How many runs the local pool trains at once, and on which GPU (no process started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness_processes import write_experiment

from harness.core.errors import ConfigError
from harness.experiment.loading import load_experiment
from harness.runs.pool_executor import packs_runs, pool_slots

BASE: dict[str, Any] = {"cells": ["vanilla"], "tasks": [{"name": "agreement"}], "seeds": [0], "device": "cpu"}


def loaded(tmp_path: Path, **changes: Any) -> Any:
    return load_experiment(write_experiment(tmp_path, "grid", {**BASE, **changes}))


def test_without_resources_runs_stay_one_at_a_time(tmp_path: Path) -> None:
    assert not packs_runs(loaded(tmp_path))
    assert not packs_runs(loaded(tmp_path, executor="local"))


def test_cpus_give_floor_of_cores_over_cpus(tmp_path: Path) -> None:
    assert pool_slots(loaded(tmp_path, resources={"cpus": 1}), cores=2) == [None, None]
    assert pool_slots(loaded(tmp_path, resources={"cpus": 3}), cores=8) == [None, None]
    assert pool_slots(loaded(tmp_path, resources={"cpus": 4}), cores=2) == [None]  # at least one
    assert packs_runs(loaded(tmp_path, resources={"cpus": 1}))


def test_a_gpu_share_gives_slots_pinned_per_gpu(tmp_path: Path) -> None:
    slots = pool_slots(loaded(tmp_path, device="gpu", resources={"gpus": 0.125}), gpus_here=["0", "3"])
    assert slots == ["0"] * 8 + ["3"] * 8
    assert pool_slots(loaded(tmp_path, device="gpu", resources={"gpus": 0.3}), gpus_here=["1"]) == ["1"] * 3


@pytest.mark.parametrize("changes", [
    {"device": "gpu", "resources": {"cpus": 1}},  # no GPU share: no run would get one
    {"device": "gpu", "resources": {"gpus": 2}},  # a run trains on one GPU here
    {"device": "gpu", "resources": {"gpus": 0.5}, "gpus_here": []},  # no GPU on this machine
    {"resources": {"cpus": 1}, "training": {"devices": 2}},  # data-parallel runs are not packed
])
def test_what_cannot_be_packed_is_refused(tmp_path: Path, changes: dict[str, Any]) -> None:
    gpus_here = changes.pop("gpus_here", ["0"])
    with pytest.raises(ConfigError):
        pool_slots(loaded(tmp_path, **changes), cores=2, gpus_here=gpus_here)
