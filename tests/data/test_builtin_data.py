"""The built-in data sets' declared sizes and sha256 match the real files the project is tested on.

Reads ``$HARNESS_DATA_DIR`` (e.g. ``../shared/data``). A set that is absent is skipped with a
one-line reason, unless ``HARNESS_REQUIRE_DATA=1`` or ``CI`` is set: then it fails.
"""

from __future__ import annotations

import functools
import gzip
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from forked_harness import harness_run
from harness_processes import harness_env

from harness.plugins.tasks.data_sets import BUILTIN_DATA_SETS, MUSEDATA, piano_roll_json
from harness.plugins.tasks.word_lm import WordLMConfig, WordLMTask

REQUIRED = os.environ.get("HARNESS_REQUIRE_DATA") == "1" or bool(os.environ.get("CI"))


def present_root(folder: str, name: str) -> Path:
    """``$HARNESS_DATA_DIR`` when it holds ``folder/``; otherwise skip (or fail when data is required)."""
    configured = os.environ.get("HARNESS_DATA_DIR")
    reason = (f"{name}: HARNESS_DATA_DIR is not set" if not configured else
              f"{name}: {configured}/{folder}/ is absent") + f"; get it with `harness data fetch {name}`"
    if configured and (Path(configured) / folder).is_dir():
        return Path(configured)
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def verify_output() -> str:
    """``harness data verify`` (one process) over every built-in set present in $HARNESS_DATA_DIR."""
    configured = os.environ.get("HARNESS_DATA_DIR")
    names = [d.name for d in BUILTIN_DATA_SETS if configured and (Path(configured) / d.folder).is_dir()]
    if not names:
        return ""
    env = {**harness_env(), "HARNESS_DATA_DIR": str(configured)}
    result = harness_run(["data", "verify", *names], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("data_set", BUILTIN_DATA_SETS, ids=lambda d: d.name)
def test_harness_data_verify_passes_on_the_real_files(data_set, verify_output: str) -> None:
    present_root(data_set.folder, data_set.name)
    for file in data_set.files:
        assert f"  ok      {data_set.folder}/{file.path}\n" in verify_output
    assert f"{data_set.name}: verified" in verify_output


def test_the_matlab_piano_roll_converts_to_the_tested_json_byte_for_byte() -> None:
    root = present_root("polyphonic-music", "musedata")
    mat = root / "polyphonic-music" / "mat" / "MuseData.mat"
    if not mat.is_file():
        pytest.skip(f"musedata: {mat} is absent (only the JSON is needed by the task)")
    converted = piano_roll_json(mat.read_bytes())
    assert converted == (root / "polyphonic-music" / "MuseData.json").read_bytes()
    assert len(converted) == MUSEDATA.files[0].size


@pytest.mark.slow
def test_fetch_from_a_mirror_of_the_real_files_installs_what_the_tasks_read(tmp_path: Path, monkeypatch) -> None:
    """Every present built-in set, served by a local mirror in the form its canonical URL has (gzip,
    MATLAB), is fetched, converted and verified into a fresh data folder."""
    source = present_root("ptb", "ptb")
    chosen = [d for d in BUILTIN_DATA_SETS if (source / d.folder).is_dir()]
    mirror = tmp_path / "mirror"
    for data_set in chosen:
        for file in data_set.files:
            served = mirror / data_set.name / file.download_name
            served.parent.mkdir(parents=True, exist_ok=True)
            data = (source / data_set.folder / file.path).read_bytes()
            if file.transform is not None:  # the music sets: the .mat file the JSON was converted from
                data = (source / data_set.folder / "mat" / file.download_name).read_bytes()
            served.write_bytes(gzip.compress(data, mtime=0) if file.archive_format == "gz" else data)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**harness_env(), "XDG_DATA_HOME": str(tmp_path / "home")}
        result = harness_run(["data", "fetch", *(d.name for d in chosen), "--mirror",
                                 f"http://127.0.0.1:{server.server_address[1]}"], capture_output=True, text=True,
                                env=env, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    installed = tmp_path / "home" / "rnn-harness"
    for data_set in chosen:
        for file in data_set.files:
            assert (installed / data_set.folder / file.path).read_bytes() == \
                (source / data_set.folder / file.path).read_bytes()
    # A task with no data_dir and no $HARNESS_DATA_DIR reads what fetch installed.
    monkeypatch.delenv("HARNESS_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    data = WordLMTask(WordLMConfig(max_lines=3)).load()
    assert len(data.test[0].inputs) > 3
