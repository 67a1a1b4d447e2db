"""tests/real_data.py: a real-data test finds its data set under $HARNESS_DATA_DIR, else skips with how to
get it, and fails instead when HARNESS_REQUIRE_DATA=1 or CI is set."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_data import real_data_root


@pytest.fixture
def no_requirement(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("HARNESS_REQUIRE_DATA", raising=False)
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def full_copy(root: Path) -> Path:
    for name in ("eng.train", "eng.testa", "eng.testb"):
        (root / "conll2003").mkdir(parents=True, exist_ok=True)
        (root / "conll2003" / name).write_text("x O\n")
    return root


def test_a_present_data_set_gives_the_folder_that_contains_it(tmp_path: Path, no_requirement) -> None:
    no_requirement.setenv("HARNESS_DATA_DIR", str(full_copy(tmp_path)))
    assert real_data_root("conll2003") == tmp_path


def test_without_harness_data_dir_the_test_skips_saying_how_to_get_the_data(no_requirement) -> None:
    no_requirement.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        real_data_root("conll2003")
    reason = str(skipped.value)
    assert reason.startswith("CoNLL-2003 not found: HARNESS_DATA_DIR is not set;")
    assert "harness data fetch conll2003" in reason and "\n" not in reason


def test_an_incomplete_copy_names_the_missing_file(tmp_path: Path, no_requirement) -> None:
    full_copy(tmp_path)
    (tmp_path / "conll2003" / "eng.testb").unlink()
    no_requirement.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=r"CoNLL-2003 not found under \$HARNESS_DATA_DIR/conll2003 "
                                                    r"\(.*conll2003 lacks eng.testb\)"):
        real_data_root("conll2003")


@pytest.mark.parametrize(("variable", "value"), [("HARNESS_REQUIRE_DATA", "1"), ("CI", "true")])
def test_required_data_fails_instead_of_skipping(tmp_path: Path, no_requirement, variable: str, value: str) -> None:
    no_requirement.setenv("HARNESS_DATA_DIR", str(tmp_path))
    no_requirement.setenv(variable, value)
    with pytest.raises(pytest.fail.Exception, match="SST-2 not found .* so missing data fails"):
        real_data_root("sst2")


def test_harness_require_data_0_wins_over_ci(tmp_path: Path, no_requirement) -> None:
    no_requirement.setenv("HARNESS_DATA_DIR", str(tmp_path))
    no_requirement.setenv("CI", "true")
    no_requirement.setenv("HARNESS_REQUIRE_DATA", "0")
    with pytest.raises(pytest.skip.Exception):
        real_data_root("multi30k")
