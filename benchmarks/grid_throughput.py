"""Grid throughput: runs per hour of a fixed small-run grid, one run at a time vs several at once.

Every row is a real ``harness run`` of the same grid (``vanilla`` × ``agreement`` × ``--runs``
seeds, 2 epochs, hidden 32) in a fresh folder, timed end to end (start-up included):

* ``local`` — ``executor: local``, one run at a time (the baseline);
* ``local pool ×k (cpu)`` — ``executor: local`` with ``resources.cpus`` chosen so that k runs
  train at once in the local process pool;
* ``ray ×k (cpu)`` — ``executor: ray`` on a Ray instance started on this machine, with
  ``resources.cpus`` chosen so that k runs train at once;
* ``ray ×k (gpu)`` — ``resources.gpus: 1/k``, k runs packed on one GPU (only with a GPU;
  otherwise the row says it was not run); with a GPU also ``local, one at a time (gpu)`` (the GPU
  rows' baseline) and ``local pool ×k (gpu)``: ``executor: local``, ``resources.gpus: 1/k``.

It also gives the Ray overhead against ``local``: start-up (a one-run grid's wall time, ray minus
local) and per run (the wall time per extra run, ray ×1 minus local). A benchmark, not a test::

    .venv/bin/python benchmarks/grid_throughput.py --json            # --no-ray: the local rows only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

#: The quickstart's kind of run, shrunk so a grid takes minutes on a 2-core CPU.
GRID: dict[str, Any] = {
    "cells": ["vanilla"],
    "tasks": [{"name": "agreement", "options": {"train_size": 4096, "validation_size": 256, "test_size": 256}}],
    "model": {"hidden_size": 32, "embedding_size": 16},
    "training": {"max_epochs": 2, "batch_size": 32, "cpu_threads": 1},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}
GPU_PACKING = (1, 2, 4, 8, 16)
NO_GPU = "not run: no GPU lent this session"


def timed_run(runs: int, *, executor: str = "local", sets: tuple[str, ...] = ()) -> float:
    """Wall seconds of ``harness run`` on a ``runs``-seed grid in a fresh folder (fails loudly)."""
    with tempfile.TemporaryDirectory(prefix="grid-throughput-") as folder:
        path = Path(folder) / "grid.yaml"
        path.write_text(yaml.safe_dump({**GRID, "seeds": list(range(runs))}), encoding="utf-8")
        command = [str(Path(sys.executable).parent / "harness"), "run", "grid.yaml", "--quiet",
                   "--executor", executor, *[arg for s in sets for arg in ("--set", s)]]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a Ray started here
        env["OMP_NUM_THREADS"] = "1"
        started = time.perf_counter()
        finished = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if finished.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
        return wall


def row(name: str, runs: int, wall: float | None, baseline: float | None, note: str = "") -> dict[str, Any]:
    per_hour = None if wall is None else runs * 3600 / wall
    speedup = None if wall is None or baseline is None else baseline / wall
    return {"setting": name, "runs": runs, "wall_s": wall, "runs_per_hour": per_hour,
            "vs_one_at_a_time": speedup, "note": note}


def overhead_of(name: str, runs: int, local: float, single_local: float, one_at_a_time: float,
                single: float) -> dict[str, Any]:
    """Start-up (one-run grid, minus local's) and per-run cost (per extra run, minus local's) of ``name``."""
    return {"startup_s": single - single_local,
            "per_run_s": (one_at_a_time - single) / (runs - 1) - (local - single_local) / (runs - 1),
            "one_run_grid_s": {"local": single_local, name: single}}


def measure(runs: int, with_ray: bool = True) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    gpu = torch.cuda.is_available()
    load_before = os.getloadavg()[0]  # a shared machine's other work slows every row
    local = timed_run(runs)
    rows = [row("local, one at a time", runs, local, local)]
    walls: dict[str, float] = {}
    for concurrent in (1, 2):  # `cores / k` CPUs per run: this many runs fit at once (pool and Ray alike)
        cpus = f"resources.cpus={cores / concurrent:g}"
        walls[f"pool x{concurrent}"] = timed_run(runs, sets=(cpus,))
        rows.append(row(f"local pool x{concurrent} (cpu)", runs, walls[f"pool x{concurrent}"], local))
        if with_ray:
            walls[f"ray x{concurrent}"] = timed_run(runs, executor="ray", sets=(cpus,))
            rows.append(row(f"ray x{concurrent} (cpu)", runs, walls[f"ray x{concurrent}"], local))
    gpu_local = timed_run(runs, sets=("device=gpu",)) if gpu else None
    if gpu_local is not None:
        rows.append(row("local, one at a time (gpu)", runs, gpu_local, gpu_local))
    for executor in ("local pool", "ray") if with_ray else ("local pool",):
        for packed in GPU_PACKING:
            name = f"{executor} x{packed} (gpu)"
            if gpu_local is None:
                rows.append(row(name, runs, None, None, NO_GPU))
                continue
            wall = timed_run(runs, executor="ray" if executor == "ray" else "local",
                             sets=("device=gpu", f"resources.gpus={1 / packed:g}"))
            rows.append(row(name, runs, wall, gpu_local))
    single_local = timed_run(1)
    whole = f"resources.cpus={cores:g}"
    overhead = {"pool": overhead_of("pool", runs, local, single_local, walls["pool x1"], timed_run(1, sets=(whole,)))}
    if with_ray:
        overhead["ray"] = overhead_of("ray", runs, local, single_local, walls["ray x1"],
                                      timed_run(1, executor="ray", sets=(whole,)))
    return {"machine": f"{platform.processor() or platform.machine()}, {cores} cores, "
                       f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "grid": {**GRID, "seeds": runs},
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "torch": torch.__version__, "rows": rows, "overhead_vs_local": overhead}


def show(result: dict[str, Any]) -> str:
    load = result["load_average_1min"]
    lines = [f"{result['machine']} ({result['date']}; load average {load['before']:.1f} before, "
             f"{load['after']:.1f} after)", "",
             "| setting | runs | wall s | runs/hour | vs one at a time |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["wall_s"] is None:
            lines.append(f"| {r['setting']} | - | - | - | {r['note']} |")
        else:
            lines.append(f"| {r['setting']} | {r['runs']} | {r['wall_s']:.0f} | {r['runs_per_hour']:.0f} | "
                         f"{r['vs_one_at_a_time']:.2f}x |")
    lines.append("")
    for name, overhead in result["overhead_vs_local"].items():
        lines.append(f"{name} overhead vs local one at a time: start-up {overhead['startup_s']:+.1f} s per "
                     f"`harness run`, {overhead['per_run_s']:+.1f} s per run")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="Seeds in the grid (runs per measurement; >= 2).")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    parser.add_argument("--no-ray", action="store_true", help="Leave out the executor: ray rows.")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2 (the per-run overhead compares grids of 1 and --runs runs)")
    result = measure(args.runs, with_ray=not args.no_ray)
    print(json.dumps(result, indent=2) if args.json else show(result))


if __name__ == "__main__":
    main()
