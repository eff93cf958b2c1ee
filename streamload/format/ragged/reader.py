"""Reading variable-length records: only a batch's byte ranges, in a few large reads, never whole shards.

A ragged array of a shard is a data file of concatenated rows plus an offsets index (``n + 1`` int64,
memory-mapped as a :class:`~streamload.format.reader.MappedArray`). A batch's sorted rows become byte ranges
with numpy (``offsets[rows]``, ``offsets[rows + 1]``); ranges that touch, or lie closer than
``GAP_BYTES``, merge into runs; each run is one ``os.preadv`` straight into the batch's output buffer
(a short gap goes into a scratch buffer). Linux has no system call that reads scattered file offsets in
one go (short of io_uring), so a run is the unit: a batch of consecutive records (no shuffle, block
shuffle) is one ``preadv`` per shard, a batch of random records one per record, each with no open, seek
or copy of its own. A batch over several shards is cut into runs once and read into one buffer
(:func:`take_records`): a shard costs a check of its offsets, not a ``take`` and a concatenation.
MosaicML Streaming and LitData instead open, seek and read per record, and memory-mapping the data
would let a file cut short kill the process (SIGBUS) in the middle of a gather.
Chunked HDF5 datasets (compressed) are read through h5py, one read of the hull of each group of runs
that share chunks.

Each format opens its ragged arrays (``open_npy_records`` in npy/reader.py, ``open_hdf5_records`` in
hdf5/reader.py) as a :class:`RecordArray`; this module is what they share.

Offsets come from files a stranger may have made: every batch's ranges are checked (non-negative
lengths, increasing, inside the data) before anything is read, so a damaged index is a
:class:`~streamload.errors.ShardFormatError` naming the offsets file, never a read of other bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import ShardDecodeError, ShardFormatError
from ..reader import ByteRanges, MappedArray
from ..records import Records, _rows_within
from ..shardfiles import OpenShardFile
from ..specs import ArraySpec

GAP_BYTES = 16 * 2**10  # ranges closer than this are read as one: a syscall costs more than reading 16 KiB cached
MAX_RUN_BYTES = 2**30  # Linux reads at most ~2 GiB per call
_IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))
_SCRATCH = bytearray(GAP_BYTES)  # gap bytes land here and are never looked at (shared: nobody reads it)


class RecordArray(OpenShardFile):
    """One ragged array of one shard: rows stored plainly at ``data_offset`` in ``path`` (or in the chunked
    HDF5 ``dataset``), found through ``index``, the mapped offsets."""

    def __init__(self, path: Path, fd: int, spec: ArraySpec, index: MappedArray, data_offset: int | None,
                 dataset=None) -> None:  # noqa: ANN001 - an h5py.Dataset for chunked storage
        super().__init__(path, fd)
        self.spec, self.index, self.dataset = spec, index, dataset
        self.offsets = index.array
        self.data_offset = data_offset or 0
        self.row_bytes, self.dtype = spec.row_bytes, np.dtype(spec.dtype)
        self.total_rows = int(self.offsets[-1]) if len(self.offsets) else 0
        if not len(self.offsets) or int(self.offsets[0]) != 0:
            raise ShardFormatError(f"{index.path}: offsets index of {path.name} does not start at 0")
        needed = self.data_offset + self.total_rows * self.row_bytes
        if dataset is None and self.opened[0] < needed:
            raise ShardFormatError(f"{path}: truncated: {self.opened[0]} bytes, its offsets need {needed}")

    def bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first row, end row) in the data of each of ``rows`` (sorted, no repeats), checked."""
        rows = rows.astype(np.int64, copy=False)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        check_ranges([self], np.array([0, len(rows)]), rows, starts, ends)
        return starts, ends

    def refuse(self, row: int) -> None:
        """The error for damaged offsets at ``row``, naming the offsets file."""
        raise ShardFormatError(f"{self.index.path}: offsets of sample {row} of {self.path.name} are damaged "
                               f"({int(self.offsets[row])}..{int(self.offsets[row + 1])} in {self.total_rows} "
                               "rows); run build_shards.py --verify on the dataset")

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Row counts of ``rows`` (any order), read from the offsets alone."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.offsets[rows + 1] - self.offsets[rows]

    def take(self, rows: np.ndarray, out: None = None) -> Records:
        """Records ``rows`` (sorted, repeats allowed) as one Records whose values are one fresh buffer.

        The mapped offsets are checked first (a cut offsets file would kill the process at the first touch);
        the data needs no check: a ``preadv`` past a cut end returns short, which is reported."""
        self.index.check()
        unique, inverse = rows, None
        if len(rows) > 1 and (rows[1:] == rows[:-1]).any():
            unique, inverse = np.unique(rows, return_inverse=True)
        starts, ends = self.bounds(unique)
        offsets = np.concatenate(([0], np.cumsum(ends - starts)))
        values = np.empty((int(offsets[-1]), *self.spec.row_shape), self.dtype)
        if values.size:
            if self.dataset is None:
                self._pread(starts, ends, offsets, values)
            else:
                self._h5_read(starts, ends, offsets, values)
        records = Records(values, offsets)
        return records if inverse is None else records.take(inverse)

    def _pread(self, starts: np.ndarray, ends: np.ndarray, out_offsets: np.ndarray, values: np.ndarray) -> None:
        pread_records([self], np.array([0, len(starts)]), starts, ends, out_offsets, values)

    def preadv(self, vectors: list[memoryview], position: int, expected: int) -> None:
        """One run's read; short means the data ends before its offsets do (or the file changed: it says so)."""
        if os.preadv(self.fd, vectors, position) != expected:
            self.check()
            raise ShardFormatError(f"{self.path}: ends before byte {position + expected} that its offsets "
                                   "index names; the file is damaged")

    def _h5_read(self, starts: np.ndarray, ends: np.ndarray, out_offsets: np.ndarray, values: np.ndarray) -> None:
        """Chunked storage: one h5py read of the hull of ranges that share chunks, then a vectorised gather."""
        chunk_rows = self.dataset.chunks[0] if self.dataset.chunks else 1
        breaks = np.flatnonzero(starts[1:] >= ends[:-1] + chunk_rows) + 1
        for first, last in zip([0, *breaks.tolist()], [*breaks.tolist(), len(starts)]):
            low, high = int(starts[first]), int(ends[last - 1])
            hull = self._h5_rows(low, high)
            rows = _rows_within(starts[first:last] - low, ends[first:last] - starts[first:last])
            values[int(out_offsets[first]):int(out_offsets[last])] = hull[rows]

    def _h5_rows(self, low: int, high: int) -> np.ndarray:
        """Rows [low, high) through h5py; a chunk that cannot be read back names the file (as ChunkedArray does)."""
        try:
            return self.dataset[low:high]
        except OSError as exc:
            self.check()
            reason = (str(exc).splitlines() or ["unknown error"])[0]
            raise ShardDecodeError(f"{self.path}: dataset {self.dataset.name.lstrip('/')!r}, rows {low}..{high - 1}: "
                                   f"a stored chunk cannot be read back ({reason}); the file is damaged: restore it or "
                                   "rebuild the dataset") from None

    def ranges(self, rows: np.ndarray) -> ByteRanges | None:
        if self.dataset is not None:
            return None
        unique = np.unique(rows)
        starts, ends = self.offsets[unique], self.offsets[unique + 1]
        base = self.data_offset
        return ByteRanges(self.fd, base + starts * self.row_bytes, base + ends * self.row_bytes, self)

    def span(self, first: int, last: int) -> ByteRanges | None:
        if self.dataset is not None or last <= first:
            return None
        low, high = int(self.offsets[first]), int(self.offsets[last])
        base = self.data_offset
        return ByteRanges(self.fd, np.array([base + low * self.row_bytes]), np.array([base + high * self.row_bytes]),
                          self)

    def advise(self, advice: int) -> None:
        """Reads are explicit ``preadv`` calls, which no madvise hint affects; the offsets map takes it."""
        self.index.advise(advice)


