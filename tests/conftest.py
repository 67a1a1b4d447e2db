"""Settings for the whole test session.

Processed-data caches go to a fresh folder per session, so a test never passes because an
earlier session (or the user's own runs) left a cache entry behind. Without a GPU, Triton
runs as its interpreter. The fork server that starts the suite's ``harness`` commands
(:mod:`forked_harness`) starts in the background at once, while the tests are collected.
"""

from __future__ import annotations

import os
import tempfile
import threading

import torch
from forked_harness import start_server


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    if "HARNESS_CACHE_DIR" not in os.environ:
        os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="harness-test-cache-")
    # The default data folder (platformdirs honours XDG_DATA_HOME) is an empty one, never the
    # user's fetched data sets: only $HARNESS_DATA_DIR or a task's data_dir gives a test real data.
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="harness-test-data-home-")
    # Without a GPU, Triton kernels can run only in Triton's interpreter, which must be on
    # before anything imports triton. It changes nothing else: the harness runs them on the
    # CPU only when asked to (HARNESS_FUSED_TRITON=1, tests/fused/test_triton.py).
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_sessionstart(session) -> None:  # type: ignore[no-untyped-def]
    threading.Thread(target=start_server, name="harness fork server", daemon=True).start()
