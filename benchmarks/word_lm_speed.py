"""Word-LM training speed: the harness's real training path against a plain PyTorch loop of the same shape.

The configuration is issue #4's: Penn Treebank, batch 20, BPTT 20, a 2-layer LSTM with 200
units and 200-wide embeddings, no dropout, SGD with gradient-norm clipping, on the CPU.

* **ours** is the path every ``harness run`` takes: ``word_lm``'s stream, the network from
  ``harness.training.trainer.build_network`` (cell ``lstm``), ``harness.training.trainer.train_run`` with its
  LightningModule, stream loader, optimizer and clipping;
* **reference** is a plain loop written here with the structure of pytorch/examples
  ``word_language_model`` (``main.py``'s ``train()``): ``nn.Embedding`` → ``nn.LSTM(200, 200, 2)``
  → ``nn.Linear``, the hidden state detached between batches, ``zero_grad``, cross-entropy,
  ``backward``, ``clip_grad_norm_``, an SGD step and ``loss.item()`` per batch.

Both read the same token ids, batchified the same way, with the same sizes, initialisation
(U±0.1), learning rate and clipping, and the same number of torch threads; the reference runs
without torch's deterministic mode, as the script does, ours with the harness's. Each side's time
per batch is the interval between the starts of consecutive batches (data, forward, backward,
clipping, the step and any bookkeeping), after ``--warmup`` batches, on two clocks: wall time
and the process's CPU time (which other processes' load disturbs far less; with ``--threads 1``
it is the time the work itself took).

By default each side runs in a fresh Python process of its own, as users run ``harness run`` and
``python main.py``: a process's allocator state changes a step's cost (glibc returning freed
blocks to the kernel costs the plain loop thousands of page faults per step;
``harness.training.allocator`` keeps them). ``--same-process`` instead runs both in this process with the
harness's allocator settings applied to both, which compares the code paths alone. Sides
alternate (in turn first) for ``--rounds`` rounds so a shared machine's slow moments hit both;
the ratio ours / reference is the median of the per-round ratios, and the wall median gives the
projected time of one full PTB training epoch. A benchmark, not a test::

    HARNESS_DATA_DIR=../shared/data .venv/bin/python benchmarks/word_lm_speed.py --threads 2 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from a checkout: make `harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytorch_lightning as pl  # noqa: E402

from harness.training.allocator import retain_freed_memory  # noqa: E402
from harness.experiment import ModelSettings, TrainingSettings  # noqa: E402
from harness.core.loading import load_plugins  # noqa: E402
from harness.training.streams import batchify, detach_state  # noqa: E402
from harness.core.tasks import Example, TaskData  # noqa: E402
from harness.training.trainer import build_network, plan_network, train_run  # noqa: E402
from harness.plugins.tasks.word_lm import WordLMConfig, WordLMTask  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: What the issue measured for pytorch/examples word_language_model on this configuration (2-core CPU).
ISSUE_REFERENCE_MS = 50.0


class ReferenceModel(nn.Module):
    """pytorch/examples' RNNModel for an LSTM without dropout: embedding, nn.LSTM, decoder."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers)  # sequence first, as the example
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -0.1, 0.1)

    def forward(self, inputs: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        outputs, hidden = self.lstm(self.embedding(inputs), hidden)  # (T, B, H)
        return self.decoder(outputs), hidden  # (T, B, V)


Stamp = tuple[float, float]  # (wall clock, process CPU time) in seconds


def stamp() -> Stamp:
    return time.perf_counter(), time.process_time()


def intervals(stamps: list[Stamp]) -> list[Stamp]:
    """(wall, CPU) seconds between consecutive stamps."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps)]


def reference_times(ids: list[int], vocab_size: int, args: argparse.Namespace, batches: int) -> list[Stamp]:
    """(wall, CPU) seconds per batch of the plain loop: main.py's train() for ``batches`` batches.

    It runs as the script does, without torch's deterministic mode (which ``train_run``'s Lightning
    Trainer turns on for the whole process); the mode is restored afterwards.
    """
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(False)
    try:
        return _reference_loop(ids, vocab_size, args, batches)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _reference_loop(ids: list[int], vocab_size: int, args: argparse.Namespace, batches: int) -> list[Stamp]:
    torch.manual_seed(0)
    model = ReferenceModel(vocab_size, args.hidden, args.layers)
    criterion = nn.CrossEntropyLoss()
    data = batchify(ids, args.batch_size).t().contiguous()  # (C, B): the example's layout
    hidden = tuple(torch.zeros(args.layers, args.batch_size, args.hidden) for _ in range(2))
    model.train()
    starts = []
    for index in range(batches + 1):
        starts.append(stamp())
        i = index * args.bptt
        steps = min(args.bptt, data.shape[0] - 1 - i)
        inputs, targets = data[i : i + steps], data[i + 1 : i + 1 + steps].reshape(-1)
        hidden = detach_state(hidden)
        model.zero_grad()
        output, hidden = model(inputs, hidden)
        loss = criterion(output.view(-1, vocab_size), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(parameter.grad, alpha=-args.lr)
        loss.item()
    return intervals(starts)


class BatchTimer(pl.Callback):
    """Start stamps of every training batch; their differences are the time per batch."""

    def __init__(self) -> None:
        self.starts: list[Stamp] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.starts.append(stamp())


def harness_times(data: TaskData, task: WordLMTask, args: argparse.Namespace, batches: int) -> list[Stamp]:
    """(wall, CPU) seconds per batch of ``train_run`` (one epoch over the first ``batches + 1`` windows)."""
    plugins = load_plugins()
    cell = plugins.cells.get("lstm")
    config = cell.Config(forget_bias=0.0)
    model = ModelSettings(embedding_size=args.hidden, hidden_size=args.hidden, num_layers=args.layers,
                          initialization="uniform", init_scale=0.1)
    training = TrainingSettings(optimizer="sgd", learning_rate=args.lr, gradient_clip_norm=args.clip,
                                batch_size=args.batch_size, bptt_steps=args.bptt, max_epochs=1,
                                cpu_threads=args.threads)
    window = args.batch_size * args.bptt
    sliced = replace(data, train=[Example(data.train[0].inputs[: (batches + 1) * window + args.batch_size])],
                     validation=[Example(data.validation[0].inputs[: window + args.batch_size])],
                     test=[Example(data.test[0].inputs[: window + args.batch_size])])
    torch.manual_seed(0)
    plan = plan_network(cell, config, "language_model", model, None)
    net = build_network(cell, config, task, sliced, model, plan)
    timer = BatchTimer()
    train_run(net, task, sliced, training, seed=0, device="cpu", hyperparameters={}, verbose=False,
              extra_callbacks=[timer])
    return intervals(timer.starts)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(times: list[Stamp], windows: int) -> dict[str, float]:
    wall = sorted(t[0] for t in times)
    median = statistics.median(wall)
    return {"median_ms": 1000 * median, "p10_ms": 1000 * wall[len(wall) // 10],
            "p90_ms": 1000 * wall[(9 * len(wall)) // 10], "cpu_median_ms": 1000 * statistics.median(t[1] for t in times),
            "batches": len(wall), "projected_epoch_s": median * windows}


def side_times(side: str, args: argparse.Namespace, data: TaskData, task: WordLMTask) -> list[Stamp]:
    """(wall, CPU) seconds per batch of one side, ``--warmup`` + ``--batches`` batches, in this process."""
    batches = args.warmup + args.batches
    if side == "ours":
        return harness_times(data, task, args, batches)
    torch.set_num_threads(args.threads)
    return reference_times(data.train[0].inputs, len(data.input_vocab), args, batches)


def fresh_process_times(side: str, argv: list[str]) -> list[Stamp]:
    """The same as :func:`side_times`, run by a new Python process of this script (``--side``)."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--side", side]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {side} process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder that contains ptb/ (default: $HARNESS_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, both sides")
    parser.add_argument("--batches", type=int, default=100, help="timed batches per side per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches per side per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations ours / reference")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=200, help="hidden size = embedding size")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=20.0, help="pytorch/examples' default; = Zaremba's 1 (see preset)")
    parser.add_argument("--clip", type=float, default=0.25, help="gradient-norm clipping, both sides")
    parser.add_argument("--same-process", action="store_true",
                        help="both sides in this process, with the harness's allocator settings for both")
    parser.add_argument("--side", choices=("ours", "reference"), help=argparse.SUPPRESS)  # one fresh-process side
    parser.add_argument("--json", nargs="?", type=Path, const=True, default=None,
                        help="write the numbers as JSON (default file: benchmarks/results/<date>-word-lm-speed-cpu.json)")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    task = WordLMTask(WordLMConfig(data_dir=args.data_dir))
    data = task.load()
    if args.side is not None:
        print(json.dumps(side_times(args.side, args, data, task)))
        return {}
    ids, vocab_size = data.train[0].inputs, len(data.input_vocab)
    windows = math.ceil((len(ids) // args.batch_size - 1) / args.bptt)  # batches in one full training epoch
    timed: dict[str, list[Stamp]] = {"ours": [], "reference": []}
    rounds = []
    started = time.perf_counter()
    if args.same_process:
        retain_freed_memory()
        # An untimed round first: the process's allocator and caches settle (the first large tensors
        # cost page faults), so neither side's first round pays for that alone.
        for side in ("ours", "reference"):
            side_times(side, args, data, task)
    child_argv = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                  if name not in ("json", "same_process", "side") and value is not None]

    def measure(side: str) -> list[Stamp]:
        return side_times(side, args, data, task) if args.same_process else fresh_process_times(side, child_argv)

    for round_number in range(args.rounds):
        medians: dict[str, dict[str, float]] = {}
        order = ("ours", "reference") if round_number % 2 == 0 else ("reference", "ours")  # neither always first
        for side in order:
            times = measure(side)
            timed[side] += times[args.warmup :]
            medians[side] = {clock: 1000 * statistics.median(t[index] for t in times[args.warmup :])
                             for index, clock in enumerate(("wall", "cpu"))}
        rounds.append({f"{side}_{clock}_ms": medians[side][clock] for side in sorted(medians)
                       for clock in ("wall", "cpu")}
                      | {f"ratio_{clock}": medians["ours"][clock] / medians["reference"][clock]
                         for clock in ("wall", "cpu")})
        print(f"round {round_number + 1}/{args.rounds}: ours {medians['ours']['wall']:.1f} ms/batch "
              f"(CPU {medians['ours']['cpu']:.1f}), reference {medians['reference']['wall']:.1f} "
              f"(CPU {medians['reference']['cpu']:.1f})", file=sys.stderr, flush=True)
    torch.set_num_threads(previous_threads)
    results = {side: summary(times, windows) for side, times in timed.items()}
    # Each round's two sides ran back to back: the median of the per-round ratios is the least
    # disturbed by a shared machine's load, which changes between rounds more than within one.
    ratio = statistics.median(r["ratio_wall"] for r in rounds)
    cpu_ratio = statistics.median(r["ratio_cpu"] for r in rounds)
    # HARNESS_RETAIN_FREED_MEMORY=0 (inherited by the fresh processes) measures ours without harness.training.allocator.
    ours_allocator = ("harness.training.allocator" if os.environ.get("HARNESS_RETAIN_FREED_MEMORY", "1") != "0"
                      else "glibc defaults (HARNESS_RETAIN_FREED_MEMORY=0)")
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"processor": cpu_name(), "cpus": os.cpu_count(),
                    "load_average": list(os.getloadavg()), "python": platform.python_version()},
        "torch": torch.__version__, "threads": args.threads, "device": "cpu",
        "deterministic_mode": {"ours": "torch.use_deterministic_algorithms(True, warn_only=True) (Lightning "
                               "deterministic='warn'), fill_uninitialized_memory off", "reference": "off"},
        "isolation": "same_process" if args.same_process else "fresh_process_per_side",
        "allocator": ({"ours": ours_allocator, "reference": ours_allocator} if args.same_process
                      else {"ours": ours_allocator, "reference": "glibc defaults, as python main.py runs"}),
        "config": {"batch_size": args.batch_size, "bptt": args.bptt, "hidden": args.hidden, "embedding": args.hidden,
                   "layers": args.layers, "vocab_size": vocab_size, "lr": args.lr, "clip": args.clip,
                   "warmup": args.warmup, "batches": args.batches, "rounds": args.rounds},
        "epoch_batches": windows, "results": results, "rounds": rounds, "ratio_ours_over_reference": ratio,
        "cpu_ratio_ours_over_reference": cpu_ratio,
        "ratio_of_pooled_medians": results["ours"]["median_ms"] / results["reference"]["median_ms"],
        "issue_reference_ms": ISSUE_REFERENCE_MS, "wall_s": time.perf_counter() - started,
    }
    print(f"PTB, batch {args.batch_size}, BPTT {args.bptt}, {args.layers}x{args.hidden} LSTM, embedding "
          f"{args.hidden}, vocabulary {vocab_size:,}, {args.threads} threads, torch {torch.__version__}, "
          f"{report['isolation'].replace('_', ' ')}")
    print(f"{'':<11}{'median':>10}{'p10':>10}{'p90':>10}{'CPU median':>12}{'epoch (proj.)':>16}")
    for side, row in results.items():
        print(f"{side:<11}{row['median_ms']:>8.1f}ms{row['p10_ms']:>8.1f}ms{row['p90_ms']:>8.1f}ms"
              f"{row['cpu_median_ms']:>10.1f}ms{row['projected_epoch_s']:>14.0f} s")
    print(f"ours / reference = {ratio:.3f} wall, {cpu_ratio:.3f} CPU (medians of the {len(rounds)} per-round "
          f"ratios; pooled wall medians: {report['ratio_of_pooled_medians']:.3f}); {windows:,} batches per epoch; "
          f"the issue measured pytorch/examples at about {ISSUE_REFERENCE_MS:.0f} ms per batch")
    if args.json is not None:
        path = args.json if isinstance(args.json, Path) else RESULTS / f"{dt.date.today()}-word-lm-speed-cpu.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
