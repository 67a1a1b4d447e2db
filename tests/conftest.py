"""Settings for the whole test session.

Processed-data caches go to a fresh folder per session, so a test never passes because an
earlier session (or the user's own runs) left a cache entry behind.
"""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    if "HARNESS_CACHE_DIR" not in os.environ:
        os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="harness-test-cache-")