def take_records(parts: Sequence[tuple[RecordArray, np.ndarray]], check: bool = True) -> Records:
    """The records of several shards' ``rows`` (sorted, each in its shard), shard after shard, as one Records.

    Plainly stored arrays are read straight into one buffer, checked and cut into runs once for the whole
    batch: a batch of random records touches every shard of a large set, and a ``take`` per shard then a
    concatenation cost ~40 us a shard, as much as ten records' reads (issue 19: the 10x set's gap).
    ``check=False`` skips the ``fstat`` of each mapped offsets file, for a dataset that watches them."""
    arrays = [array for array, _ in parts]
    if len(parts) == 1:
        return arrays[0].take(parts[0][1])
    if any(array.dataset is not None for array in arrays):
        return Records.concat([array.take(rows) for array, rows in parts])  # HDF5 chunks, read with h5py
    begins = np.cumsum([0, *(len(rows) for _, rows in parts)])
    rows = np.concatenate([rows for _, rows in parts]).astype(np.int64, copy=False)
    repeated = rows[1:] == rows[:-1]
    repeated[begins[1:-1] - 1] = False  # the first row of the next shard may equal the last of this one
    if repeated.any():
        return Records.concat([array.take(rows) for array, rows in parts])
    for array in arrays if check else ():
        array.index.check()
    starts = np.concatenate([array.offsets[part] for array, part in parts])
    ends = np.concatenate([array.offsets[part + 1] for array, part in parts])
    check_ranges(arrays, begins, rows, starts, ends)
    offsets = np.concatenate(([0], np.cumsum(ends - starts)))
    values = np.empty((int(offsets[-1]), *arrays[0].spec.row_shape), arrays[0].dtype)
    if values.size:
        pread_records(arrays, begins, starts, ends, offsets, values)
    return Records(values, offsets)


