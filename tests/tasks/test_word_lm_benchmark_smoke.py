"""benchmarks/word_lm_speed.py still runs on real PTB: a few batches per side, JSON keys as documented.
(A smoke test, not a measurement: it asserts no timings.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "word_lm_speed.py"


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["fresh_process_per_side", "same_process"])
def test_benchmark_runs_both_sides_and_writes_its_json(real_data, tmp_path, isolation) -> None:
    real_data("ptb")
    spec = importlib.util.spec_from_file_location("word_lm_speed", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = benchmark
    spec.loader.exec_module(benchmark)
    out = tmp_path / "speed.json"
    report = benchmark.main(["--threads", "1", "--batches", "3", "--warmup", "1", "--rounds", "1", "--hidden", "8",
                             "--layers", "1", "--json", str(out)]
                            + (["--same-process"] if isolation == "same_process" else []))
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report))
    assert {"date", "machine", "torch", "threads", "config", "epoch_batches", "results", "allocator",
            "rounds", "ratio_ours_over_reference", "ratio_of_pooled_medians"} <= written.keys()
    assert written["isolation"] == isolation
    assert len(written["rounds"]) == 1 and written["rounds"][0]["ratio_wall"] == written["ratio_ours_over_reference"]
    assert written["rounds"][0]["ratio_cpu"] == written["cpu_ratio_ours_over_reference"]
    assert written["config"]["vocab_size"] == 10_000 and written["epoch_batches"] == 2_324  # 929,590 // 20 - 1 over 20
    for side in ("ours", "reference"):
        assert written["results"][side]["batches"] == 3 and written["results"][side]["median_ms"] > 0
