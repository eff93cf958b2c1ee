"""Writing HDF5 shards: one file per shard with a dataset per array, contiguous and uncompressed unless asked;
a ragged array's rows go to a scratch file first, copied into their dataset when the shard ends (see
ragged/writer.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import InvalidOptionError
from ..manifest import HDF5_FILE_ROLE, ArraySpec, offsets_key
from ..ragged.writer import RecordFileWriter, abandon
from ..writer import ShardWriter

HDF5_CHUNK_BYTES = 64 * 2**10  # compressed HDF5 reads whole chunks: small ones keep random reads cheap
COMPRESSIONS = ("gzip", "lzf")
COPY_BYTES = 16 * 2**20  # the HDF5 scratch file is copied into its dataset this much at a time


class Hdf5ShardWriter(ShardWriter):
    """One HDF5 file per shard with a dataset per array; contiguous and uncompressed unless asked."""

    def __init__(self, *args: object, compression: str | None = None, **kwargs: object) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise InvalidOptionError(
                f"unknown HDF5 compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.compression = compression
        self._file = None

    def _begin_shard(self, index: int, num_samples: int) -> None:
        import h5py

        self._path = self.directory / f"{self._shard_stem(index)}.h5"
        self._file = h5py.File(self._path, "w", libver="latest")
        self._records: dict[str, tuple[Path, RecordFileWriter]] = {}
        for key, spec in self.specs.items():
            if spec.ragged:  # rows go to a scratch file until the shard's row count is known
                scratch = self.directory / f".{self._shard_stem(index)}.{key}.rows"
                self._records[key] = (scratch, begin_scratch(scratch, spec, num_samples))
                continue
            options = {}
            if self.compression:
                chunk_rows = max(1, min(num_samples, HDF5_CHUNK_BYTES // max(1, spec.sample_bytes)))
                options = {"chunks": (chunk_rows, *spec.shape), "compression": self.compression}
            self._file.create_dataset(key, shape=(num_samples, *spec.shape), dtype=np.dtype(spec.dtype), **options)

    def _write_rows(self, offset: int, arrays: Mapping[str, np.ndarray]) -> None:
        for key, rows in arrays.items():
            if key in self._records:
                self._records[key][1].write(offset, rows)  # type: ignore[arg-type]
            else:
                self._file[key][offset:offset + len(rows)] = rows

    def _end_shard(self) -> dict[str, Path]:
        file, self._file = self._file, None
        records, self._records = getattr(self, "_records", {}), {}
        try:
            for key, (scratch, writer) in records.items():
                if file is None:
                    abandon(writer, scratch)
                else:
                    end_scratch(writer, scratch, file, key, offsets_key(key), HDF5_CHUNK_BYTES, self.compression)
        finally:
            for scratch, writer in records.values():
                abandon(writer, scratch)  # a no-op for those already copied, a cleanup after a failure
            if file is not None:
                file.close()
        return {HDF5_FILE_ROLE: self._path}


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
