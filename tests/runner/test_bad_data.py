"""A bad data file stops `harness run` before anything is recorded: exit 2, file:line, no output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_bad_line_exits_2_naming_file_and_line_and_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    (data / "stsa.binary.train").write_text("1 a fine film\n0 a dull film\npositive a third line\n")
    (data / "stsa.binary.dev").write_text("1 good\n")
    (data / "stsa.binary.test").write_text("0 bad\n")
    experiment = tmp_path / "bad.yaml"
    experiment.write_text(
        "# harness run bad.yaml\n"
        "cells: [gru]\n"
        f"tasks: [{{name: sentiment, options: {{data_dir: {tmp_path / 'data'}}}}}]\n"
        "seeds: [0]\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        f"reports_dir: {tmp_path / 'reports'}\n"
    )
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(experiment)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert f"{data / 'stsa.binary.train'}:3" in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
