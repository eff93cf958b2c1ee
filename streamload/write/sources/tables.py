"""A CSV table of numeric feature columns and one label column, parsed in chunks of lines.

The label column is ``label_column`` (a header name or a 0-based index, negative from the end),
else the column named ``label``, else the last one. A first pass reads only that column: it counts
the rows (a shard writer needs the count first) and decides what the label is: integers (stored in
the smallest integer type holding their range), other numbers (float32 regression targets), or
names (class names, sorted, stored as class indices). The second pass parses every feature as
float32 with numpy's C parser. Memory is one chunk of lines, whatever the file size.

The first line is a header when one of its fields is not a number where the second line has one,
or when none of its fields is a number. Fields may be quoted (``"``); blank lines are skipped;
a row must not span lines (an unterminated quote is an error) nor pass ``MAX_LINE_CHARS``, read
in pieces so an endless line is refused before it fills memory. ``.tsv`` files are tab-separated;
gzip-compressed files are read as is. A number that overflows float32 (``1e400``) is refused with
its line and column; literal ``nan``/``inf`` fields are left to the build's non-finite check.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np

from ...errors import InvalidOptionError, SourceFormatError, SourceNotFoundError
from ...format.specs import ArraySpec
from .base import DEFAULT_CHUNK_ROWS, Chunk, label_dtype, rows_per_chunk

SCAN_LINES = 65536
MAX_CLASS_NAMES = 65536
MAX_LINE_CHARS = 64 * 2**20  # one row of a table; longer is refused, never read whole
_NONFINITE_TEXTS = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _open_text(path: Path) -> IO[str]:
    """The file as text (a UTF-8 byte-order mark dropped), un-gzipped by magic bytes, not by name."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8-sig") if compressed else open(path, encoding="utf-8-sig")


