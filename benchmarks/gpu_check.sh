#!/usr/bin/env bash
# The checks and measurements of the fused path that need a GPU, as one prepared run for a
# machine lent for a few minutes: the GPU tests of tests/fused (Triton step kernels compiled
# for the card, CUDA-graph replays, every path against the reference), then the recurrence
# benchmark of issue 5 on the gated cells. Everything it prints also goes to OUT_DIR.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # default: $OUT, else benchmarks/results
#
# PYTHON picks the interpreter (default python3): one with a CUDA build of torch, triton,
# and this project's dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results}}"
python="${PYTHON:-python3}"
mkdir -p "$out"
stamp="$(date -u +%Y-%m-%dT%H%MZ)"

"$python" - <<'EOF' 2>&1 | tee "$out/$stamp-gpu-environment.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except Exception as error:
    print("triton does not import:", error)
EOF

# The GPU tests (each file also runs its CPU tests, which take seconds).
timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/fused/test_triton.py tests/fused/test_graphs.py \
    tests/fused/test_fused.py -k "cuda or triton or graph" 2>&1 | tail -40 | tee "$out/$stamp-gpu-tests.txt"
tests=${PIPESTATUS[0]}

# The benchmark: every gated cell on cuDNN/ATen and on the four fused variants, at issue 5's sizes.
timeout 300 "$python" benchmarks/recurrence.py --device cuda --repeats 20 --warmup 3 \
    --cells gru_simple,gru,lstm,peephole_lstm --paths fused,torch \
    --json "$out/$stamp-cuda.json" 2>&1 | tee "$out/$stamp-gpu-benchmark.txt"
benchmark=${PIPESTATUS[0]}

echo "tests exit $tests, benchmark exit $benchmark"
[ "$tests" -eq 0 ] && [ "$benchmark" -eq 0 ]
