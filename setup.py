"""The compiled part of the package; everything else is in pyproject.toml.

``harness.fused._native_steps`` holds the CPU step kernels of the fused recurrence
(``harness/fused/_native_steps.c``: plain C against the Python API, no torch headers, so
the build needs a C compiler and nothing else). It is optional: where it cannot be
built, the install goes on without it (setuptools prints why) and the fused path runs its
ATen kernels on the CPU instead.
"""

import hashlib
import sys
from pathlib import Path

from setuptools import Extension, setup

SOURCES = ["harness/fused/_native_steps.c", "harness/fused/_native_steps.h"]


def source_hash() -> str:
    """SHA-256 of the extension's sources, compiled in as ``SOURCE_HASH``: a test compares it
    with the files, so an editable install whose C code changed without a rebuild is caught."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


setup(
    ext_modules=[
        Extension(
            "harness.fused._native_steps",
            SOURCES[:1],
            depends=SOURCES[1:],
            define_macros=[("SOURCE_HASH", f'"{source_hash()}"')],
            # -fno-trapping-math lets the compiler vectorise the loops' float comparisons (no result
            # changes); -g0 drops the debug info that Python's CFLAGS ask for (360 KB of the 570 KB)
            extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-fno-trapping-math", "-g0"],
            optional=True,
        )
    ]
)
