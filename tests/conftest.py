"""Settings for the whole test session.

Processed-data caches go to a fresh folder per session, so a test never passes because an
earlier session (or the user's own runs) left a cache entry behind. Without a GPU, Triton
runs as its interpreter. The fork server that starts the suite's ``harness`` commands
(:mod:`forked_harness`) starts in the background at once, while the tests are collected.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from forked_harness import start_server

_ROOT = Path(__file__).resolve().parents[1]


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
    distributing = bool(getattr(session.config.option, "numprocesses", None)) and \
        not hasattr(session.config, "workerinput")
    if not distributing:  # an xdist controller runs no test: only its workers need a server
        threading.Thread(target=start_server, name="harness fork server", daemon=True).start()

# ---------------------------------------------------------------------------
# pytest-xdist (``-n 2 --dist loadscope`` in pyproject.toml's addopts): which tests share a worker
# ---------------------------------------------------------------------------

#: Work units that must stay on one worker, longest first: they are handed out before the rest.
_SHARED_UNITS = ("ray-cluster", "ray-cluster-tuning", "runner-scenarios", "tuning", "plugins-third-party")


@functools.cache
def _source(file: str) -> str:
    path = _ROOT / file
    return path.read_text(encoding="utf-8") if path.suffix == ".py" and path.is_file() else ""


def work_unit(nodeid: str) -> str:
    """The tests one worker runs together, from a test's node id (the controller has no items):

    - tests/runner modules with a ``build_scenario``: the ``scenarios`` fixture starts every such
      module's subprocess story at once, so they share one worker (on two, each would start all);
    - tests/tuning: its autouse session fixture starts every tuning scenario likewise;
    - modules on a local Ray cluster: one cluster per worker, shut down after the last of them
      (tests/ray/conftest.py); the tuner's modules and the others are two units, so two workers share the work;
    - modules on the session's pip-installed third-party plugins (tests/plugins/conftest.py);
    - any other test: its module, so a module-scoped fixture (a trained run, a built package) is built once.
    """
    file = nodeid.split("::", 1)[0]
    folder = Path(file).parent.as_posix()
    source = _source(file)
    if folder == "tests/runner" and "\ndef build_scenario(" in source:
        return "runner-scenarios"
    if folder == "tests/tuning":
        return "tuning"
    if folder == "tests/ray" and "ray_cluster" in source:
        # Two clusters, on two workers: the grid's Ray tests and the tuner's (each about half of tests/ray).
        return "ray-cluster-tuning" if Path(file).name.startswith("test_cluster_tune") else "ray-cluster"
    if folder == "tests/plugins" and ("third_party_site" in source or "third_party_on_path" in source):
        return "plugins-third-party"
    return file


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Load balancing by :func:`work_unit`, the shared units first (loadscope, with these scopes)."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # collection order: see _shared_units_first
    return WorkUnits(config, log)


@pytest.hookimpl(trylast=True)  # after the folders' own reordering (tests/runner/conftest.py)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the shared units first, then the modules with a test marked ``slow``: no worker
    starts a long unit near the end while the other has nothing left to do."""
    if hasattr(config, "workerinput"):
        slow_modules = {item.path for item in items if item.get_closest_marker("slow")}

        def rank(item: pytest.Item) -> int:
            unit = work_unit(item.nodeid)
            if unit in _SHARED_UNITS:
                return _SHARED_UNITS.index(unit)
            return len(_SHARED_UNITS) + (item.path not in slow_modules)

        items.sort(key=rank)
