"""Writing ``.npy`` shards: one file per array per shard; a ragged array's rows go straight into their data
file behind a header reserved for the largest row count, rewritten when the shard ends (see ragged/writer.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..manifest import ArraySpec, offsets_key
from ..ragged.writer import RecordFileWriter, abandon, pwrite_all
from ..records import npy_header, reserved_header_size
from ..writer import ShardWriter


class NpyShardWriter(ShardWriter):
    """One ``.npy`` file per array per shard, readable with ``np.load(mmap_mode="r")``.

    ``np.lib.format.open_memmap`` creates each file (header and full size); rows then go in with
    positioned writes at their offsets, which measured 5x faster than assigning through the mapping
    (2.3 vs 0.4 GB/s: every page of a shared file mapping costs a fault and a zero-fill first).
    """

    _files: dict[str, tuple[Path, int, int]]  # key -> (path, descriptor, byte offset of row 0)
    _records: dict[str, tuple[Path, RecordFileWriter]]  # ragged key -> (data path, its writer)

    def _begin_shard(self, index: int, num_samples: int) -> None:
        self._files, self._records = {}, {}
        for key, spec in self.specs.items():
            path = self.directory / f"{self._shard_stem(index)}.{key}.npy"
            if spec.ragged:
                self._records[key] = (path, begin_npy(path, spec, num_samples))
                continue
            created = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(spec.dtype),
                                                shape=(num_samples, *spec.shape))
            data_offset = created.offset
            del created  # unmaps: the header and the file's size are set
            self._files[key] = (path, os.open(path, os.O_WRONLY), data_offset)

    def _write_rows(self, offset: int, arrays: Mapping[str, np.ndarray]) -> None:
        for key, rows in arrays.items():
            if key in self._records:
                self._records[key][1].write(offset, rows)  # type: ignore[arg-type]
                continue
            _, fd, data_offset = self._files[key]
            data = memoryview(np.ascontiguousarray(rows, dtype=np.dtype(self.specs[key].dtype))).cast("B")
            position = data_offset + offset * self.specs[key].sample_bytes
            while data:
                written = os.pwrite(fd, data, position)
                data, position = data[written:], position + written

    def _end_shard(self) -> dict[str, Path]:
        for _, fd, _ in self._files.values():
            os.close(fd)
        paths = {key: path for key, (path, _, _) in self._files.items()}
        records, self._files, self._records = self._records, {}, {}
        for key, (path, writer) in records.items():
            offsets_path = path.with_name(f"{path.name[:-len('.npy')]}.offsets.npy")
            end_npy(writer, offsets_path)
            paths[key], paths[offsets_key(key)] = path, offsets_path
        return paths

    def _abandon_shard(self) -> None:
        for _, writer in getattr(self, "_records", {}).values():
            abandon(writer)
        self._records = {}
        super()._abandon_shard()


def begin_npy(path: Path, spec: ArraySpec, num_samples: int) -> RecordFileWriter:
    """The data file ``path`` with its header reserved (the offsets file is written at the end)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return RecordFileWriter(spec, num_samples, fd, reserved_header_size(np.dtype(spec.dtype), spec.row_shape))


def end_npy(writer: RecordFileWriter, offsets_path: Path) -> None:
    """Write the real header over the reserved one, close the data file and write the offsets file."""
    header = npy_header(writer.dtype, (writer.rows, *writer.spec.row_shape), writer.data_start)
    pwrite_all(writer.data_fd, memoryview(header), 0)
    os.ftruncate(writer.data_fd, writer.data_start + writer.rows * writer.spec.row_bytes)  # a shard of no rows
    abandon(writer)
    np.save(offsets_path, writer.offsets, allow_pickle=False)
