"""Time every cell on every execution path, forward + backward, against torch.nn.LSTM.

For each size (batch-time-input-hidden) and each built-in cell variant it times one
training step's worth of recurrence (forward, then backward of a fixed random output
gradient into the inputs and every parameter) on the paths the stack offers:
``reference`` (the loop over ``cell.step``), ``fused`` (harness.fused; on CUDA four times:
with the Triton step kernels and with the ATen ones, each with and without CUDA-graph
replays; on the CPU twice, with the compiled step kernels and with the ATen ones) and
``torch`` (cuDNN/ATen, where the cell has an exact equivalent), plus ``torch.nn.LSTM`` and
``torch.nn.GRU`` as anchors.
One layer, one direction, full-length sequences.

Measurements are warm and interleaved (every repetition times each case once, so a
shared machine's slow moments hit all cases alike); the table gives the median and its
ratio to the median of ``torch.nn.LSTM`` of the same size in the same run. On CUDA it
times with CUDA events and turns TF32 off. This is a benchmark, not a test::

    python benchmarks/recurrence.py --device cpu --threads 1 --sizes 32-64-128-128
    python benchmarks/recurrence.py --device cuda --json bench.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script from a checkout: make `harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.training.allocator import retain_freed_memory  # noqa: E402
from harness.fused import kernel_for, on_device  # noqa: E402
from harness.core.loading import load_plugins  # noqa: E402
from harness.networks.stack import RecurrentStack  # noqa: E402

SIZES = ("32-64-128-128", "64-128-256-512", "128-256-512-1024")
#: (cell, options) of every built-in variant.
CELLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("vanilla", {"activation": "tanh"}),
    ("vanilla", {"activation": "relu"}),
    ("gru_simple", {}),
    ("gru", {"reset": "before"}),
    ("gru", {"reset": "after"}),
    ("lstm", {}),
    ("peephole_lstm", {"variant": "notes"}),
    ("peephole_lstm", {"variant": "gers"}),
)
PATHS = ("reference", "fused", "torch")
ANCHOR = "torch.nn.LSTM"


@dataclass
class Case:
    label: str
    cell: str
    options: dict[str, Any]
    path: str  # reference | fused (CUDA: fused-triton|aten[-graphs]; CPU: fused-native|aten) | aten | cudnn | anchor
    run: Callable[[], None]
    times_ms: list[float] = field(default_factory=list)
    #: Wall time of the first two calls: compiling (Triton) and capturing (CUDA graphs) happen there.
    first_calls_ms: list[float] = field(default_factory=list)
    error: str | None = None  # why the case failed; it is then left out of the timings


def parse_size(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.split("-"))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a size is batch-time-input-hidden, e.g. 32-64-128-128, got {text!r}")
    return parts  # type: ignore[return-value]


def _label(cell: str, options: dict[str, Any]) -> str:
    return cell + "".join(f" {k}={v}" for k, v in options.items())


def _step(module: nn.Module, call: Callable[[], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    """One forward + backward; gradients are dropped before each so none accumulate."""
    parameters = list(module.parameters())

    def run() -> None:
        for p in parameters:
            p.grad = None
        x.grad = None
        call().backward(grad)

    return run


def build_cases(size: tuple[int, int, int, int], device: torch.device, cells: list[str] | None,
                paths: tuple[str, ...]) -> list[Case]:
    batch, steps, inputs, hidden = size
    registry = load_plugins(autoload=False).cells
    x = torch.randn(batch, steps, inputs, device=device, requires_grad=True)
    grad = torch.randn(batch, steps, hidden, device=device)
    cases = []
    for label, module_class in ((ANCHOR, nn.LSTM), ("torch.nn.GRU", nn.GRU)):
        module = module_class(inputs, hidden, batch_first=True).to(device)
        cases.append(Case(label, label, {}, "anchor", _step(module, lambda m=module: m(x)[0], x, grad)))
    for name, options in CELLS:
        if cells is not None and name not in cells:
            continue
        cell_class = registry.get(name)
        for path in paths:
            try:
                stack = RecurrentStack(cell_class, inputs, hidden, config=cell_class.Config(**options),
                                       implementation=path).to(device)
            except ValueError:  # no torch.nn equivalent / no fused kernel: not a path of this cell
                continue
            executed = stack.execution_path(device)
            kernel = kernel_for(stack.layers[0][0]) if executed == "fused" else None
            steps = None if kernel is None else on_device(kernel, device).path_name  # fused-triton, fused-native
            run = _step(stack, lambda s=stack: s(x)[0], x, grad)
            for variant, environment in _fused_variants(executed, device, steps):
                cases.append(Case(_label(name, options), name, options, variant, _with_environment(environment, run)))
    return cases


def _fused_variants(executed: str, device: torch.device, steps: str | None) -> list[tuple[str, dict[str, str]]]:
    """(path label, environment) per case of a stack. ``steps``: the path name of the kernel the
    fused path hands over to on ``device`` (``fused-triton``, ``fused-native`` or ``fused``).

    On CUDA the fused path runs with the Triton step kernels (where the cell has them and
    Triton imports) and with the ATen ones, each with and without CUDA-graph replays
    (harness.fused.graphs); on the CPU with the compiled step kernels (where the cell has
    them and they were built) and with the ATen ones."""
    if executed != "fused":
        return [(executed, {})]
    if device.type == "cuda":
        kernels = (["triton"] if steps == "fused-triton" else []) + ["aten"]
        return [(f"fused-{kernel}{'-graphs' if replay else ''}",
                 {"HARNESS_FUSED_TRITON": "auto" if kernel == "triton" else "0",
                  "HARNESS_CUDA_GRAPHS": str(int(replay))})
                for kernel in kernels for replay in (False, True)]
    if steps == "fused-native":
        return [("fused-native", {"HARNESS_FUSED_NATIVE": "auto"}), ("fused-aten", {"HARNESS_FUSED_NATIVE": "0"})]
    return [("fused", {})]


def _with_environment(environment: dict[str, str], run: Callable[[], None]) -> Callable[[], None]:
    """``run`` with the environment variables set (and restored after)."""
    if not environment:
        return run

    def wrapped() -> None:
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            run()
        finally:
            for name, value in saved.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value

    return wrapped


def time_cases(cases: list[Case], device: torch.device, repeats: int, warmup: int) -> None:
    """Warm every case, then time each once per repetition, interleaved. A case that raises
    is marked failed and left out, so one broken path does not cost the others' numbers."""
    cuda = device.type == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for case in cases:
        try:
            for call in range(max(warmup, 2)):
                synchronize()
                begin = time.perf_counter()
                case.run()
                synchronize()
                if call < 2:
                    case.first_calls_ms.append((time.perf_counter() - begin) * 1e3)
        except Exception as error:
            case.error = f"{type(error).__name__}: {error}"
            print(f"{case.label} {case.path} failed: {case.error}", file=sys.stderr, flush=True)
    for _ in range(repeats):
        for case in cases:
            if case.error is not None:
                continue
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                case.run()
                end.record()
                end.synchronize()
                case.times_ms.append(start.elapsed_time(end))
            else:
                begin = time.perf_counter()
                case.run()
                case.times_ms.append((time.perf_counter() - begin) * 1e3)


