#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv.
#
# CPU machines get the CPU build of torch, pinned so pip never pulls a multi-GB CUDA
# build. GPU users choose their build instead, e.g.
#   HARNESS_TORCH="torch --index-url https://download.pytorch.org/whl/cu128" ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
TORCH_SPEC="${HARNESS_TORCH:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first: with it in place, the project's `torch>=2.6` installs nothing more.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install --quiet $TORCH_SPEC
fi
.venv/bin/python -m pip install --quiet -e '.[test]'