class CsvSource:
    """Rows of a CSV file: ``x`` (float32 features) and ``y`` (integer, float32 or class-index labels)."""

    action = "parsing"

    def __init__(self, path: str | os.PathLike, label_column: str | int | None = None, *,
                 delimiter: str | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise SourceNotFoundError(f"{self.path}: no such CSV file")
        self.delimiter = delimiter or ("\t" if ".tsv" in self.path.suffixes else ",")
        self.columns, self.has_header = self._read_columns()
        self.label_index = self._label_index(label_column)
        self.feature_indices = [i for i in range(len(self.columns)) if i != self.label_index]
        if not self.feature_indices:
            raise SourceFormatError(f"{self.path}: needs at least one feature column besides the label")
        self.num_samples, self.label_kind, label_range, names = self._scan()
        self.class_names = tuple(sorted(names)) if self.label_kind == "name" else None
        if self.class_names is not None:
            self.num_classes = len(self.class_names)
        self.label_dtype = self._label_dtype(label_range)
        self.specs = {"x": ArraySpec("<f4", (len(self.feature_indices),)), "y": ArraySpec(self.label_dtype.str, ())}
        self.column_names = {"x": tuple(self.columns[i] for i in self.feature_indices),
                             "y": (self.columns[self.label_index],)}
        self.description = (f"{self.path}: {self.num_samples} rows, {len(self.feature_indices)} features, "
                            f"label column {self.columns[self.label_index]!r} ({self.label_kind})")

    def _fields(self, line: str, number: int) -> list[str]:
        """The fields of one line; an unterminated quote or an over-long field is a one-line error."""
        try:
            return next(csv.reader([line], delimiter=self.delimiter, strict=True))
        except csv.Error as exc:
            raise SourceFormatError(f"{self.path}:{number}: not a valid CSV row: {exc}") from None

    def _read_columns(self) -> tuple[list[str], bool]:
        """Column names (from the header, else 0, 1, ...) and whether the first line is a header."""
        with _open_text(self.path) as stream:
            first_two = list(islice(((n, line) for n, line in self._lines(stream) if line.strip()), 2))
        if not first_two:
            raise SourceFormatError(f"{self.path}: the table is empty")
        first = self._fields(first_two[0][1], first_two[0][0])
        second = self._fields(first_two[-1][1], first_two[-1][0])
        header = not any(map(_is_number, first)) or any(
            not _is_number(above) and _is_number(below) for above, below in zip(first, second))
        return ([name.strip() for name in first] if header else [str(i) for i in range(len(first))]), header

    def _label_index(self, label_column: str | int | None) -> int:
        width = len(self.columns)
        if label_column is None:
            return self.columns.index("label") if "label" in self.columns else width - 1
        if isinstance(label_column, str) and label_column in self.columns:
            return self.columns.index(label_column)
        try:
            index = int(label_column)
        except ValueError:
            index = width  # neither a column name nor a number: reported below
        if not -width <= index < width:
            raise InvalidOptionError(f"{self.path}: no column {label_column!r} for --label-column; its {width} "
                                     f"columns are {', '.join(self.columns)}")
        return index % width

    def _lines(self, stream: IO[str]) -> Iterator[tuple[int, str]]:
        """(1-based number, line) pairs; a line over ``MAX_LINE_CHARS`` is refused after reading only that much."""
        number = 0
        while line := stream.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise SourceFormatError(f"{self.path}:{number}: line is longer than {MAX_LINE_CHARS} characters; "
                                        "is this a CSV table?")
            yield number, line

    def _chunks(self, lines_per_chunk: int) -> Iterator[tuple[list[str], list[int]]]:
        """Consecutive chunks of data lines (no header, no blank lines) and their 1-based line numbers."""
        lines, numbers, header_left = [], [], self.has_header
        with _open_text(self.path) as stream:
            for number, line in self._lines(stream):
                if not line.strip():
                    continue
                if header_left:
                    header_left = False
                    continue
                lines.append(line)
                numbers.append(number)
                if len(lines) == lines_per_chunk:
                    yield lines, numbers
                    lines, numbers = [], []
        if lines:
            yield lines, numbers

    def _check_widths(self, lines: list[str], numbers: list[int]) -> None:
        width = len(self.columns)
        for line, number in zip(lines, numbers):
            if line.count(self.delimiter) == width - 1 and '"' not in line:
                continue  # the common case, decided without the csv module
            fields = self._fields(line, number)  # quotes may hide delimiters, or be left open
            if len(fields) != width:
                first = "header" if self.has_header else "first row"
                raise SourceFormatError(f"{self.path}:{number}: has {len(fields)} fields, the {first} has {width}")

    def _parse(self, lines: list[str], numbers: list[int], columns: list[int], dtype: type) -> np.ndarray:
        """``columns`` of the lines as ``dtype`` (2-D for features, 1-D for one column)."""
        try:
            return np.loadtxt(lines, delimiter=self.delimiter, dtype=dtype, usecols=columns, comments=None,
                              quotechar='"', ndmin=2 if len(columns) > 1 else 1)
        except ValueError as exc:
            raise SourceFormatError(self._explain(lines, numbers, columns, exc)) from exc

    def _explain(self, lines: list[str], numbers: list[int], columns: list[int], error: ValueError) -> str:
        """The first field that is not a number, by line and column name; else numpy's own message."""
        for line, number in zip(lines, numbers):
            fields = self._fields(line, number)
            for column in columns:
                if column < len(fields) and not _is_number(fields[column]):
                    return f"{self.path}:{number}: column {self.columns[column]!r}: {fields[column]!r} is not a number"
        return f"{self.path}: lines {numbers[0]}-{numbers[-1]}: {error}"

    def _label_texts(self, lines: list[str], numbers: list[int]) -> np.ndarray:
        labels = np.char.strip(self._parse(lines, numbers, [self.label_index], str).reshape(-1))
        empty = np.flatnonzero(labels == "")
        if len(empty):
            raise SourceFormatError(f"{self.path}:{numbers[empty[0]]}: the label field is empty")
        return labels

    def _scan(self) -> tuple[int, str, tuple[int, int], set[str]]:
        """First pass over the label column: row count, label kind, integer range, distinct names."""
        count, kind, low, high, names = 0, "integer", 0, 0, set()
        for lines, numbers in self._chunks(SCAN_LINES):
            self._check_widths(lines, numbers)
            labels = self._label_texts(lines, numbers)
            kind = _widen(kind, labels)
            if kind == "integer":
                values = labels.astype(np.int64)
                low = min(low, int(values.min())) if count else int(values.min())
                high = max(high, int(values.max())) if count else int(values.max())
            if names is not None:
                names.update(np.unique(labels).tolist())
                names = names if len(names) <= MAX_CLASS_NAMES else None  # too many to be classes
            count += len(lines)
        if count == 0:
            raise SourceFormatError(f"{self.path}: the table has a header but no rows")
        if kind == "name" and names is None:
            raise SourceFormatError(f"{self.path}: label column {self.columns[self.label_index]!r} holds more than "
                                    f"{MAX_CLASS_NAMES} distinct names; labels must be numbers or class names")
        return count, kind, (low, high), names or set()

    def _label_dtype(self, label_range: tuple[int, int]) -> np.dtype:
        low, high = label_range
        if self.label_kind == "float":
            return np.dtype(np.float32)
        if self.label_kind == "name":
            return label_dtype(len(self.class_names))
        return np.dtype(np.promote_types(np.min_scalar_type(low), np.min_scalar_type(high)))

    def _labels(self, texts: np.ndarray, numbers: list[int]) -> np.ndarray:
        if self.label_kind == "integer":
            return texts.astype(np.int64).astype(self.label_dtype)
        if self.label_kind == "float":
            return self._check_overflow(texts.astype(np.float32)[:, None], texts[:, None], numbers,
                                        [self.label_index])[:, 0]
        names = np.asarray(self.class_names)
        indices = np.minimum(np.searchsorted(names, texts), len(names) - 1)
        unknown = np.flatnonzero(names[indices] != texts)
        if len(unknown):  # the file changed since the first pass
            raise SourceFormatError(f"{self.path}:{numbers[unknown[0]]}: label {texts[unknown[0]]!r} was not "
                                    "there when the file was first read")
        return indices.astype(self.label_dtype)

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for lines, numbers in self._chunks(rows_per_chunk(self.specs, chunk_rows)):
            self._check_widths(lines, numbers)
            features = self._parse(lines, numbers, self.feature_indices, np.float32).reshape(len(lines), -1)
            if not np.isfinite(features).all():  # texts are parsed again only on this rare path
                texts = self._parse(lines, numbers, self.feature_indices, str).reshape(len(lines), -1)
                self._check_overflow(features, texts, numbers, self.feature_indices)
            yield {"x": features, "y": self._labels(self._label_texts(lines, numbers), numbers)}

    def _check_overflow(self, values: np.ndarray, texts: np.ndarray, numbers: list[int],
                        columns: list[int]) -> np.ndarray:
        """Refuse a field whose number float32 cannot hold (``1e400`` parses as inf); literal nan/inf pass."""
        rows, indices = np.nonzero(~np.isfinite(values))
        written = np.char.lower(np.char.strip(texts[rows, indices]))
        overflowed = np.flatnonzero(~np.isin(written, list(_NONFINITE_TEXTS)))
        if len(overflowed):
            row, index = rows[overflowed[0]], indices[overflowed[0]]
            raise SourceFormatError(f"{self.path}:{numbers[row]}: column {self.columns[columns[index]]!r}: "
                                    f"{texts[row, index].strip()!r} overflows float32 (largest "
                                    f"{np.finfo(np.float32).max:.4g})")
        return values


def _widen(kind: str, labels: np.ndarray) -> str:
    """The narrowest kind (integer, float, name) that holds every label seen so far."""
    if kind == "integer":
        try:
            labels.astype(np.int64)
        except (ValueError, OverflowError):
            kind = "float"
        else:
            return "integer"
    if kind == "float":
        try:
            labels.astype(np.float64)
        except ValueError:
            return "name"
        return "float"
    return kind


def csv_sources(path: str | os.PathLike, label_column: str | int | None = None) -> dict[str, CsvSource]:
    """A table is one split, ``train`` (``--validation-split`` cuts validation off it)."""
    return {"train": CsvSource(path, label_column)}
