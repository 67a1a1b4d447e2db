"""`harness run --no-wait` runs what it can claim and reports, leaving runs another worker holds.

Another (live, remote) worker holds one run of a 2-run grid: its ledger row is RUNNING
with an hour-long lease. Without ``--no-wait`` the command would wait for that run; with
it, the command trains the other run, writes the report and exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NAME = "nowait"
HOLDER = "otherhost:4242:holder"  # another machine: only its lease says whether it lives


@dataclass
class Scenario:
    directory: Path
    held_key: str
    result: Any  # Finished


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """Plan the grid, let another worker claim its first run, then ``harness run --no-wait``."""
    from harness.experiment import load_experiment
    from harness.runs.ledger import Ledger
    from harness.core.loading import load_plugins
    from harness.runs.grid import expand_grid

    config = kit.tiny_config(cells=["gru_simple"], tasks=kit.TINY["tasks"][:1])
    path = kit.write_experiment(directory, NAME, config)
    loaded = load_experiment(path)
    specs = expand_grid(loaded, load_plugins())
    (directory / "out").mkdir()
    ledger = Ledger(f"sqlite:///{directory / 'out' / 'ledger.db'}")
    ledger.plan(NAME, [{"key": s.key, "cell": s.cell.label, "task": s.task.label, "seed": s.seed,
                        "spec": s.config} for s in specs])
    held = ledger.claim(NAME, HOLDER, 3600.0)
    ledger.close()
    assert held is not None
    return Scenario(directory, held.key, kit.run_harness(directory, "run", f"{NAME}.yaml", "--no-wait",
                                                         timeout=600))


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


def test_it_runs_the_free_run_and_does_not_wait_for_the_held_one(scenario: Scenario, kit: Any) -> None:
    result = scenario.result
    assert result.returncode == 0, result.explain()
    assert f"{NAME}: 1 finished, 0 failed, 0 skipped" in result.stdout, result.explain()
    assert "waiting for" not in result.stdout + result.stderr, result.explain()
    rows = kit.ledger_rows(scenario.directory / "out")
    assert {key: (row["status"], row["owner"]) for key, row in rows.items() if key == scenario.held_key} == {
        scenario.held_key: ("RUNNING", HOLDER)}  # left to its worker
    assert sorted(row["status"] for row in rows.values()) == ["DONE", "RUNNING"]


def test_the_report_shows_what_has_finished_so_far(scenario: Scenario, kit: Any) -> None:
    rows = kit.read_results(scenario.directory / "reports" / NAME)
    assert [row["status"] for row in rows] == ["FINISHED"], rows