def check_ranges(arrays: Sequence[RecordArray], begins: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                 ends: np.ndarray) -> None:
    """A ShardFormatError naming the offsets file if a range (``begins[i]:begins[i + 1]`` of ``arrays[i]``)
    is negative, overlaps the one before it in its file, or ends beyond its data."""
    totals = np.repeat(np.array([array.total_rows for array in arrays], np.int64), np.diff(begins))
    bad = (ends < starts) | (starts < 0) | (ends > totals)
    if len(rows) > 1:
        overlap = starts[1:] < ends[:-1]
        overlap[begins[1:-1] - 1] = False
        bad[1:] |= overlap
    if bad.any():
        at = int(np.argmax(bad))
        arrays[int(np.searchsorted(begins, at, side="right")) - 1].refuse(int(rows[at]))


def pread_records(arrays: Sequence[RecordArray], begins: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  out_offsets: np.ndarray, values: np.ndarray) -> None:
    """Rows ``starts[i]:ends[i]`` (``begins[k]:begins[k + 1]`` of them of ``arrays[k]``) into
    ``values`` at ``out_offsets``: one ``preadv`` per run of ranges that touch or nearly touch, never across files.

    The runs are cut with a few numpy calls per batch; the loop is plain Python over lists, since a numpy
    call per run (a few microseconds each) cost more than the ``preadv`` of a scattered record itself."""
    size = arrays[0].row_bytes
    base = np.repeat(np.array([array.data_offset for array in arrays], np.int64), np.diff(begins))
    byte_starts, byte_ends = base + starts * size, base + ends * size
    firsts, gaps = pieces(byte_starts, byte_ends, begins[1:-1])
    lows = (out_offsets[firsts] * size).tolist()
    out, scratch = memoryview(values.reshape(-1)).cast("B"), memoryview(_SCRATCH)
    owners = (np.searchsorted(begins, firsts, side="right") - 1).tolist()
    vectors: list[memoryview] = []
    reader, position, expected = arrays[0], 0, 0
    for low, high, gap, at, owner in zip(lows, [*lows[1:], int(out_offsets[-1]) * size], gaps.tolist(),
                                         byte_starts[firsts].tolist(), owners):
        if not gap:  # a new run
            if vectors:
                reader.preadv(vectors, position, expected)
            vectors, reader, position, expected = [], arrays[owner], at, 0
        else:
            vectors.append(scratch[:gap])
        vectors.append(out[low:high])
        expected += gap + high - low
    reader.preadv(vectors, position, expected)


def pieces(byte_starts: np.ndarray, byte_ends: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranges cut where a read or a gap starts: each piece's first range, and the gap bytes before it
    (0 where the piece starts a new read: see :func:`run_heads`). Ranges that touch stay one piece."""
    before = np.zeros(len(byte_starts), np.int64)
    before[1:] = byte_starts[1:] - byte_ends[:-1]
    heads = run_heads(byte_starts, byte_ends, breaks)
    before[heads] = 0
    cut = before > 0
    cut[heads] = True
    firsts = np.flatnonzero(cut)
    return firsts, before[firsts]


def run_heads(byte_starts: np.ndarray, byte_ends: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """Indices where a new read starts: a gap over ``GAP_BYTES``, a run over ``MAX_RUN_BYTES``, too many vectors,
    or one of ``breaks`` (where the ranges of the next file begin)."""
    count = len(byte_starts)
    if not count:
        return np.zeros(0, np.int64)
    gaps = byte_starts[1:] - byte_ends[:-1]
    far = gaps > GAP_BYTES
    if breaks is not None and len(breaks):
        far[breaks - 1] = True
    heads = np.concatenate(([0], np.flatnonzero(far) + 1))
    if 2 * count <= _IOV_MAX and int(byte_ends.max()) - int(byte_starts.min()) <= MAX_RUN_BYTES:
        return heads  # a batch's usual size: no run can hold too many vectors or bytes
    tails = np.concatenate((heads[1:], [count])) - 1
    gaps_before = np.concatenate(([0], np.cumsum(gaps > 0)))
    vectors = 2 * (gaps_before[tails] - gaps_before[heads]) + 1
    if (vectors < _IOV_MAX).all() and (byte_ends[tails] - byte_starts[heads] <= MAX_RUN_BYTES).all():
        return heads  # vectorised; the loop below only for huge or very scattered runs
    far = set(heads[1:].tolist())
    heads = [0]
    run_start, vectors = int(byte_starts[0]), 1
    for index in range(1, len(byte_starts)):
        vectors += 2 if gaps[index - 1] else 0
        if index in far or vectors >= _IOV_MAX or int(byte_ends[index]) - run_start > MAX_RUN_BYTES:
            heads.append(index)
            run_start, vectors = int(byte_starts[index]), 1
    return np.array(heads, np.int64)
