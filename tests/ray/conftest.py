"""The session's local Ray cluster (tests/ray_cluster.py), started by the first test that needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ray_cluster import LocalCluster, start_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    yield from start_cluster()
