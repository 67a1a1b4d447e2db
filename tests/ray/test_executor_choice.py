"""``executor: local | ray`` in the experiment file and on the command line, without starting Ray.

Run keys must not change (the executor is how a run is trained, not what it is), the local
executor must not need Ray, and asking for Ray without it is bad input that names the extra.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness_processes import harness_env, run_harness, write_experiment

from harness.experiment import load_experiment
from harness.runs.executors import choose_executor, ray_task_options
from harness.core.loading import load_plugins
from harness.runs.grid import expand_grid

REPO = Path(__file__).resolve().parents[2]
TINY = {"cells": ["vanilla"], "tasks": [{"name": "agreement", "options": {"train_size": 16}}], "seeds": [0],
        "model": {"hidden_size": 8, "embedding_size": 4}, "training": {"max_epochs": 1}, "device": "cpu",
        "output_dir": "out", "reports_dir": "reports"}


def keys_of(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    return [spec.key for spec in expand_grid(load_experiment(path, overrides), load_plugins())]


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_executor_and_resources_leave_run_keys_unchanged(path: Path) -> None:
    plain = keys_of(path)
    with_ray = keys_of(path, ("executor=ray", "resources.cpus=2", "resources.gpus=0.25"))
    assert with_ray == plain


def test_defaults_are_local_and_left_out_of_the_dump(tmp_path: Path) -> None:
    loaded = load_experiment(write_experiment(tmp_path, "tiny", TINY))
    assert loaded.experiment.executor == "local"
    dumped = loaded.experiment.model_dump(mode="json")
    assert "executor" not in dumped and "resources" not in dumped  # older files' dumps stay the same
    chosen = choose_executor(loaded, "ray")
    assert chosen.experiment.executor == "ray" and chosen.experiment.model_dump()["executor"] == "ray"


def test_resources_become_ray_task_options(tmp_path: Path) -> None:
    loaded = load_experiment(write_experiment(tmp_path, "tiny", {**TINY, "resources": {"cpus": 2, "gpus": 0.25},
                                                                 "device": "auto"}))
    assert ray_task_options(loaded) == {"num_cpus": 2, "num_gpus": 0.25}
    several = load_experiment(tmp_path / "tiny.yaml", ("training.devices=2", "training.batch_size=32"))
    assert ray_task_options(several)["num_gpus"] == 2  # training.devices: N asks for N whole GPUs


def test_gpu_device_without_a_gpu_share_is_refused(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", {**TINY, "device": "gpu", "executor": "ray"})
    finished = run_harness(tmp_path, "run", "tiny.yaml")
    assert finished.returncode == 2, finished.explain()
    assert "tiny.yaml" in finished.stderr and "resources.gpus" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert not (tmp_path / "out").exists()  # nothing half-recorded


def test_ray_address_with_the_local_executor_is_refused(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", TINY)
    finished = run_harness(tmp_path, "run", "tiny.yaml", "--ray-address", "127.0.0.1:1")
    assert finished.returncode == 2, finished.explain()
    assert "--ray-address 127.0.0.1:1" in finished.stderr and "--executor ray" in finished.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_executor_in_the_file_names_the_line(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", {**TINY, "executor": "slurm"})
    finished = run_harness(tmp_path, "run", "tiny.yaml")
    assert finished.returncode == 2, finished.explain()
    assert "tiny.yaml:" in finished.stderr and "executor" in finished.stderr and "'ray'" in finished.stderr


#: Python without Ray: ``sys.modules["ray"] = None`` makes every ``import ray`` fail with ImportError.
WITHOUT_RAY = "import sys; sys.modules['ray'] = None; "


@pytest.mark.slow
def test_harness_imports_and_runs_locally_without_ray(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", TINY)
    code = WITHOUT_RAY + "import harness.cli.main, harness.runs.executors, harness.runs.runner; harness.cli.main.main()"
    finished = subprocess.run([sys.executable, "-c", code, "run", "tiny.yaml", "--quiet"], cwd=tmp_path,
                              env=harness_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "1 finished" in finished.stdout


def test_ray_executor_without_ray_exits_2_naming_the_extra(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", {**TINY, "executor": "ray"})
    code = WITHOUT_RAY + "import harness.cli.main; harness.cli.main.main()"
    for args in (["run", "tiny.yaml"], ["run", "tiny.yaml", "--executor", "ray"]):
        finished = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=harness_env(),
                                  capture_output=True, text=True, timeout=300)
        assert finished.returncode == 2, finished.stderr
        assert 'pip install "rnn-harness[ray]"' in finished.stderr and "Traceback" not in finished.stderr
        assert not (tmp_path / "out").exists()
    assert yaml.safe_load((tmp_path / "tiny.yaml").read_text())["executor"] == "ray"


def test_an_unreachable_ray_address_exits_2_before_recording_anything(tmp_path: Path) -> None:
    write_experiment(tmp_path, "tiny", TINY)
    finished = run_harness(tmp_path, "run", "tiny.yaml", "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert finished.returncode == 2, finished.explain()
    assert "--ray-address 127.0.0.1:1: nothing answers there" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert not (tmp_path / "out").exists()
