#!/usr/bin/env bash
# The checks and measurements of the fused path that need a GPU, as one prepared run for a
# machine lent for a few minutes: the GPU tests of tests/fused and tests/training (Triton step
# kernels compiled for the card, CUDA-graph replays, every path against the reference,
# training with replays against eager training), then the recurrence
# benchmark of issue 5 on every built-in cell. Everything it prints also goes to OUT_DIR.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # default: $OUT, else benchmarks/results
#
# PYTHON picks the interpreter (default python3): one with a CUDA build of torch, triton,
# this project's dependencies, and this project installed (pip install -e . or its wheel:
# the built-in cells register through entry points; the first lines printed say which).
# TESTS_TIMEOUT and BENCHMARK_TIMEOUT (seconds, default 300 each) bound the two halves; CELLS
# picks the benchmark's cells (default: every built-in).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results}}"
python="${PYTHON:-python3}"
mkdir -p "$out"
stamp="$(date -u +%Y-%m-%dT%H%MZ)"

"$python" - <<'EOF' 2>&1 | tee "$out/$stamp-gpu-environment.txt"
import torch
print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), "cuda", torch.version.cuda, "device", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except Exception as error:
    print("triton does not import:", error)
from harness.core.loading import load_plugins
print("cells", ", ".join(load_plugins(autoload=False).cells.names()) or "none: install this project (pip install -e .)")
EOF

# The GPU tests (each file also runs its CPU tests, which take seconds), on 4 workers where
# pytest-xdist is installed: most of their time is Triton compiling.
parallel=()
"$python" -c "import xdist" 2>/dev/null && parallel=(-n 4)
timeout "${TESTS_TIMEOUT:-300}" "$python" -m pytest -q -p no:cacheprovider "${parallel[@]}" tests/training/test_gpu.py \
    tests/fused/test_triton.py tests/fused/test_graphs.py tests/fused/test_fused.py -k "cuda or triton or graph or gpu" 2>&1 \
    | tee "$out/$stamp-gpu-tests.txt" | tail -40
tests=${PIPESTATUS[0]}

# The benchmark: cuDNN/ATen and the four fused variants, at issue 5's sizes. An empty Triton
# cache, so that the first calls it reports include compiling the step kernels.
cells=()
[ -n "${CELLS:-}" ] && cells=(--cells "$CELLS")
TRITON_CACHE_DIR="$(mktemp -d)" timeout "${BENCHMARK_TIMEOUT:-300}" "$python" benchmarks/recurrence.py --device cuda \
    --repeats 25 --warmup 3 "${cells[@]}" --paths fused,torch \
    --json "$out/$stamp-cuda.json" 2>&1 | tee "$out/$stamp-gpu-benchmark.txt"
benchmark=${PIPESTATUS[0]}

echo "tests exit $tests, benchmark exit $benchmark"
[ "$tests" -eq 0 ] && [ "$benchmark" -eq 0 ]
