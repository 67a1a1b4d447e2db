"""Keep freed CPU memory inside the process, so training steps stop page-faulting.

glibc's malloc serves a large block (above a threshold that adapts up to 32 MiB) with a fresh
``mmap`` and returns the top of its heap to the kernel once more than ``M_TRIM_THRESHOLD`` of it
is free. A training step of a word language model allocates and frees tens of MiB (the
(B·T, V) logits, their gradient, the softmax layer's weight gradient), so every step can touch
thousands of fresh pages, each a minor page fault the kernel has to zero: 7,000 to 10,000 per
step of the PTB word-LM configuration (``benchmarks/word_lm_speed.py``) in a fresh process, and a
handful with the settings below, which made that step about 20% faster. How many depends on the
run, because the threshold's adaptation follows the order of frees: some runs settle at none. PyTorch's CUDA caching
allocator keeps GPU memory the same way.

The process's resident size then stays near its peak instead of shrinking between steps.
``HARNESS_RETAIN_FREED_MEMORY=0`` turns this off; on platforms without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: Blocks up to this size come from the heap (glibc's largest allowed threshold on 64-bit).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap kept rather than returned to the kernel.
TRIM_THRESHOLD = 2**30
#: Extra memory requested each time the heap grows, so it grows rarely.
TOP_PAD = 64 * 2**20

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Configure glibc's malloc to keep freed memory; True when the settings are in force.

    Idempotent and process-wide; call it before training starts.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get("HARNESS_RETAIN_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    mallopt = ctypes.CDLL(library).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; a fixed M_MMAP_THRESHOLD also stops glibc adapting it.
    return all(mallopt(parameter, value) == 1 for parameter, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
