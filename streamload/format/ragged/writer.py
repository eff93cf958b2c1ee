"""Writing one ragged array of one shard: a data file of concatenated rows and an offsets index.

A shard's sample count is known when it begins, its total row count only when it ends, so the two
files are written differently. The offsets (``n + 1`` int64) go into a file of known size at once;
the rows are appended as chunks arrive, with positioned writes as for fixed arrays:

* npy: straight into ``SPLIT-NNNNN.KEY.npy`` behind a header reserved for the largest row count,
  overwritten with the real one when the shard ends (numpy reads a space-padded header as any other);
* HDF5: into a raw scratch file beside the shard, copied into a contiguous (or, compressed, chunked)
  dataset of the now known size when the shard ends, and deleted. A contiguous dataset cannot grow,
  and a resizable one is always chunked, which would cost every read h5py's chunk path instead of one
  ``preadv`` per run (see ragged/reader.py).

Either way the writer holds no more than the chunk it is given, whatever the shard's size. This module is
what both share; ``begin_npy``/``end_npy`` live in npy/writer.py, ``begin_scratch``/``end_scratch`` in
hdf5/writer.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import SourceMismatchError
from ..records import OFFSETS_DTYPE, Records
from ..specs import ArraySpec


def pwrite_all(fd: int, data: memoryview, position: int) -> None:
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
        pwrite_all(self.data_fd, memoryview(rows).cast("B"), self.data_start + self.rows * self.spec.row_bytes)
        ends = self.rows + np.cumsum(records.lengths)
        self.offsets[first_sample + 1:first_sample + 1 + len(records)] = ends
        self.rows += len(rows)


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
