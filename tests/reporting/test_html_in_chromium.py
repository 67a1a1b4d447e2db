"""The HTML report renders in a real browser: headless Chromium loads it and decodes every plot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from harness.reports.report import build_report
from harness.runs.tracking import Tracker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# In CI, .ci/run installs Chromium: never let this test skip there.
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Chromium is not installed (CI installs it)")

# Appended to a copy of the page: after load, record how many images decoded into the title.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const tables = document.querySelectorAll("table").length;
  const verdict = document.getElementById("verdict").nextElementSibling.getBoundingClientRect();
  const seen = verdict.bottom <= window.innerHeight ? "yes" : "no";
  document.title = `probe images=${images.length} decoded=${decoded} tables=${tables} verdict_in_first_screen=${seen}`;
});
</script>"""


def test_report_page_renders_with_every_plot_decoded(tmp_path) -> None:
    assert CHROMIUM is not None, "Chromium is required in CI (.ci/run installs it)"
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "page", tmp_path / "artifacts")
    for task in ("agreement", "brackets", "copy"):
        for cell in ("gru", "lstm", "vanilla"):
            for seed in (0, 1):
                run_id = tracker.start_run(f"{cell}-{seed}", {
                    "run_key": f"{task}{cell}{seed}", "cell": cell, "cell_name": cell, "task": task, "seed": seed,
                    "primary_metric": "accuracy", "higher_is_better": True}, {})
                for epoch in range(3):
                    tracker.log_metrics(run_id, {"val_loss": 1.0 / (epoch + 1), "train_loss": 1.1 / (epoch + 1)},
                                        step=epoch)
                quality = {"gru": 0.9, "lstm": 0.85, "vanilla": 0.5}[cell]
                tracker.log_metrics(run_id, {"test_accuracy": quality + 0.05 * seed, "test_accuracy/01-05": 0.9,
                                             "test_accuracy/06-10": 0.7 + 0.1 * seed, "wall_time_s": 3.0 + seed})
                tracker.end_run(run_id, "FINISHED")
    paths = build_report("page", tracker, tmp_path / "report")
    page = tmp_path / "probe.html"
    page.write_text(paths.html.read_text().replace("</body>", PROBE + "</body>"))
    expected_images = len(re.findall(r'<img src="data:image/png;base64,', paths.html.read_text()))
    # CD diagram, forest plot; per task learning curves and accuracy by distance (wall times do not differ)
    assert expected_images == 2 + 3 * 2
    tables = len(re.findall(r"<table>", paths.html.read_text()))
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--window-size=1280,800", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    title = re.search(r"<title>(probe[^<]*)</title>", result.stdout)
    assert title, f"the page did not load in Chromium: {result.stderr[-2000:]}"
    assert title.group(1) == (f"probe images={expected_images} decoded={expected_images} tables={tables} "
                              f"verdict_in_first_screen=yes")
