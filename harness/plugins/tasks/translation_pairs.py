"""Translation sentence pairs from TSV files: which column holds which language, and one pair per line.

A first line of single-word labels (``id<TAB>en<TAB>de``) is a header, never a sentence pair; the
columns are then read by name. ``source_column``/``target_column`` pick them otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import BadInputError
from harness.data.reading import read_lines

Pair = tuple[str, str]
#: A header field: one word of letters, digits, _ or - (a sentence has spaces or punctuation).
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def checked_pair(source: str, target: str, where: str) -> Pair:
    """(source, target) stripped; BadInputError naming ``where`` when either side is empty."""
    source, target = source.strip(), target.strip()
    if not source or not target:
        side = "source" if not source else "target"
        raise BadInputError(f"{where}: empty {side} sentence; every pair needs text on both sides (remove the line)")
    return source, target


def header_fields(line: str) -> list[str] | None:
    """The lower-cased labels of a header line (``id<TAB>en<TAB>de``: single words), or None for a sentence pair."""
    fields = [field.strip() for field in line.split("\t")]
    named = [field for field in fields if field]
    return [f.lower() for f in fields] if len(named) >= 2 and all(_LABEL.match(f) for f in named) else None


def tsv_columns(path: Path, first_line: str, languages: tuple[str, str],
                chosen: tuple[int, int] | tuple[str, str] | None) -> tuple[tuple[int, int], int]:
    """(source column, target column) and the number of header lines (0 or 1) of a pairs file.

    ``languages`` is (source_lang, target_lang), ``chosen`` the source_column/target_column options:
    numbers for a file without a header, names of header columns, or None (the header's language
    columns, else columns 0 and 1). Raises BadInputError when the file and the options disagree.
    """
    header = header_fields(first_line)
    if chosen is not None and isinstance(chosen[0], int):
        if header and {lang.lower() for lang in languages} & set(header):
            raise BadInputError(f"{path}:1: {first_line!r} is a header naming the languages, but source_column/"
                                "target_column are numbers (for a file without a header); give the header's names")
        return (int(chosen[0]), int(chosen[1])), 0
    if header is None:
        if chosen is not None:
            raise BadInputError(f"{path}:1: no header line to find columns {chosen[0]!r} and {chosen[1]!r} in; "
                                "give column numbers (from 0) for a file without a header")
        return (0, 1), 0
    wanted = [str(name).lower() for name in (chosen or languages)]
    options = ("source_column", "target_column") if chosen else ("source_lang", "target_lang")
    for name, option in zip(wanted, options):
        if name not in header:
            raise BadInputError(f"{path}:1: the header {first_line!r} has no column {name!r} ({option}); name the "
                                "columns by language code, set source_column/target_column to the header's names, "
                                "or remove the header and give column numbers")
    return (header.index(wanted[0]), header.index(wanted[1])), 1


def read_tsv(path: Path, source_lang: str, target_lang: str,
             chosen: tuple[int, int] | tuple[str, str] | None = None) -> list[Pair]:
    """Pairs from a TSV file; its header (or ``chosen`` columns) says which column is which (:func:`tsv_columns`)."""
    lines = read_lines(path)
    columns, start = tsv_columns(path, lines[0], (source_lang, target_lang), chosen) if lines else ((0, 1), 0)
    expected = "source<TAB>target" if columns == (0, 1) else f"columns {columns[0]} and {columns[1]} (from 0)"
    pairs = []
    for number, line in enumerate(lines[start:], start + 1):
        fields = line.split("\t")
        if len(fields) <= max(columns):
            found = "no tab" if len(fields) == 1 else f"{len(fields)} columns"
            raise BadInputError(f"{path}:{number}: expected {expected}, found {found}")
        pairs.append(checked_pair(fields[columns[0]], fields[columns[1]], f"{path}:{number}"))
    return pairs
