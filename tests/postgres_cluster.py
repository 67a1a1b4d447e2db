"""A throwaway PostgreSQL server on 127.0.0.1 for the tests (Debian's ``postgresql`` package).

Used by the scale-out scenario (tests/runner/test_drivers.py) and, through the
:func:`postgres_cluster` fixture, by the ledger and tuning unit tests. Without the binaries
the fixture skips, and fails under CI, which must never skip these silently.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from harness.experiment.storage_url import with_default_driver

#: Why a PostgreSQL test did not run (see :func:`skip_without_postgres`).
MISSING = "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"

_DATABASE_NUMBERS = itertools.count()


class PostgresCluster:
    """initdb + pg_ctl of Debian's ``postgresql`` package, on 127.0.0.1 and a free port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        # The server refuses to run as root: run it as nobody, which must own its folder.
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "harness", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c synchronous_commit=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "120", "start")
        import sqlalchemy as sa

        engine = sa.create_engine(with_default_driver(self.url("postgres")), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            for database in ("ledger", "mlflow"):
                connection.execute(sa.text(f"CREATE DATABASE {database}"))
        engine.dispose()

    def new_database(self) -> str:
        """The URL of a database created just now, empty, for one test."""
        import sqlalchemy as sa

        name = f"test_{next(_DATABASE_NUMBERS)}"
        engine = sa.create_engine(with_default_driver(self.url("postgres")), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://harness@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self.as_user, str(self.bindir / program), *args], check=False, capture_output=True,
                                text=True, timeout=180)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found and Path(found[-1]).with_name("initdb").exists() else None


def skip_without_postgres(reason: str = MISSING) -> NoReturn:
    """Skip a test that needs the server, but fail under CI (``$CI`` set), which must never skip it silently."""
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI installs the postgresql package in .ci/run")
    pytest.skip(reason + "; apt-get install postgresql")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One server for the session's PostgreSQL unit tests; each test takes a fresh database."""
    bindir = postgres_binaries()
    if bindir is None:
        skip_without_postgres()
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
