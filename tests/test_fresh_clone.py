"""A stranger's clone: no ``../shared`` beside it, no HARNESS_DATA_DIR, not CI. The fast part of the suite
passes there, the fixtures stand in for the data sets, and the real-data tests skip saying how to get them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Fast files that cover the fixtures end to end, plus real-data files that must skip, not fail.
#: The fixture files' own test proves the clone has every one of them, byte for byte; training all six
#: tasks on them (tests/tasks/test_fixture_end_to_end.py) is the same run on the same bytes, left to the suite.
SUBSET = ["tests/config", "tests/test_real_data.py", "tests/tasks/test_fixture_data.py",
          "tests/music/test_reader.py", "tests/tasks/test_word_lm.py"]


def clone_head(target: Path) -> Path:
    """A ``git clone`` (file://, as from a server) of this checkout's HEAD into ``target/rnn-harness``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (or no git): nothing to clone")
    clone = target / "rnn-harness"
    subprocess.run(["git", "clone", "--quiet", f"file://{ROOT}", str(clone)], check=True, capture_output=True,
                   timeout=120)
    return clone


@pytest.mark.slow
def test_a_fresh_clone_passes_the_fast_suite_with_the_real_data_tests_skipped(tmp_path: Path) -> None:
    clone = clone_head(tmp_path)
    assert not (clone.parent / "shared").exists()
    env = {key: value for key, value in os.environ.items()
           if key not in ("HARNESS_DATA_DIR", "HARNESS_REQUIRE_DATA", "CI", "PYTEST_ADDOPTS")}
    # The clone's code, not this checkout's (which this venv has installed), also in `harness` subprocesses.
    env["PYTHONPATH"] = str(clone)
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    imported = subprocess.run([sys.executable, "-c", "import harness; print(harness.__file__)"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    assert Path(imported.stdout.strip()).is_relative_to(clone), imported.stdout + imported.stderr
    # -n 0: one process (this test already runs beside the others' xdist workers); its own
    # basetemp, so its start-up never prunes the numbered temporary folders of this session.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                             "--basetemp", str(tmp_path / "basetemp"), *SUBSET],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|skipped|failed|error)", summary)}
    assert counts.get("passed", 0) >= 30 and counts.get("skipped", 0) >= 1, summary
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("harness data fetch" in line for line in skips), skips
