"""The per-folder ``meta.csv`` of an MLAAD release: its name, the v5 columns and a reader.

Shared by :mod:`sourcetracing.data.protocols` (architectures of the protocol systems) and
:mod:`sourcetracing.data.mlaad_release` (protocols for any release), whose docstring describes the
format and where it was read from.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from sourcetracing.errors import DataError

META_FILE = "meta.csv"
V5_META_COLUMNS = (
    "path",
    "original_file",
    "language",
    "is_original_language",
    "duration",
    "training_data",
    "model_name",
    "architecture",
    "transcript",
)


class ReleaseError(DataError):
    """An MLAAD release folder or its metadata cannot be used, or the split options do not fit it."""


def _raise_field_limit() -> None:
    """Transcripts can exceed the csv module's default field size."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


def read_meta(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read one ``meta.csv``: its header and rows (dicts of stripped strings).

    The separator is the header's (``|``, tab or ``,``); pipe and tab files are read without
    quoting. A row with more fields than the header has separators inside its transcript: the
    fields before ``transcript`` are taken from the left, those after it from the right.
    """
    path = Path(path)
    _raise_field_limit()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ReleaseError(f"{path}: not UTF-8 text ({err})") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ReleaseError(f"{path}: empty metadata file")
    first = lines[0]
    delimiter = "|" if "|" in first else "\t" if "\t" in first else ","
    if delimiter == ",":
        reader = csv.reader(lines)
    else:
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    header = [h.strip() for h in next(reader)]
    if "path" not in header:
        raise ReleaseError(f"{path}: no 'path' column in the header {header} (separator {delimiter!r})")
    t = header.index("transcript") if "transcript" in header else None
    rows = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > len(header) and t is not None:
            after = len(header) - t - 1
            middle = fields[t : len(fields) - after]
            fields = [*fields[:t], delimiter.join(middle), *fields[len(fields) - after :]]
        rows.append({name: (fields[i].strip() if i < len(fields) else "") for i, name in enumerate(header)})
    return header, rows
