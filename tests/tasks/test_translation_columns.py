"""Translation TSV pairs: a header's language labels choose the columns (or stop the run); source_column and
target_column choose them in files without a header. A header is never read as a sentence pair."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from forked_harness import harness_run
from pydantic import ValidationError

from harness.core.errors import BadInputError
from harness.plugins.tasks.translation import TranslationConfig, TranslationTask

ENGLISH = [f"The dog {i} runs." for i in range(10)]
FRENCH = [f"Le chien {i} court." for i in range(10)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def pairs_file(path: Path, header: str | None, rows: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in ([header] if header else []) + rows), encoding="utf-8")
    return path


def load(path: Path, **options) -> tuple[list[str], list[str]]:
    """(source references as tokens joined, target references) of the training split read from ``path``."""
    task = TranslationTask(TranslationConfig(pairs_files={"train": str(path), "validation": str(path),
                                                          "test": str(path)}, min_freq=1, **options))
    data = task.load()
    sources = [" ".join(data.input_vocab.decode(example.inputs)) for example in data.train]
    return sources, [example.reference for example in data.train]


def test_fr_to_en_on_an_en_fr_file_reads_the_columns_by_their_header_names(tmp_path: Path) -> None:
    path = pairs_file(tmp_path / "en-fr.tsv", "en\tfr", [f"{e}\t{f}" for e, f in zip(ENGLISH, FRENCH)])
    sources, targets = load(path, source_lang="fr", target_lang="en")
    assert targets == ENGLISH  # the en column, although it comes first
    assert sources[0] == "le chien 0 court ."
    assert len(targets) == 10  # the header is no pair


@pytest.mark.parametrize(("header", "missing"), [("english\tfrench", "'fr' (source_lang)"),
                                                 ("en\tde", "'fr' (source_lang)"),
                                                 ("fr\tde", "'en' (target_lang)")])
def test_a_header_without_both_languages_is_an_error_naming_file_and_line(tmp_path: Path, header: str,
                                                                          missing: str) -> None:
    path = pairs_file(tmp_path / "pairs.tsv", header, [f"{f}\t{e}" for e, f in zip(ENGLISH, FRENCH)])
    with pytest.raises(BadInputError) as error:
        load(path, source_lang="fr", target_lang="en")
    assert str(error.value).startswith(f"{path}:1: the header {header!r} has no column {missing}")
    assert "source_column/target_column" in str(error.value) and error.value.exit_code == 2


def test_harness_run_refuses_such_a_file_with_exit_2_one_line_and_nothing_recorded(tmp_path: Path) -> None:
    path = pairs_file(tmp_path / "pairs.tsv", "english\tfrench", [f"{e}\t{f}" for e, f in zip(ENGLISH, FRENCH)])
    (tmp_path / "mt.yaml").write_text(
        "# harness run mt.yaml\n"
        "cells: [gru]\n"
        f"tasks: [{{name: translation, options: {{source_lang: fr, target_lang: en, pairs_file: '{path}'}}}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 8, embedding_size: 8}\n"
        "training: {max_epochs: 1, cpu_threads: 1}\n"
        "device: cpu\n")
    result = harness_run(["run", "mt.yaml"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=300, env=_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert f"{path}:1: the header 'english\\tfrench' has no column 'fr' (source_lang)" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_column_numbers_read_a_file_without_a_header(tmp_path: Path) -> None:
    path = pairs_file(tmp_path / "plain.tsv", None, [f"{e}\t{i}\t{f}" for i, (e, f) in enumerate(zip(ENGLISH, FRENCH))])
    sources, targets = load(path, source_lang="fr", target_lang="en", source_column=2, target_column=0)
    assert targets == ENGLISH and sources[3] == "le chien 3 court ."


def test_one_word_pairs_are_a_header_unless_column_numbers_say_there_is_none(tmp_path: Path) -> None:
    path = pairs_file(tmp_path / "words.tsv", None, ["chien\tdog", "chat\tcat", "oiseau\tbird"])
    with pytest.raises(BadInputError, match=r"words\.tsv:1: the header 'chien\\tdog' has no column 'fr'"):
        load(path, source_lang="fr", target_lang="en")
    _, targets = load(path, source_lang="fr", target_lang="en", source_column=0, target_column=1)
    assert targets == ["dog", "cat", "bird"]


def test_column_names_pick_header_columns_that_are_not_language_codes(tmp_path: Path) -> None:
    path = pairs_file(tmp_path / "named.tsv", "english\tfrench",
                      [f"{e}\t{f}" for e, f in zip(ENGLISH, FRENCH)])
    sources, targets = load(path, source_lang="fr", target_lang="en", source_column="French",
                            target_column="english")
    assert targets == ENGLISH and sources[0] == "le chien 0 court ."


def test_the_columns_must_fit_the_file(tmp_path: Path) -> None:
    headed = pairs_file(tmp_path / "headed.tsv", "en\tfr", [f"{e}\t{f}" for e, f in zip(ENGLISH, FRENCH)])
    with pytest.raises(BadInputError, match=r"headed\.tsv:1: 'en\\tfr' is a header naming the languages, but "
                                            r"source_column/target_column are numbers"):
        load(headed, source_lang="fr", target_lang="en", source_column=1, target_column=0)
    plain = pairs_file(tmp_path / "plain.tsv", None, [f"{e}\t{f}" for e, f in zip(ENGLISH, FRENCH)])
    with pytest.raises(BadInputError, match=r"plain\.tsv:1: no header line to find columns 'fr' and 'en' in"):
        load(plain, source_lang="fr", target_lang="en", source_column="fr", target_column="en")
    with pytest.raises(BadInputError, match=r"plain\.tsv:1: expected columns 2 and 0 \(from 0\), found 2 columns"):
        load(plain, source_lang="fr", target_lang="en", source_column=2, target_column=0)


@pytest.mark.parametrize(("options", "message"), [
    ({"source_column": 1}, "give source_column and target_column together"),
    ({"source_column": 1, "target_column": "en"}, "must both be numbers"),
    ({"source_column": 1, "target_column": 1}, "are both 1"),
    ({"source_column": -1, "target_column": 0}, "column numbers count from 0"),
])
def test_bad_column_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TranslationConfig(pairs_file="pairs.tsv", **options)


def test_column_options_need_a_pairs_file() -> None:
    with pytest.raises(ValidationError, match="give pairs_file or pairs_files"):
        TranslationConfig(source_column=0, target_column=1)
