"""A warning, once per process, when the installed torch's safe loader can be bypassed.

Model files and checkpoints are read with ``torch.load(weights_only=True)`` only
(:mod:`harness.core.safe_files`), which is what stops a hostile pickle from running code.
CVE-2026-24747 is a bypass of that loader in every torch before 2.10.0, so on an older torch the
guarantee does not hold and the user is told so when a file is read. The harness still runs there:
``pyproject.toml`` asks only for ``torch>=2.6``, and trusted files are safe on any version.
"""

from __future__ import annotations

import functools
import sys

import torch
from packaging.version import InvalidVersion, Version

CVE = "CVE-2026-24747"
#: The first release with the fix. Its pre-releases (``2.10.0a0+…`` builds) are before it and warn.
FIXED_IN = Version("2.10.0")


def unsafe_torch_load_warning(torch_version: str) -> str | None:
    """The one warning line for ``torch_version`` (e.g. ``"2.9.1+cpu"``), or None when it has the fix.

    A version string that cannot be parsed warns too: the loader's safety cannot be assumed.
    """
    try:
        if Version(torch_version) >= FIXED_IN:
            return None
    except InvalidVersion:
        pass
    return (f"Warning: torch {torch_version} has {CVE}: torch.load(weights_only=True) can be made to run code, "
            f"so a hostile model file or checkpoint is not safely refused; upgrade torch to {FIXED_IN} or later "
            "(pip install --upgrade torch)")


@functools.cache
def warn_if_torch_load_is_unsafe() -> None:
    """Print :func:`unsafe_torch_load_warning` for the installed torch to stderr, the first call only.

    Called just before each untrusted file is read, so only the commands that read one warn.
    """
    line = unsafe_torch_load_warning(str(torch.__version__))
    if line is not None:
        print(line, file=sys.stderr, flush=True)