def format_table(results: list[dict[str, Any]], sizes: list[str]) -> str:
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["label"], r["path"]), {})[r["size"]] = r
    header = ["implementation", "path", *sizes]
    lines = [header]
    for (label, path), by_size in rows.items():
        cells = []
        for size in sizes:
            r = by_size.get(size)
            if r is None:
                cells.append("–")
            elif r.get("error"):
                cells.append("failed")
            elif r["label"] == ANCHOR:
                cells.append(f"{r['median_ms']:.2f} ms")
            else:
                cells.append(f"{r['ratio_to_lstm']:.2f}× ({r['median_ms']:.2f} ms)")
        lines.append([label, path, *cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default=",".join(SIZES),
                        help="comma-separated batch-time-input-hidden sizes (default: the three of issue 5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--repeats", type=int, default=21, help="timed repetitions per case (median)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed runs per case first (at least 2; the first two are reported as first_calls_ms)")
    parser.add_argument("--cells", default=None, help="comma-separated cell names (default: all built-ins)")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated paths of the stack to time")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda, but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # As in training runs (train_run): keep freed memory, so that no path pays page faults for its buffers.
    allocator = retain_freed_memory() if device.type == "cpu" else None
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    cells = [c.strip() for c in args.cells.split(",")] if args.cells else None
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())

    torch.manual_seed(0)
    report = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        device=device.type, device_name=device_name, threads=torch.get_num_threads(),
        torch=torch.__version__, tf32=False if device.type == "cuda" else None, retain_freed_memory=allocator,
        repeats=args.repeats, warmup=args.warmup, sizes=sizes, anchor=ANCHOR, results=[],
    )
    heading = (f"{report['date']}  {device.type} ({device_name}), {report['threads']} threads, torch {torch.__version__}, "
               f"fwd+bwd, median of {args.repeats}; ratio to {ANCHOR} of the same size and run")
    results = report["results"]
    for done, size in enumerate(sizes, 1):
        cases = build_cases(parse_size(size), device, cells, paths)
        time_cases(cases, device, args.repeats, args.warmup)
        anchor = statistics.median(next(c for c in cases if c.label == ANCHOR).times_ms)
        for case in cases:
            row = dict(size=size, label=case.label, cell=case.cell, options=case.options, path=case.path,
                       first_calls_ms=case.first_calls_ms, repeats=len(case.times_ms))
            if case.error is not None:
                row["error"] = case.error
            else:
                median = statistics.median(case.times_ms)
                row.update(median_ms=median, min_ms=min(case.times_ms), ratio_to_lstm=median / anchor)
            results.append(row)
        # After every size, so that a run stopped early (a lent GPU's time limit) keeps what it measured.
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        if done < len(sizes):
            print(f"done {size}:\n{format_table(results, sizes[:done])}", file=sys.stderr, flush=True)

    print(heading)
    print(format_table(results, sizes))
    return report


if __name__ == "__main__":
    main()
