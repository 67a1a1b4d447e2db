"""The local Ray cluster of this folder's tests (tests/ray_cluster.py): started by the first test that
needs it, shut down after the folder's last test so that its processes never outlive tests/ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster import LocalCluster, start_cluster

HERE = Path(__file__).parent
_running: list[Iterator[LocalCluster]] = []  # the started cluster's generator, until it is closed


def _shut_down() -> None:
    while _running:
        _running.pop().close()  # runs start_cluster's finally: cluster.shutdown()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    started = start_cluster()
    _running.append(started)
    try:
        yield next(started)
    finally:
        _shut_down()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # A session fixture would live until the whole suite ends: its raylets would then be children of
    # the pytest process (and use its cores) through every later test folder.
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        _shut_down()
