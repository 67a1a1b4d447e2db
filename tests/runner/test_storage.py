"""Storage URLs, the two ledger implementations and their locks (in-process, plus claim races).

The ledger contract tests run against both implementations, SQLite (:class:`Ledger`) and a
journal file (:class:`JournalLedger`), with two ledger objects on one storage standing for
two ``harness run`` drivers. The claim races start 8 real processes on one storage at once
(``claim_race.py``); PostgreSQL's race is in ``test_drivers.py``, with its server.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.core.errors import ConfigError
from harness.runs.journal_ledger import JournalLedger
from harness.runs.run_states import DONE, FAILED, KILLED, PENDING, RUNNING
from harness.runs.ledger import Ledger, open_ledger
from harness.experiment.storage_url import parse_storage
from harness.runs.storage import FileLock
from harness.runs.tracking import tracking_uri_for
from harness.runs.tracking import RetryingClient
from manual_clock import ManualClock
from postgres_cluster import postgres_cluster  # noqa: F401 - a fixture

CLAIM_RACE = Path(__file__).with_name("claim_race.py")


# ---------------------------------------------------------------------------
# parse_storage
# ---------------------------------------------------------------------------


def test_the_default_is_sqlite_in_the_output_folder(tmp_path: Path) -> None:
    choice = parse_storage(None, output_dir=tmp_path / "out")
    assert (choice.kind, choice.path) == ("sqlite", tmp_path / "out" / "ledger.db")
    assert choice.url == f"sqlite:///{tmp_path / 'out' / 'ledger.db'}"
    assert not choice.shared_by_processes and not choice.is_server and choice.is_sql


@pytest.mark.parametrize("url", ["journal:///{dir}/a/ledger.journal", "{dir}/a/ledger.journal"])
def test_a_journal_is_a_url_or_a_path_ending_in_journal(tmp_path: Path, url: str) -> None:
    choice = parse_storage(url.format(dir=tmp_path), output_dir=Path("."))
    assert (choice.kind, choice.path, choice.url) == ("journal", tmp_path / "a" / "ledger.journal",
                                                      f"journal://{tmp_path / 'a' / 'ledger.journal'}")
    assert choice.shared_by_processes and not choice.is_sql
    # Optuna's JournalStorage cannot share the ledger's file (it replays every line as its own).
    assert choice.companion_file("optuna") == tmp_path / "a" / "ledger.optuna.journal"


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_storage("sqlite:///rel/ledger.db", output_dir=Path(".")).path == tmp_path / "rel" / "ledger.db"
    assert parse_storage("ledger.journal", output_dir=Path(".")).path == tmp_path / "ledger.journal"


@pytest.mark.parametrize(("url", "kind", "sqlalchemy_url"), [
    # A bare postgresql:// gets the driver the project installs (SQLAlchemy 2.1 would pick psycopg 3).
    ("postgresql://u:secret@db.example:5432/harness", "postgresql",
     "postgresql+psycopg2://u:secret@db.example:5432/harness"),
    ("postgresql+psycopg://u@h/harness", "postgresql", "postgresql+psycopg://u@h/harness"),
    ("mysql+pymysql://u:secret@h/harness", "mysql", "mysql+pymysql://u:secret@h/harness"),
])
def test_database_servers_keep_their_url_and_hide_the_password_in_messages(url: str, kind: str,
                                                                          sqlalchemy_url: str) -> None:
    choice = parse_storage(url, output_dir=Path("."))
    assert (choice.kind, choice.url, choice.path) == (kind, sqlalchemy_url, None)
    assert choice.is_server and choice.shared_by_processes
    assert "secret" not in choice.describe()


@pytest.mark.parametrize(("url", "message"), [
    ("ledger.db", "is not a storage URL"),
    ("sqlite://", "in-memory database"),
    ("postgresql://u@host:5432", "names no database"),
    ("redis://host/0", "unsupported storage 'redis'"),
    ("journal://", "names no file"),
])
def test_bad_storage_urls_say_what_to_write_instead(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_storage(url, output_dir=Path("."), where="--storage: ")
    assert str(raised.value).startswith("--storage: ")


def test_a_missing_postgresql_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # what `import psycopg2` finds when it is not installed
    with pytest.raises(ConfigError, match=r"driver 'psycopg2', which is not installed; .*rnn-harness\[postgres\]"):
        parse_storage("postgresql://u@h/harness", output_dir=Path("."), where="--storage: ")


def test_a_database_server_needs_a_shared_tracking_uri(tmp_path: Path) -> None:
    server = parse_storage("postgresql://u@h/harness", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="no tracking_uri is set") as raised:
        tracking_uri_for(None, tmp_path, server, "grid.yaml: tracking_uri: ")
    assert "http://host:5000" in str(raised.value)
    assert tracking_uri_for("http://mlflow:5000", tmp_path, server, "") == "http://mlflow:5000"
    journal = parse_storage(f"{tmp_path}/l.journal", output_dir=tmp_path)
    assert tracking_uri_for(None, tmp_path, journal, "") == f"sqlite:///{tmp_path / 'mlflow.db'}"


# ---------------------------------------------------------------------------
# The experiment file and the command line
# ---------------------------------------------------------------------------

GRID = ("cells: [vanilla]\ntasks:\n  - name: adding\n    options: {train_size: 16, validation_size: 16, "
        "test_size: 16, length: 4}\nseeds: [0]\ndevice: cpu\noutput_dir: out\n")


def test_a_bad_storage_in_the_file_names_its_line(tmp_path: Path) -> None:
    from harness.experiment import load_experiment

    path = tmp_path / "grid.yaml"
    path.write_text(GRID + "storage: redis://host/0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"grid\.yaml:8: storage: .*unsupported storage 'redis'"):
        load_experiment(path)
    path.write_text(GRID + f"storage: journal://{tmp_path}/ledger.journal\n", encoding="utf-8")
    assert load_experiment(path).experiment.storage == f"journal://{tmp_path}/ledger.journal"


@pytest.mark.parametrize(("args", "message"), [
    (["run", "grid.yaml", "--storage", "redis://host/0"], "--storage: 'redis://host/0': unsupported storage"),
    (["run", "grid.yaml", "--storage", "sqlite://"], "in-memory database"),
    (["run", "grid.yaml", "--storage", "postgresql://u@127.0.0.1:9/harness"], "no tracking_uri is set"),
    (["run", "grid.yaml", "--lease-seconds", "0"], "--lease-seconds"),
])
def test_bad_scale_out_options_exit_2_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                args: list[str], message: str) -> None:
    from harness.cli.main import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_STORAGE", raising=False)
    (tmp_path / "grid.yaml").write_text(GRID, encoding="utf-8")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# `harness worker`: removed (issue #21)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["worker"], ["worker", "grid.yaml", "--storage", "journal:///x.journal",
                                              "--processes", "4"], ["worker", "--gpus", "0,1", "--runs-per-gpu", "2"],
                                  ["worker", "--help"]])
def test_harness_worker_says_in_one_line_what_replaced_it_and_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     args: list[str]) -> None:
    from harness.cli.main import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(GRID, encoding="utf-8")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: harness worker was removed"), result.output
    assert "executor: ray" in lines[0] and "resources: {cpus: N}" in lines[0] and "{gpus: F}" in lines[0]
    assert not (tmp_path / "out").exists()


def test_harness_worker_is_no_longer_listed() -> None:
    from harness.cli.main import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "worker" not in result.output, result.output


# ---------------------------------------------------------------------------
# The ledger contract, on both implementations
# ---------------------------------------------------------------------------

RUNS = [{"key": f"k{i}", "cell": "gru", "task": "adding", "seed": i, "spec": {"seed": i}} for i in range(3)]


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger kind; PostgreSQL as a fresh database on the session's throwaway server."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_cluster").new_database()
    return f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else f"journal://{tmp_path}/l.journal"


@pytest.fixture
def two_ledgers(storage_url: str) -> Any:
    """Two ledger objects on one storage: two worker processes, as far as the ledger can tell."""
    first, second = (open_ledger(parse_storage(storage_url, output_dir=Path("."))) for _ in range(2))
    yield first, second
    first.close()
    second.close()


def share_manual_clock(*ledgers: Any) -> ManualClock:
    """One manual clock for ``ledgers``: leases expire when the test advances it, never by machine load."""
    clock = ManualClock()
    for ledger in ledgers:
        ledger.clock = clock
    return clock


def test_planning_twice_from_two_workers_adds_each_run_once(two_ledgers: Any) -> None:
    first, second = two_ledgers
    first.plan("grid", RUNS)
    second.plan("grid", RUNS + [{"key": "k9", "cell": "gru", "task": "adding", "seed": 9, "spec": {}}])
    rows = first.rows("grid")
    assert [(r.key, r.position, r.status, r.spec) for r in rows] == [
        ("k0", 0, PENDING, {"seed": 0}), ("k1", 1, PENDING, {"seed": 1}), ("k2", 2, PENDING, {"seed": 2}),
        ("k9", 3, PENDING, {})]
    # The same keys in another experiment are other runs.
    second.plan("other", RUNS)
    assert len(first.rows("other")) == 3 and len(first.rows("grid")) == 4


def test_claims_go_in_grid_order_to_one_owner_each(two_ledgers: Any) -> None:
    first, second = two_ledgers
    first.plan("grid", RUNS)
    a = first.claim("grid", "worker-a", 60.0)
    b = second.claim("grid", "worker-b", 60.0)
    assert (a.key, a.status, a.owner, a.attempts) == ("k0", RUNNING, "worker-a", 1)
    assert (b.key, b.owner) == ("k1", "worker-b")
    second.finish("k0", "worker-b", DONE)  # not b's run: nothing happens
    first.set_mlflow_run("k0", "worker-a", "run-a")
    assert first.heartbeat("k0", "worker-a", 60.0)
    first.finish("k0", "worker-a", DONE)
    assert not first.heartbeat("k0", "worker-a", 60.0)  # finished: no longer owned
    second.finish("k1", "worker-b", FAILED, "error: boom")
    rows = {r.key: r for r in second.rows("grid")}
    assert (rows["k0"].status, rows["k0"].owner, rows["k0"].mlflow_run_id) == (DONE, None, "run-a")
    assert (rows["k1"].status, rows["k1"].reason) == (FAILED, "error: boom")
    # A claim takes only the statuses asked for (here: not FAILED); by default FAILED runs too.
    assert first.claim("grid", "worker-a", 60.0, statuses=(PENDING, KILLED)).key == "k2"
    assert first.claim("grid", "worker-a", 60.0, statuses=(PENDING, KILLED)) is None
    assert first.claim("grid", "worker-a", 60.0).key == "k1"


def test_a_failed_run_is_retried_once_by_drivers_that_saw_the_same_attempts(two_ledgers: Any) -> None:
    first, second = two_ledgers
    first.plan("grid", RUNS[:2])
    first.claim("grid", "worker-a", 60.0)
    first.finish("k0", "worker-a", FAILED, "error: boom")
    # Two drivers start: each notes the FAILED runs' attempts (k0 after 1; k1 is PENDING).
    seen = {r.key: r.attempts for r in first.rows("grid") if r.status == FAILED}
    assert seen == {"k0": 1}
    retry = first.claim("grid", "worker-a", 60.0, failed_attempts=seen)
    assert (retry.key, retry.attempts) == ("k0", 2)
    first.finish("k0", "worker-a", FAILED, "error: boom")
    # The other driver, with the same snapshot, finds k0's attempts changed: it takes k1, then nothing.
    assert second.claim("grid", "worker-b", 60.0, failed_attempts=seen).key == "k1"
    second.finish("k1", "worker-b", FAILED, "error: boom")  # failed during this invocation: not retried
    assert second.claim("grid", "worker-b", 60.0, failed_attempts=seen) is None
    assert first.claim("grid", "worker-a", 60.0, exclude={"k0"}, failed_attempts=seen) is None
    # A later invocation (a fresh snapshot) retries each once more.
    later = {r.key: r.attempts for r in second.rows("grid") if r.status == FAILED}
    assert second.claim("grid", "worker-c", 60.0, failed_attempts=later).key == "k0"


def test_an_expired_lease_is_reconciled_once_and_the_run_claimed_again(two_ledgers: Any) -> None:
    first, second = two_ledgers
    clock = share_manual_clock(first, second)
    first.plan("grid", RUNS[:1])
    first.claim("grid", "gone-host:1:dead", 30.0)
    first.set_mlflow_run("k0", "gone-host:1:dead", "run-1")
    clock.advance(29.9)
    assert second.reconcile("grid") == []  # the lease still holds
    clock.advance(0.2)
    reconciled = second.reconcile("grid")
    assert [(r.key, r.status, r.owner, r.mlflow_run_id) for r in reconciled] == [("k0", KILLED, None, "run-1")]
    assert "gone-host:1:dead stopped without finishing" in reconciled[0].reason
    assert first.reconcile("grid") == []  # only one worker gets to close its MLflow run
    # The dead worker cannot renew or finish what is no longer its run.
    assert not first.heartbeat("k0", "gone-host:1:dead", 60.0)
    first.finish("k0", "gone-host:1:dead", DONE)
    again = second.claim("grid", "worker-b", 60.0)
    assert (again.key, again.attempts, again.mlflow_run_id, again.reason) == ("k0", 2, None, "")


def test_a_heartbeat_keeps_the_run(two_ledgers: Any) -> None:
    first, second = two_ledgers
    clock = share_manual_clock(first, second)
    first.plan("grid", RUNS[:1])
    first.claim("grid", "gone-host:1:a", 30.0)
    for _ in range(3):  # 60 s in all, twice the lease: only the heartbeats keep it
        clock.advance(20.0)
        assert first.heartbeat("k0", "gone-host:1:a", 30.0)
        assert second.reconcile("grid") == []
    assert second.rows("grid")[0].status == RUNNING
    clock.advance(30.1)  # no heartbeat for longer than the lease: gone
    assert [r.key for r in second.reconcile("grid")] == ["k0"]



def test_the_sqlite_ledger_reads_ledger_files_of_the_previous_schema(tmp_path: Path) -> None:
    # Before scale-out the key alone was the primary key; such files must keep working.
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE runs (key VARCHAR(64) PRIMARY KEY, experiment VARCHAR(200) NOT NULL, position INTEGER "
            "NOT NULL, cell VARCHAR(200) NOT NULL, task VARCHAR(200) NOT NULL, seed INTEGER NOT NULL, spec TEXT NOT "
            "NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, mlflow_run_id VARCHAR(64), attempts INTEGER "
            "NOT NULL, owner VARCHAR(200), lease_expires FLOAT, updated_at FLOAT NOT NULL)")
        connection.execute("INSERT INTO runs VALUES ('k0', 'grid', 0, 'gru', 'adding', 0, '{}', 'DONE', '', 'r0', 1, "
                           "NULL, NULL, 0)")
    ledger = Ledger(f"sqlite:///{path}")
    ledger.plan("grid", RUNS)
    assert [(r.key, r.status) for r in ledger.rows("grid")] == [("k0", DONE), ("k1", PENDING), ("k2", PENDING)]
    assert ledger.claim("grid", "w", 60.0).key == "k1"
    ledger.close()


# ---------------------------------------------------------------------------
# The journal file
# ---------------------------------------------------------------------------


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "l.journal"
    ledger = JournalLedger(path)
    ledger.plan("grid", RUNS)
    with open(path, "ab") as handle:  # what a writer killed in the middle of its write leaves
        handle.write(b'{"op":"claim","experiment":"grid","key":"k0","wor')
    reader = JournalLedger(path)
    assert [r.status for r in reader.rows("grid")] == [PENDING] * 3  # the torn line is not applied
    assert reader.claim("grid", "w", 60.0).key == "k0"
    lines = path.read_bytes().splitlines()
    assert all(json.loads(line)["op"] in ("plan", "claim") for line in lines) and len(lines) == 2
    assert [(r.key, r.status) for r in JournalLedger(path).rows("grid")] == [
        ("k0", RUNNING), ("k1", PENDING), ("k2", PENDING)]


def test_the_file_lock_also_excludes_threads_of_one_process(tmp_path: Path) -> None:
    # The heartbeat thread and the training thread of one worker share one JournalLedger.
    lock, counter = FileLock(tmp_path / "lock"), tmp_path / "counter"
    counter.write_text("0")

    def increment() -> None:
        for _ in range(100):
            with lock, lock:  # re-entrant for the holder
                value = int(counter.read_text())
                time.sleep(0)
                counter.write_text(str(value + 1))

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.read_text() == "400"


# ---------------------------------------------------------------------------
# Locked databases and many processes
# ---------------------------------------------------------------------------


def test_mlflow_calls_retry_a_locked_database(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    with sqlite3.connect(database) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, as SQLite sees it
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()

    class Store:
        """Real SQLite statements, failing at once on a lock (no busy wait), as a stale transaction does."""

        def write(self, value: int) -> int:
            with sqlite3.connect(database, timeout=0) as connection:
                connection.execute("INSERT INTO t VALUES (?)", (value,))
            return value

        def read_missing(self) -> None:
            with sqlite3.connect(database, timeout=0) as connection:
                connection.execute("SELECT * FROM missing")

    client = RetryingClient(Store())
    assert client.write(7) == 7
    assert client.lock_retries >= 1
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT x FROM t").fetchall() == [(7,)]
    retries = client.lock_retries
    with pytest.raises(sqlite3.OperationalError, match="no such table"):  # not a lock: raised at once
        client.read_missing()
    assert client.lock_retries == retries


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_sixteen_processes_claiming_at_once_take_every_run_exactly_once(tmp_path: Path, kind: str) -> None:
    """T14 of the fault plan: 16 workers start in the same instant on one ledger file."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if kind == "sqlite" else f"journal://{tmp_path / 'l.journal'}"
    race = subprocess.run([sys.executable, str(CLAIM_RACE), url, "--processes", "16", "--runs", "160"],
                          check=False, capture_output=True, text=True, timeout=600)
    assert race.returncode == 0, race.stderr
    result = json.loads(race.stdout)
    claimed = [key for claimer in result["claimers"] for key in claimer["claimed"]]
    assert sorted(claimed) == sorted(f"run{i:04d}" for i in range(160))  # all of them, none twice
    assert {(r["status"], r["attempts"]) for r in result["rows"]} == {("DONE", 1)}
    assert all(claimer["claimed"] for claimer in result["claimers"])  # all sixteen really raced
