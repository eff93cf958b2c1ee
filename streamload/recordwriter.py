"""Writing one ragged array of one shard: a data file of concatenated rows and an offsets index.

A shard's sample count is known when it begins, its total row count only when it ends, so the two
files are written differently. The offsets (``n + 1`` int64) go into a file of known size at once;
the rows are appended as chunks arrive, with positioned writes as for fixed arrays:

* npy: straight into ``SPLIT-NNNNN.KEY.npy`` behind a header reserved for the largest row count,
  overwritten with the real one when the shard ends (numpy reads a space-padded header as any other);
* HDF5: into a raw scratch file beside the shard, copied into a contiguous (or, compressed, chunked)
  dataset of the now known size when the shard ends, and deleted. A contiguous dataset cannot grow,
  and a resizable one is always chunked, which would cost every read h5py's chunk path instead of one
  ``preadv`` per run (see recordreader.py).

Either way the writer holds no more than the chunk it is given, whatever the shard's size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import SourceMismatchError
from .records import OFFSETS_DTYPE, Records, npy_header, reserved_header_size
from .specs import ArraySpec

COPY_BYTES = 16 * 2**20  # the HDF5 scratch file is copied into its dataset this much at a time


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    while data:
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written


def check_records(split: str, key: str, records: object, spec: ArraySpec) -> None:
    """A chunk's value for a ragged array must be Records of the spec's dtype and row shape."""
    if not isinstance(records, Records):
        raise SourceMismatchError(f"split {split!r}: array {key!r} is ragged (shape {spec.shape}); its chunks must "
                                  f"be streamload Records, got {type(records).__name__}")
    if records.row_shape != spec.row_shape or records.dtype.newbyteorder("=") != np.dtype(spec.dtype):
        raise SourceMismatchError(f"split {split!r}: array {key!r} has records of {records.dtype} rows "
                                  f"{records.row_shape}, expected {spec.dtype} rows {spec.row_shape}")


class RecordFileWriter:
    """The rows and offsets of one ragged array of one open shard; ``rows`` counts rows written so far."""

    def __init__(self, spec: ArraySpec, num_samples: int, data_fd: int, data_start: int) -> None:
        self.spec, self.dtype = spec, np.dtype(spec.dtype)
        self.offsets = np.zeros(num_samples + 1, OFFSETS_DTYPE)  # 8 bytes a sample: the shard's index, in RAM
        self.data_fd, self.data_start, self.rows = data_fd, data_start, 0

    def write(self, first_sample: int, records: Records) -> None:
        """Samples ``first_sample ..`` of the shard: their rows appended, their ends noted in the offsets."""
        rows = np.ascontiguousarray(records.flat, dtype=self.dtype)
        _pwrite_all(self.data_fd, memoryview(rows).cast("B"), self.data_start + self.rows * self.spec.row_bytes)
        ends = self.rows + np.cumsum(records.lengths)
        self.offsets[first_sample + 1:first_sample + 1 + len(records)] = ends
        self.rows += len(rows)


def begin_npy(path: Path, spec: ArraySpec, num_samples: int) -> RecordFileWriter:
    """The data file ``path`` with its header reserved (the offsets file is written at the end)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return RecordFileWriter(spec, num_samples, fd, reserved_header_size(np.dtype(spec.dtype), spec.row_shape))


def end_npy(writer: RecordFileWriter, offsets_path: Path) -> None:
    """Write the real header over the reserved one, close the data file and write the offsets file."""
    header = npy_header(writer.dtype, (writer.rows, *writer.spec.row_shape), writer.data_start)
    _pwrite_all(writer.data_fd, memoryview(header), 0)
    os.ftruncate(writer.data_fd, writer.data_start + writer.rows * writer.spec.row_bytes)  # a shard of no rows
    abandon(writer)
    np.save(offsets_path, writer.offsets, allow_pickle=False)


def begin_scratch(path: Path, spec: ArraySpec, num_samples: int) -> RecordFileWriter:
    """Rows to a raw scratch file ``path``, for an HDF5 shard (see the module docstring)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    return RecordFileWriter(spec, num_samples, fd, 0)


def end_scratch(writer: RecordFileWriter, scratch: Path, handle, key: str, offsets_key: str,  # noqa: ANN001 - h5py
                chunk_bytes: int | None, compression: str | None) -> None:
    """Create the HDF5 datasets of a ragged array, copy the scratch rows in, delete the scratch file."""
    spec = writer.spec
    shape = (writer.rows, *spec.row_shape)
    options = {}
    if compression is not None and chunk_bytes is not None:
        chunk_rows = max(1, min(max(1, writer.rows), chunk_bytes // max(1, spec.row_bytes)))
        options = {"chunks": (chunk_rows, *spec.row_shape), "compression": compression}
    dataset = handle.create_dataset(key, shape=shape, dtype=writer.dtype, **options)
    handle.create_dataset(offsets_key, data=writer.offsets)  # contiguous: readers map it
    step = max(1, COPY_BYTES // max(1, spec.row_bytes))
    try:
        for first in range(0, writer.rows, step):
            count = min(step, writer.rows - first)
            data = os.pread(writer.data_fd, count * spec.row_bytes, first * spec.row_bytes)
            dataset[first:first + count] = np.frombuffer(data, writer.dtype).reshape((count, *spec.row_shape))
    finally:
        abandon(writer, scratch)


def abandon(writer: RecordFileWriter, scratch: Path | None = None) -> None:
    """Close the data descriptor (once: a number closed twice may be another file's by then), delete a scratch."""
    fd, writer.data_fd = writer.data_fd, -1
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    if scratch is not None:
        scratch.unlink(missing_ok=True)
