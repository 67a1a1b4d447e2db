"""The shared file helpers: data folders, UTF-8 errors with file:line, the processed-data cache, hub loading."""

from pathlib import Path

import pytest

from harness.core.errors import BadInputError, ConfigError
from harness.data.reading import ProcessedCache, data_folder, load_hub_dataset, read_lines


def test_read_lines_strips_both_line_endings_and_a_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffone\r\ntwo\n\nthree".encode())
    assert read_lines(path) == ["one", "two", "", "three"]


def test_invalid_utf8_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nstill fine\nab\xffcd\n")
    with pytest.raises(BadInputError) as error:
        read_lines(path)
    assert f"{path}:3:" in str(error.value)
    assert "0xff at column 3" in str(error.value)
    assert error.value.exit_code == 2


def test_data_folder_from_option_or_environment(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        data_folder("word_lm", None, "ptb")
    assert data_folder("word_lm", str(tmp_path), "ptb") == tmp_path / "ptb"
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert data_folder("word_lm", None, "ptb") == tmp_path / "ptb"
    with pytest.raises(ConfigError, match="must contain wikitext-2/"):
        data_folder("word_lm", None, "wikitext-2")


def test_cache_builds_once_and_rebuilds_when_a_file_or_option_changes(tmp_path):
    source = tmp_path / "data.txt"
    source.write_text("a b c\n")
    cache = ProcessedCache(tmp_path / "cache")
    calls = []

    def build():
        calls.append(1)
        return {"tokens": read_lines(source)[0].split()}

    first = cache.get_or_build("demo", {"lower": True}, [source], build)
    second = cache.get_or_build("demo", {"lower": True}, [source], build)
    assert first == second == {"tokens": ["a", "b", "c"]}
    assert (cache.builds, cache.hits, len(calls)) == (1, 1, 1)
    cache.get_or_build("demo", {"lower": False}, [source], build)
    assert cache.builds == 2
    source.write_text("a b c d\n")
    assert cache.get_or_build("demo", {"lower": True}, [source], build) == {"tokens": ["a", "b", "c", "d"]}
    assert cache.builds == 3


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path):
    source = tmp_path / "data.txt"
    source.write_text("x\n")
    cache = ProcessedCache(tmp_path / "cache")
    cache.get_or_build("demo", {}, [source], lambda: [1, 2])
    (entry,) = (tmp_path / "cache" / "demo").iterdir()
    entry.write_bytes(b"not gzip")
    assert cache.get_or_build("demo", {}, [source], lambda: [1, 2]) == [1, 2]
    assert cache.builds == 2


def test_hub_loader_reads_a_local_dataset_folder_and_maps_split_names(tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "train.csv").write_text("label,sentence\n1,a good film\n0,a dull film\n")
    (folder / "validation.csv").write_text("label,sentence\n1,fine\n")
    splits = load_hub_dataset("sentiment", str(folder))
    assert splits["train"] == [{"label": 1, "sentence": "a good film"}, {"label": 0, "sentence": "a dull film"}]
    assert splits["validation"] == [{"label": 1, "sentence": "fine"}]
    with pytest.raises(ConfigError, match="cannot load hub dataset"):
        load_hub_dataset("sentiment", str(Path(tmp_path) / "missing"))
