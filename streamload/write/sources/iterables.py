"""Samples from any Python iterable, in the shapes Keras accepts, so multi-input models work.

An item is an ``(x, y)`` pair, an ``(x, y, sample_weight)`` triple (``x`` may be a dict of named
inputs, e.g. ``({"image": ..., "meta": ...}, label)``), or a dict of named arrays with the target
named by ``target=`` (e.g. ``{"image": ..., "meta": ..., "label": ...}``). Arrays take the dtype
and shape of the first item; later items must match them (a safe cast, e.g. int8 into int64, is
made). Pairs store ``x`` (or the dict's names), ``y`` and ``sample_weight``; dicts store their own
names, the features being the names other than the target and weights, in the first item's order.

A shard writer needs the sample count before the first sample. It comes from ``num_samples``
(the first ``num_samples`` items are taken), else from ``len(items)``; otherwise, as for a
generator of unknown length, the items are spilled once to raw files in a temporary folder
(``spill_dir``, default the system's), which hold the dataset on disk, not in RAM, are
memory-mapped for writing and are deleted with the source. Nothing ever holds more than a chunk.

Arrays named in ``ragged=`` hold samples of varying length (token ids, audio frames): each item's array
may have any length along its first axis (the rest of its shape and its dtype as the first item's), and
is stored as variable-length records (see format/records.py). Without it a length that changes is an error
that names the option.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SourceFormatError, SourceMismatchError
from ...format.records import Records
from ...format.specs import ArraySpec
from .base import DEFAULT_CHUNK_ROWS, Chunk, rows_per_chunk
from .numpy_files import check_storable

Row = dict[str, np.ndarray]
_NOTHING = object()
SPILL_BUFFER_BYTES = 8 * 2**20  # rows gathered before each write to the spill files


def _named(values: Any, where: str) -> Row:
    return {str(key): np.asarray(value) for key, value in values.items()} if isinstance(values, Mapping) else (
        {where: np.asarray(values)})


def flatten_item(item: Any, description: str, index: int) -> Row:
    """One item as named arrays: dicts keep their names; pairs and triples become x (or x's names), y, weight."""
    if isinstance(item, Mapping):
        return _named(item, "x")
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise SourceFormatError(f"{description}: item {index} is a {type(item).__name__}; items must be (x, y) "
                                "pairs, (x, y, sample_weight) triples or dicts of arrays")
    row = _named(item[0], "x")
    for name, value in zip(("y", "sample_weight"), item[1:]):
        if name in row:
            raise SourceFormatError(f"{description}: item {index}: input {name!r} clashes with the {name} of the pair")
        row[name] = np.asarray(value)
    return row


class _ChunkBuffer:
    """Rows gathered into preallocated arrays, handed out ``rows`` at a time."""

    def __init__(self, specs: Mapping[str, ArraySpec], rows: int) -> None:
        self.specs, self.rows, self.filled = dict(specs), rows, 0
        self._arrays: Row | None = None  # allocated by the first row: a chunk handed out is never reused

    def add(self, row: Row) -> None:
        if self._arrays is None:
            self._arrays = {key: [] if spec.ragged else np.empty((self.rows, *spec.shape), spec.dtype)
                            for key, spec in self.specs.items()}
        for key, value in row.items():
            if self.specs[key].ragged:
                self._arrays[key].append(value)  # type: ignore[union-attr]
            else:
                self._arrays[key][self.filled] = value
        self.filled += 1

    def take(self) -> Chunk:
        chunk = {key: Records.from_arrays(array, self.specs[key].dtype, self.specs[key].row_shape)
                 if self.specs[key].ragged else array[:self.filled] for key, array in (self._arrays or {}).items()}
        self._arrays, self.filled = None, 0
        return chunk


class _Spill:
    """Every row written once to raw files in a temporary folder, read back memory-mapped."""

    def __init__(self, rows: Iterator[Row], specs: Mapping[str, ArraySpec],
                 directory: str | os.PathLike | None) -> None:
        self.specs, self.count = dict(specs), 0
        self.folder = Path(tempfile.mkdtemp(prefix="streamload-spill-", dir=directory))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.paths = {key: self.folder / f"{number}.raw" for number, key in enumerate(self.specs)}
        self.lengths = {key: self.folder / f"{number}.lengths" for number, key in enumerate(self.specs)
                        if self.specs[key].ragged}
        buffer = _ChunkBuffer(self.specs, rows_per_chunk(self.specs, DEFAULT_CHUNK_ROWS, SPILL_BUFFER_BYTES))
        streams = {key: open(path, "wb") for key, path in (*self.paths.items(), *self._length_keys())}
        try:
            for row in rows:
                buffer.add(row)
                self.count += 1
                if buffer.filled == buffer.rows:
                    self._write(buffer.take(), streams)
            if buffer.filled:
                self._write(buffer.take(), streams)
        finally:
            for stream in streams.values():
                stream.close()

    def _length_keys(self) -> list[tuple[str, Path]]:
        return [(f"{key} lengths", path) for key, path in self.lengths.items()]

    @staticmethod
    def _write(chunk: Chunk, streams: Mapping[str, Any]) -> None:
        for key, array in chunk.items():
            if isinstance(array, Records):
                array.flat.tofile(streams[key])
                array.lengths.astype(np.int64).tofile(streams[f"{key} lengths"])
            else:
                array.tofile(streams[key])

    def iter_chunks(self, rows: int) -> Iterator[Chunk]:
        if not self.count:
            return
        offsets = {key: np.r_[0, np.cumsum(np.fromfile(path, np.int64))] for key, path in self.lengths.items()}
        maps = {}
        for key, path in self.paths.items():
            spec = self.specs[key]
            shape = (int(offsets[key][-1]), *spec.row_shape) if spec.ragged else (self.count, *spec.shape)
            if math.prod(shape):  # numpy cannot map an empty file
                maps[key] = np.memmap(path, dtype=spec.dtype, mode="r", shape=shape)
        for start in range(0, self.count, rows):
            yield {key: self._rows(key, start, rows, maps, offsets) for key in self.specs}

    def _rows(self, key: str, start: int, rows: int, maps: Mapping[str, np.ndarray],
              offsets: Mapping[str, np.ndarray]) -> np.ndarray | Records:
        spec = self.specs[key]
        if not spec.ragged:
            return np.array(maps[key][start:start + rows]) if key in maps else np.empty((0, *spec.shape), spec.dtype)
        index = offsets[key][start:start + rows + 1]
        values = maps[key][index[0]:index[-1]] if key in maps else np.empty((0, *spec.row_shape), spec.dtype)
        return Records(np.array(values), index - index[0])


class IterableSource:
    """Items of any iterable as samples; see the module docstring for the item shapes and the count."""

    def __init__(self, items: Iterable[Any], *, num_samples: int | None = None, target: str | None = None,
                 sample_weight: str | None = None, features: Sequence[str] | None = None,
                 spill_dir: str | os.PathLike | None = None, description: str | None = None,
                 ragged: Sequence[str] = ()) -> None:
        self.description = description or f"{type(items).__name__} of samples"
        self._items, self.reiterable, self._consumed = items, iter(items) is not items, False
        iterator = iter(items)
        first = next(iterator, _NOTHING)
        if first is _NOTHING:
            raise SourceFormatError(f"{self.description}: holds no items")
        first_row = flatten_item(first, self.description, 0)
        self.specs = {key: ArraySpec(np.dtype(value.dtype).newbyteorder("=").str,
                                     (None, *value.shape[1:]) if key in ragged else value.shape)
                      for key, value in first_row.items()}
        if set(ragged) - set(self.specs) or any(not first_row[key].ndim for key in ragged):
            raise SourceFormatError(f"{self.description}: ragged={list(ragged)} must name arrays of the items that "
                                    f"have at least one axis; the first item has {list(self.specs)}")
        check_storable(self.specs, self.description)
        self._set_roles(first, features, target, sample_weight)
        self._first, self._rest = first, (None if self.reiterable else iterator)
        if num_samples is None and isinstance(items, Sized) and self.reiterable:
            num_samples = len(items)
        self._spill = None
        if num_samples is None:
            self._spill = _Spill(self._rows(chain([first], iterator)), self.specs, spill_dir)
            num_samples, self.reiterable = self._spill.count, True
        if num_samples < 1:
            raise SourceFormatError(f"{self.description}: num_samples must be positive, got {num_samples}")
        self.num_samples = num_samples

    def _set_roles(self, first: Any, features: Sequence[str] | None, target: str | None,
                   sample_weight: str | None) -> None:
        if not isinstance(first, Mapping):  # pairs and triples name their target and weights themselves
            target, sample_weight = "y", ("sample_weight" if "sample_weight" in self.specs else None)
        roles = {target, sample_weight} - {None}
        self.features = tuple(features) if features is not None else tuple(k for k in self.specs if k not in roles)
        self.target, self.sample_weight = target, sample_weight
        unknown = [name for name in (*self.features, *roles) if name not in self.specs]
        if unknown or not self.features:
            raise SourceFormatError(f"{self.description}: features {list(self.features)}, target {target!r} and "
                                    f"sample_weight {sample_weight!r} must name arrays of the items {list(self.specs)}")

    def _rows(self, items: Iterable[Any]) -> Iterator[Row]:
        """Items as rows of the first item's names, dtypes and shapes; anything else is an error naming it."""
        for index, item in enumerate(items):
            row = flatten_item(item, self.description, index)
            if row.keys() != self.specs.keys():
                raise SourceMismatchError(f"{self.description}: item {index} has {sorted(row)}, the first had "
                                          f"{sorted(self.specs)}")
            for key, value in row.items():
                spec = self.specs[key]
                shape = value.shape[1:] if spec.ragged and value.ndim else value.shape
                if shape != spec.row_shape or not np.can_cast(value.dtype, spec.dtype, "safe"):
                    hint = "" if spec.ragged or len(shape) != len(spec.shape) else \
                        f" (samples of varying length: pass ragged=[{key!r}])"
                    raise SourceMismatchError(f"{self.description}: item {index}: {key!r} is {value.dtype} "
                                              f"{value.shape}, the first item's was {spec.dtype} {spec.shape}{hint}")
            yield row

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        rows = rows_per_chunk(self.specs, chunk_rows)
        if self._spill is not None:
            yield from self._spill.iter_chunks(rows)
            return
        if self._consumed and not self.reiterable:
            raise SourceMismatchError(f"{self.description}: a one-shot iterator was already read; pass a list or "
                                      "other re-iterable to read it again")
        self._consumed = True
        items = iter(self._items) if self.reiterable else chain([self._first], self._rest)
        buffer, delivered = _ChunkBuffer(self.specs, rows), 0
        for row in self._rows(islice(items, self.num_samples)):
            buffer.add(row)
            delivered += 1
            if buffer.filled == rows:
                yield buffer.take()
        if delivered < self.num_samples:
            raise SourceMismatchError(f"{self.description}: ended after {delivered} of {self.num_samples} items")
        if buffer.filled:
            yield buffer.take()
