"""Variable-length records in memory: one flat values array and an offsets index, never a list of arrays.

A batch of token sequences, audio clips or (later) encoded image files is held as ``values`` (every
record's rows back to back, shape ``(total_rows, *row_shape)``) and ``offsets`` (``n + 1`` int64
positions into ``values``: record ``i`` is ``values[offsets[i]:offsets[i + 1]]``). That is the layout of
the shard files too (a data file plus an offsets file), so a batch read from disk lands in this form
without a copy per record, and every operation here (slicing, gathering, padding) is a few vectorised
numpy calls whatever the batch size. Object arrays (one Python object per record) would need pickle to
store and a Python loop to pad; this form needs neither.

Offsets are int64 whatever the shard size: 32-bit offsets (MosaicML Streaming, LitData) cap a shard
at 4 GiB of records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

OFFSETS_DTYPE = np.dtype("<i8")


def _rows_within(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every record, concatenated (vectorised)."""
    total = int(lengths.sum())
    if not total:
        return np.empty(0, np.int64)
    firsts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.repeat(starts - firsts, lengths) + np.arange(total, dtype=np.int64)


class Records:
    """``n`` variable-length records of one dtype and row shape: ``values`` and ``offsets`` (see the module)."""

    __slots__ = ("values", "offsets")

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or not len(offsets):
            raise ValueError(f"offsets must be a 1-D array of n + 1 positions, got shape {offsets.shape}")
        self.values, self.offsets = np.asarray(values), offsets

    @classmethod
    def from_arrays(cls, arrays: Sequence[Any], dtype: Any = None, row_shape: tuple[int, ...] | None = None) -> Records:
        """Records from a sequence of arrays whose first axis varies (a list of token-id arrays, say)."""
        parts = [np.asarray(array, dtype=dtype) for array in arrays]
        if not parts:
            shape = row_shape or ()
            return cls(np.empty((0, *shape), dtype or np.float64), np.zeros(1, np.int64))
        lengths = np.fromiter((len(part) for part in parts), np.int64, len(parts))
        return cls(np.concatenate(parts), np.concatenate(([0], np.cumsum(lengths))))

    @classmethod
    def concat(cls, parts: Sequence[Records]) -> Records:
        """One Records of several, in order (each compacted into the new values)."""
        values = np.concatenate([part.flat for part in parts])
        lengths = np.concatenate([part.lengths for part in parts])
        return cls(values, np.concatenate(([0], np.cumsum(lengths))))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def flat(self) -> np.ndarray:
        """The records' rows back to back (a view when the offsets are a slice of a larger batch)."""
        return self.values[self.offsets[0]:self.offsets[-1]]

    def __getitem__(self, item: Any) -> Any:
        """An int gives one record's array; a step-1 slice a view; an index or boolean array a gathered copy."""
        if isinstance(item, (int, np.integer)):
            index = range(len(self))[item]
            return self.values[self.offsets[index]:self.offsets[index + 1]]
        if isinstance(item, slice) and item.step in (None, 1):
            start, stop, _ = item.indices(len(self))
            return Records(self.values, self.offsets[start:max(start, stop) + 1])
        item = np.asarray(item)
        return self.take(np.flatnonzero(item) if item.dtype == bool else item)

    def take(self, positions: np.ndarray) -> Records:
        """The records at ``positions`` (any order, repeats allowed) as new compact Records."""
        positions = np.asarray(positions, dtype=np.int64)
        starts, lengths = self.offsets[:-1][positions], self.lengths[positions]
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        return Records(self.values[_rows_within(starts, lengths)], offsets)

    def padded(self, length: int, pad_value: Any = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(batch, length, *row_shape)`` values, each record cut to ``length`` rows or padded with
        ``pad_value``, and the boolean ``(batch, length)`` mask of real rows (Keras' mask convention)."""
        kept = np.minimum(self.lengths, length)
        mask = np.arange(length) < kept[:, None]
        out = np.full((len(self), length, *self.row_shape), pad_value, dtype=self.dtype)
        out[mask] = self.values[_rows_within(self.offsets[:-1], kept)]
        return out, mask

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Records):
            return NotImplemented
        return bool(np.array_equal(self.lengths, other.lengths) and np.array_equal(self.flat, other.flat)
                    and self.dtype == other.dtype)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records({len(self)} records of {self.dtype} rows {self.row_shape}, {len(self.flat)} rows in all)"


def npy_header(dtype: np.dtype, shape: tuple[int, ...], size: int | None = None) -> bytes:
    """A version-1.0 ``.npy`` header for ``shape``, padded with spaces to ``size`` bytes (a multiple of 64).

    A shard's data file is written before its row count is known: the writer reserves a header as long
    as the one for the largest row count (:func:`reserved_header_size`) and writes the real one over it
    at the end. numpy reads a header padded with spaces like any other.
    """
    descr, shape = np.lib.format.dtype_to_descr(np.dtype(dtype)), tuple(shape)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    size = size if size is not None else -(-(10 + len(text) + 1) // 64) * 64
    padding = size - 10 - len(text) - 1
    if padding < 0 or size % 64 or size - 10 > 0xFFFF:
        raise ValueError(f"a .npy header for {shape} does not fit in {size} bytes")
    body = (text + " " * padding + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def reserved_header_size(dtype: np.dtype, row_shape: tuple[int, ...]) -> int:
    """Header bytes that hold any row count a file can have (20 digits)."""
    return len(npy_header(dtype, (10**19, *row_shape)))


def offsets_problem(offsets: np.ndarray, data_rows: int) -> str | None:
    """What is wrong with an offsets index over ``data_rows`` rows of data, in words, or None.

    Sound offsets start at 0, never decrease, and end at the data's row count (so none points past it).
    """
    if not len(offsets):
        return "offsets: empty; an index of n samples holds n + 1 positions"
    if int(offsets[0]) != 0:
        return f"offsets: start at {int(offsets[0])}, not 0"
    falling = np.flatnonzero(offsets[1:] < offsets[:-1])
    if len(falling):
        at = int(falling[0])
        return f"offsets: decrease at sample {at} ({int(offsets[at])} then {int(offsets[at + 1])})"
    if int(offsets[-1]) != data_rows:
        where = "past the end of" if int(offsets[-1]) > data_rows else "short of"
        return f"offsets: end at row {int(offsets[-1])}, {where} the {data_rows} rows of data"
    return None
