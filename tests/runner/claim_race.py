"""Many processes plan and claim one ledger at the same instant; prints who claimed what, as JSON.

Not a test module (pytest does not collect it): the storage tests run it as a script,
``python claim_race.py STORAGE_URL --processes 8 --runs 120``. The parent starts the
claimer processes and, once every one has imported and opened the ledger, tells them all
to go at once; each then plans the same grid (so the planning race is part of it), claims
runs until none is left and finishes each one DONE at once: as much contention as the
ledger can ever see, with no training to spread the claims out. Exactly-once means:
every run claimed by exactly one process. Each claimer holds after its first claim until
every claimer has one, so at least two (all of them, when there are fewer claimers than
runs) really took part, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = "race"


def runs(count: int) -> list[dict[str, object]]:
    return [{"key": f"run{i:04d}", "cell": "cell", "task": "task", "seed": i, "spec": {"seed": i}}
            for i in range(count)]


def claimer(url: str, count: int) -> dict[str, object]:
    from harness.runs.run_states import DONE
    from harness.runs.identity import worker_id
    from harness.runs.ledger import open_ledger
    from harness.experiment.storage_url import parse_storage

    ledger = open_ledger(parse_storage(url, output_dir=Path(".")))
    worker = worker_id()
    print("ready", flush=True)
    sys.stdin.readline()  # "go", sent to every claimer at once
    ledger.plan(EXPERIMENT, runs(count))
    claimed = []
    while (row := ledger.claim(EXPERIMENT, worker, 60.0)) is not None:
        claimed.append(row.key)
        ledger.finish(row.key, worker, DONE)
        if len(claimed) == 1:  # hold until every claimer has one run: all of them race, however loaded the host
            print("claimed", flush=True)
            sys.stdin.readline()
    if not claimed:
        print("claimed", flush=True)  # none left for this one: the parent need not wait for it
    ledger.close()
    return {"worker": worker, "claimed": claimed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=120)
    parser.add_argument("--claimer", action="store_true", help="be one claimer (started by the parent)")
    options = parser.parse_args()
    if options.claimer:
        print(json.dumps(claimer(options.url, options.runs)))
        return
    children = [subprocess.Popen([sys.executable, __file__, options.url, "--runs", str(options.runs), "--claimer"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(options.processes)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:  # each holds after its first claim until all have one (or stopped with none left)
        assert child.stdout is not None and child.stdout.readline().strip() == "claimed"
    results = []
    for child in children:
        out, _ = child.communicate(input="go on\n", timeout=300)
        if child.returncode != 0:
            raise SystemExit(f"a claimer exited with {child.returncode}")
        results.append(json.loads(out))
    from harness.runs.ledger import open_ledger
    from harness.experiment.storage_url import parse_storage

    ledger = open_ledger(parse_storage(options.url, output_dir=Path(".")))
    rows = [{"key": r.key, "status": r.status, "attempts": r.attempts} for r in ledger.rows(EXPERIMENT)]
    print(json.dumps({"claimers": results, "rows": rows, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
