"""Where data lives: --data-dir / a task's data_dir, else $HARNESS_DATA_DIR, else the per-user folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.data.datasets import DataFile, DataSet, data_root
from harness.core.errors import ConfigError, PluginError
from harness.data.reading import data_folder


def test_the_option_wins_then_the_variable_then_the_per_user_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    assert data_root() == data_root(None)
    assert data_root().path == tmp_path / "xdg" / "rnn-harness" and data_root().origin.startswith("default")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "env"))
    assert (data_root().path, data_root().origin) == (tmp_path / "env", "$HARNESS_DATA_DIR")
    assert data_root(str(tmp_path / "opt")).path == tmp_path / "opt"


def test_a_task_reads_the_per_user_folder_without_any_setting(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"harness data fetch NAME.*HARNESS_DATA_DIR"):
        data_folder("word_lm", None, "ptb")
    (tmp_path / "rnn-harness" / "ptb").mkdir(parents=True)
    assert data_folder("word_lm", None, "ptb") == tmp_path / "rnn-harness" / "ptb"
    assert data_folder("word_lm", str(tmp_path), "rnn-harness") == tmp_path / "rnn-harness"  # the option wins


def test_a_declaration_with_a_bad_checksum_or_path_is_refused_by_name() -> None:
    good = DataFile("a.txt", 1, "0" * 64, "https://example.org/a.txt")
    with pytest.raises(PluginError, match=r"data set 'toy': b.txt: sha256 must be 64 lowercase hex digits"):
        DataSet("toy", "toy", "", "", "", (), (good, DataFile("b.txt", 1, "abc", "https://example.org/b.txt")))
    with pytest.raises(PluginError, match=r"\.\./c.txt: path must stay inside"):
        DataSet("toy", "toy", "", "", "", (), (DataFile("../c.txt", 1, "0" * 64, "https://example.org/c.txt"),))
    with pytest.raises(PluginError, match="is an archive; name the member"):
        DataSet("toy", "toy", "", "", "", (), (DataFile("d.txt", 1, "0" * 64, "https://example.org/d.zip"),))
    assert Path(DataSet("toy", "toy", "", "", "", (), (good,)).folder) == Path("toy")
