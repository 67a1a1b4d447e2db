"""A new SQLite MLflow store is a copy of a migrated empty one: the same store MLflow would make, made fast."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from harness.runs.store_template import seed_sqlite_store
from harness.runs.tracking import Tracker, default_tracking_uri


def schema(database: Path) -> tuple[dict[str, list[str]], list[tuple[str]]]:
    """Each table's and index's definition as sorted clauses (MLflow's own migrations order a
    table's constraints differently from one fresh store to the next), and the schema version."""
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return {name: sorted(clause.strip(" \t\n,") for clause in sql.splitlines()) for name, sql in rows}, version


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path: Path, cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.chdir(tmp_path)
    fresh = tmp_path / "fresh" / "mlflow.db"
    fresh.parent.mkdir()
    SqlAlchemyStore(f"sqlite:///{fresh}", str(tmp_path / "mlruns")).engine.dispose()  # MLflow's own, migrated

    seeded_tracker = Tracker(default_tracking_uri(tmp_path / "seeded"), "probe")
    assert list(cache.glob("mlflow-stores/mlflow-*.db")), "the first store made the template"
    assert schema(tmp_path / "seeded" / "mlflow.db") == schema(fresh)
    experiments = {e.name: e for e in seeded_tracker.client.search_experiments()}
    # MLflow adds its Default experiment to the copy, where it would have put it in a fresh store.
    assert set(experiments) == {"Default", "probe"}
    assert experiments["Default"].experiment_id == "0" and seeded_tracker.experiment_id == "1"
    assert experiments["Default"].artifact_location == str(tmp_path / "mlruns" / "0")

    # The second store is a copy: same schema, its own experiments, nothing of the first's runs.
    seeded_tracker.client.create_run(seeded_tracker.experiment_id)
    second = Tracker(default_tracking_uri(tmp_path / "second"), "other")
    assert schema(tmp_path / "second" / "mlflow.db") == schema(fresh)
    assert {e.name for e in second.client.search_experiments()} == {"Default", "other"}
    assert second.client.search_runs([second.experiment_id]) == []


def test_an_existing_store_is_never_replaced(tmp_path: Path, cache: Path) -> None:
    tracker = Tracker(default_tracking_uri(tmp_path), "kept")
    run = tracker.client.create_run(tracker.experiment_id)
    seed_sqlite_store(tmp_path / "mlflow.db")
    assert tracker.client.get_run(run.info.run_id).info.run_id == run.info.run_id
    assert not list(tmp_path.glob(".mlflow.db.*"))  # no staged copy left behind


def test_without_a_writable_cache_mlflow_creates_the_store_itself(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(blocker))
    tracker = Tracker(default_tracking_uri(tmp_path / "out"), "slow-way")
    assert tracker.client.get_experiment(tracker.experiment_id).name == "slow-way"
    assert not (blocker.parent / "mlflow-stores").exists()
