"""benchmarks/recurrence.py still runs: one tiny size, one repetition, JSON keys as documented.
(A smoke test, not a measurement: it asserts no timings.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recurrence.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("recurrence_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_writes_its_json(tmp_path: Path, capsys) -> None:
    benchmark = load_benchmark()
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    report = benchmark.main(["--device", "cpu", "--sizes", "2-3-4-5", "--repeats", "1", "--warmup", "1",
                             "--cells", "gru_simple,lstm", "--json", str(out)])
    assert torch.get_num_threads() == threads  # no --threads: the process setting is left alone
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report))
    assert {"date", "device", "device_name", "threads", "torch", "repeats", "warmup", "sizes", "anchor",
            "results"} <= written.keys()
    assert written["device"] == "cpu" and written["sizes"] == ["2-3-4-5"] and written["anchor"] == "torch.nn.LSTM"
    rows = {(r["label"], r["path"]) for r in written["results"]}
    assert rows == {("torch.nn.LSTM", "anchor"), ("torch.nn.GRU", "anchor"), ("gru_simple", "reference"),
                    ("gru_simple", "fused-native"), ("gru_simple", "fused-aten"), ("lstm", "reference"),
                    ("lstm", "fused-native"), ("lstm", "fused-aten"), ("lstm", "aten")}
    for row in written["results"]:
        assert {"size", "label", "cell", "options", "path", "median_ms", "min_ms", "ratio_to_lstm",
                "repeats", "first_calls_ms"} <= row.keys()
        assert row["median_ms"] > 0 and row["repeats"] == 1 and len(row["first_calls_ms"]) == 2
    anchor = next(r for r in written["results"] if r["label"] == "torch.nn.LSTM")
    assert anchor["ratio_to_lstm"] == 1.0
    table = capsys.readouterr().out
    assert "| implementation" in table and "gru_simple" in table


def test_the_fused_path_is_timed_with_each_of_its_step_kernels() -> None:
    benchmark = load_benchmark()
    variants = benchmark._fused_variants("fused", torch.device("cuda"), "fused-triton")
    assert variants == [
        ("fused-triton", {"HARNESS_FUSED_TRITON": "auto", "HARNESS_CUDA_GRAPHS": "0"}),
        ("fused-triton-graphs", {"HARNESS_FUSED_TRITON": "auto", "HARNESS_CUDA_GRAPHS": "1"}),
        ("fused-aten", {"HARNESS_FUSED_TRITON": "0", "HARNESS_CUDA_GRAPHS": "0"}),
        ("fused-aten-graphs", {"HARNESS_FUSED_TRITON": "0", "HARNESS_CUDA_GRAPHS": "1"}),
    ]
    assert [label for label, _ in benchmark._fused_variants("fused", torch.device("cuda"), "fused")] == [
        "fused-aten", "fused-aten-graphs"]  # the vanilla cell: no Triton kernels
    assert benchmark._fused_variants("fused", torch.device("cpu"), "fused-native") == [
        ("fused-native", {"HARNESS_FUSED_NATIVE": "auto"}), ("fused-aten", {"HARNESS_FUSED_NATIVE": "0"})]
    assert benchmark._fused_variants("fused", torch.device("cpu"), "fused") == [("fused", {})]  # vanilla
    assert benchmark._fused_variants("cudnn", torch.device("cuda"), None) == [("cudnn", {})]


def test_a_case_that_fails_is_reported_and_the_others_are_still_timed(capsys) -> None:
    benchmark = load_benchmark()

    def broken() -> None:
        raise RuntimeError("no kernel image is available")

    calls = []
    cases = [benchmark.Case("broken", "lstm", {}, "fused-triton", broken),
             benchmark.Case("fine", "lstm", {}, "fused-aten", lambda: calls.append(1))]
    benchmark.time_cases(cases, torch.device("cpu"), repeats=3, warmup=1)
    assert cases[0].error == "RuntimeError: no kernel image is available" and cases[0].times_ms == []
    assert cases[1].error is None and len(cases[1].times_ms) == 3
    assert len(cases[1].first_calls_ms) == 2 and len(calls) == 5  # two first calls, then three timed
    assert "broken fused-triton failed: RuntimeError: no kernel image is available" in capsys.readouterr().err
    table = benchmark.format_table([dict(size="1-1-1-1", label="broken", path="fused-triton", error="x")],
                                   ["1-1-1-1"])
    assert "| failed" in table
