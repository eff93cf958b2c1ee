"""Reading shards, what every format shares: byte ranges, the reader protocol, mapped arrays, a shard as arrays.

A reader opens its files when it is made (:func:`~streamload.format.dispatch.open_reader`, which picks the
format's ``open_npy`` or ``open_hdf5``) and is used only in that process:
:class:`~streamload.read.dataset.ShardedDataset` keeps the one per-process cache of open readers. Rows
stored plainly on disk (a ``.npy`` file, or a contiguous uncompressed HDF5 dataset, whose offset
h5py reports once) are read through a memory map with one vectorised ``take``; chunked HDF5
datasets are read whole chunk by whole chunk, never with h5py's per-index selection (~100x slower:
see hdf5/reader.py). Readers also say where the bytes of given rows lie (:class:`ByteRanges`), so a
read-ahead layer can ask the kernel for them before they are needed, without knowing the format.

Shard files are opened without following links and must be regular files (no FIFO, no device), and
HDF5 datasets must keep their bytes in the shard file itself. Touching a mapped page past the end of
a file that was cut short kills the process with SIGBUS, so every read first compares the file's size
and times (one ``fstat`` of the open descriptor, ~1 us) with those seen at open and raises
:class:`~streamload.errors.ShardChangedError` when they differ (a dataset replaces the per-read ``fstat``
with one inotify read per batch while no file changed). A file cut in the microseconds between that
check and the gather can still crash the process: builds write shards read-only (0444), so only a
deliberate ``chmod`` and truncate during training can do it.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ShardFormatError
from .shardfiles import OpenShardFile, open_shard_file
from .specs import ArraySpec

PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class ByteRanges:
    """Byte ranges ``[starts[i], ends[i])`` of one open file; ``owner`` keeps its descriptor open."""

    fd: int
    starts: np.ndarray
    ends: np.ndarray
    owner: object


class ShardReader(Protocol):
    """The rows of one shard. ``rows`` are sorted ascending (repeats allowed) and within the shard."""

    num_samples: int
    check_each_take: bool

    def take(self, key: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...

    def files(self) -> list[tuple[Path, int]]: ...

    def check(self) -> None: ...

    def ranges(self, key: str, rows: np.ndarray) -> ByteRanges | None: ...

    def span(self, key: str, first: int, last: int) -> ByteRanges | None: ...

    def advise(self, advice: int) -> None: ...


class MappedArray(OpenShardFile):
    """A read-only memory map of an array stored plainly at ``offset`` in ``path``.

    The array is a plain ``ndarray`` over the map (not ``np.memmap``, whose subclass hooks cost more
    than a small gather). A descriptor stays open beside the map for ``posix_fadvise`` hints, which,
    unlike ``madvise``, release the GIL while the kernel queues reads, and for the ``fstat`` checks.
    """

    def __init__(self, path: Path, offset: int, spec: ArraySpec, num_samples: int, fd: int | None = None) -> None:
        super().__init__(path, open_shard_file(path) if fd is None else fd)
        self.offset, self.row_bytes = offset, spec.sample_bytes
        size, needed = self.opened[0], offset + num_samples * spec.sample_bytes
        if size < needed:
            raise ShardFormatError(f"{path}: truncated: {size} bytes, its array needs {needed}")
        self._map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) if size else None
        count = num_samples * int(np.prod(spec.shape))
        data = np.frombuffer(self._map, np.dtype(spec.dtype), count, offset) if self._map else np.empty(0, spec.dtype)
        self.array = data.reshape((num_samples, *spec.shape))

    def ranges(self, rows: np.ndarray) -> ByteRanges:
        starts = self.offset + rows.astype(np.int64) * self.row_bytes
        return ByteRanges(self.fd, starts, starts + self.row_bytes, self)

    def span(self, first: int, last: int) -> ByteRanges:
        bounds = np.array([self.offset + first * self.row_bytes]), np.array([self.offset + last * self.row_bytes])
        return ByteRanges(self.fd, *bounds, self)

    def advise(self, advice: int) -> None:
        if self._map is not None:
            self._map.madvise(advice)


class ArraysReader:
    """A shard as named arrays, each a MappedArray, a ChunkedArray (HDF5) or a RecordArray (ragged)."""

    def __init__(self, arrays: Mapping[str, OpenShardFile], num_samples: int) -> None:
        self.arrays, self.num_samples = dict(arrays), num_samples
        self._mapped = {key: array.array for key, array in self.arrays.items() if isinstance(array, MappedArray)}
        self.check_each_take = True  # off while a dataset watches the files for changes (inotify) instead

    def take(self, key: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        mapped = self._mapped.get(key)
        if mapped is not None:  # "clip": rows are known to be in range, and it writes to out without a copy
            if self.check_each_take:  # a page past the end of a file cut short would kill the process (SIGBUS)
                self.arrays[key].check()
            return mapped.take(rows, axis=0, out=out, mode="clip")
        return self.arrays[key].take(rows, out)  # type: ignore[call-arg] - a RecordArray gives Records

    def files(self) -> list[tuple[Path, int]]:
        """(path, open descriptor) of each file the reader reads."""
        return [(array.path, array.fd) for array in self.arrays.values()]

    def check(self) -> None:
        """ShardChangedError if any of the shard's files changed since it was opened."""
        for array in self.arrays.values():
            array.check()

    def ranges(self, key: str, rows: np.ndarray) -> ByteRanges | None:
        return self.arrays[key].ranges(rows)

    def span(self, key: str, first: int, last: int) -> ByteRanges | None:
        return self.arrays[key].span(first, last)

    def advise(self, advice: int) -> None:
        for array in self.arrays.values():
            array.advise(advice)
