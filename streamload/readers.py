"""Shard readers: the rows of one shard's arrays, one reader class per storage format.

A reader opens its files when it is made (``open_reader``) and is used only in that process:
:class:`~streamload.dataset.ShardedDataset` keeps the one per-process cache of open readers. Rows
stored plainly on disk (a ``.npy`` file, or a contiguous uncompressed HDF5 dataset, whose offset
h5py reports once) are read through a memory map with one vectorised ``take``; chunked HDF5
datasets are read whole chunk by whole chunk, never with h5py's per-index selection (~100x slower).
Readers also say where the bytes of given rows lie (:class:`ByteRanges`), so a read-ahead layer can
ask the kernel for them before they are needed, without knowing the format.

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
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ShardChangedError, ShardDecodeError, ShardFormatError
from .manifest import HDF5_FILE_ROLE, ArraySpec, ShardInfo
from .shardfiles import OpenShardFile, open_shard_file
from .specs import read_npy_header
from .verify import foreign_storage

PAGE = mmap.PAGESIZE
_FADVICE = {getattr(mmap, f"MADV_{name}"): getattr(os, f"POSIX_FADV_{name}")
            for name in ("NORMAL", "RANDOM", "SEQUENTIAL") if hasattr(mmap, f"MADV_{name}")}


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


class ChunkedArray(OpenShardFile):
    """An HDF5 dataset stored in chunks (compressed): read whole chunks, gather the rows from them.

    ``fd`` is a descriptor of the same file as h5py's, for read hints and change checks.
    """

    def __init__(self, dataset, path: Path, fd: int) -> None:  # noqa: ANN001 - an h5py.Dataset
        super().__init__(path, fd)
        self.dataset = dataset
        self.chunk_rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])

    def take(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((len(rows), *self.dataset.shape[1:]), self.dataset.dtype) if out is None else out
        if not len(rows):  # the loop below would look up the chunk of a first row that is not there
            return out
        self.check()
        chunk_of_row = rows // self.chunk_rows
        bounds = np.flatnonzero(np.diff(chunk_of_row)) + 1
        for first, last in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(rows)].tolist()):
            start = int(chunk_of_row[first]) * self.chunk_rows
            block = self._read(start, min(start + self.chunk_rows, self.dataset.shape[0]))
            out[first:last] = block[rows[first:last] - start]
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of whole chunks; a chunk that cannot be read back names the file, not only h5py."""
        try:
            return self.dataset[start:stop]
        except OSError as exc:  # a chunk that fails to decompress, or bytes gone from a file cut short
            self.check()
            reason = (str(exc).splitlines() or ["unknown error"])[0]
            raise ShardDecodeError(f"{self.path}: dataset {self.dataset.name.lstrip('/')!r}, rows {start}..{stop - 1}: "
                                   f"a stored chunk cannot be read back ({reason}); the file is damaged: restore it or "
                                   "rebuild the dataset") from None

    def ranges(self, rows: np.ndarray) -> ByteRanges | None:
        return self._chunk_ranges(np.unique(rows // self.chunk_rows))

    def span(self, first: int, last: int) -> ByteRanges | None:
        return self._chunk_ranges(np.arange(first // self.chunk_rows, (last - 1) // self.chunk_rows + 1))

    def _chunk_ranges(self, chunks: np.ndarray) -> ByteRanges | None:
        if self.dataset.chunks is None or not len(chunks):
            return None
        tail = (0,) * (self.dataset.ndim - 1)
        infos = [self.dataset.id.get_chunk_info_by_coord((chunk * self.chunk_rows, *tail)) for chunk in chunks.tolist()]
        stored = [(info.byte_offset, info.byte_offset + info.size) for info in infos if info.byte_offset is not None]
        starts, ends = (np.array(column, dtype=np.int64) for column in zip(*stored)) if stored else (np.empty(0),) * 2
        return ByteRanges(self.fd, starts, ends, self)

    def advise(self, advice: int) -> None:
        if advice in _FADVICE:
            os.posix_fadvise(self.fd, 0, 0, _FADVICE[advice])


class _ArraysReader:
    """A shard as named arrays, each a MappedArray or a ChunkedArray."""

    def __init__(self, arrays: Mapping[str, MappedArray | ChunkedArray], num_samples: int) -> None:
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


def npy_data_offset(path: Path, spec: ArraySpec, num_samples: int, fd: int | None = None) -> int:
    """Where the array data of a ``.npy`` file (open as ``fd``, else opened here) starts, after checking its
    header against the manifest. numpy's own message is left out: it quotes the file's first bytes."""
    try:
        with os.fdopen(open_shard_file(path) if fd is None else fd, "rb", closefd=fd is None) as stream:
            _, shape, fortran, dtype, offset = read_npy_header(stream)
    except (ValueError, SyntaxError, EOFError):
        raise ShardFormatError(f"{path}: not a valid .npy file (no readable .npy magic and header)") from None
    if tuple(shape) != (num_samples, *spec.shape) or dtype != np.dtype(spec.dtype) or fortran:
        raise ShardFormatError(f"{path}: holds {dtype} {tuple(shape)}, the manifest says "
                               f"{spec.dtype} {(num_samples, *spec.shape)}")
    return offset


def open_npy(root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> _ArraysReader:
    arrays = {}
    for key, spec in specs.items():
        if spec.ragged:  # its data file and its offsets (see recordreader.py)
            from .recordreader import open_npy_records

            arrays.update(open_npy_records(root, shard.files, key, spec, shard.num_samples))
            continue
        path = root / shard.files[key].name
        fd = open_shard_file(path)
        try:
            offset = npy_data_offset(path, spec, shard.num_samples, fd)
        except BaseException:
            os.close(fd)
            raise
        arrays[key] = MappedArray(path, offset, spec, shard.num_samples, fd)
    return _ArraysReader(arrays, shard.num_samples)


def open_hdf5(root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> _ArraysReader:
    """Map contiguous datasets directly (then h5py is closed); keep h5py open only for chunked ones.

    h5py's chunk cache is off: whole chunks are read once per gather, so a cache would only hold
    anonymous memory (1 MiB per open dataset by default) that grows with the number of shards.
    """
    import h5py

    path = root / shard.files[HDF5_FILE_ROLE].name
    fd = open_shard_file(path)  # checked first: h5py follows links and would wait on a FIFO
    try:
        handle = _open_same_file(h5py, path, fd)
        try:
            arrays = _hdf5_arrays(handle, path, fd, shard, specs)
        except BaseException:
            handle.close()
            raise
    finally:
        os.close(fd)
    if all(isinstance(array, MappedArray) or getattr(array, "dataset", True) is None for array in arrays.values()):
        handle.close()  # nothing read through h5py (RecordArray.dataset is None when its rows are stored plainly)
    return _ArraysReader(arrays, shard.num_samples)


def _hdf5_arrays(handle, path: Path, fd: int, shard: ShardInfo,  # noqa: ANN001 - an h5py.File
                 specs: Mapping[str, ArraySpec]) -> dict[str, MappedArray | ChunkedArray]:
    """Each array of an HDF5 shard, mapped when stored plainly, each with its own copy of ``fd``."""
    arrays: dict[str, MappedArray | ChunkedArray] = {}
    for key, spec in specs.items():
        if spec.ragged:
            from .recordreader import open_hdf5_records

            arrays.update(open_hdf5_records(handle, path, fd, key, spec, shard.num_samples))  # type: ignore[arg-type]
            continue
        dataset = checked_dataset(handle, path, key, spec, shard.num_samples)
        offset = dataset.id.get_offset()
        if dataset.chunks is None and dataset.compression is None and offset is not None:
            arrays[key] = MappedArray(path, offset, spec, shard.num_samples, os.dup(fd))
        else:
            arrays[key] = ChunkedArray(dataset, path, os.dup(fd))
    return arrays


def _open_same_file(h5py, path: Path, fd: int):  # noqa: ANN001, ANN202 - the h5py module, an h5py.File
    """h5py's handle of ``path``, which must be the file ``fd`` has open (not one swapped in since)."""
    try:
        handle = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as exc:
        raise ShardFormatError(f"{path}: cannot open as HDF5: {str(exc).splitlines()[0]}") from None
    theirs, ours = _vfd_handle(handle), os.fstat(fd)
    if theirs is not None and (os.fstat(theirs).st_ino, os.fstat(theirs).st_dev) != (ours.st_ino, ours.st_dev):
        handle.close()
        raise ShardChangedError(f"{path}: the shard file was replaced while it was being opened")
    return handle


def checked_dataset(handle, path: Path, key: str, spec: ArraySpec,  # noqa: ANN001, ANN201 - h5py
                    rows: int | None):
    """Dataset ``key``, stored in the file, of ``rows`` samples as ``spec`` says (``rows`` None: any number of a
    ragged array's rows)."""
    foreign = foreign_storage(handle, key)
    if foreign is not None:
        raise ShardFormatError(f"{path}: dataset {key!r} {foreign}")
    if key not in handle:
        raise ShardFormatError(f"{path}: no dataset {key!r}")
    dataset = handle[key]
    expected = (rows, *spec.row_shape) if spec.ragged else (rows, *spec.shape)
    shape_ok = len(dataset.shape) == len(expected) and all(a == b for a, b in zip(dataset.shape, expected)
                                                           if b is not None)
    if not shape_ok or dataset.dtype != np.dtype(spec.dtype):
        raise ShardFormatError(f"{path}: dataset {key!r} is {dataset.dtype} {dataset.shape}, "
                               f"the manifest says {spec.dtype} {expected}")
    return dataset


def _vfd_handle(handle) -> int | None:  # noqa: ANN001 - an h5py.File
    """HDF5's file descriptor (sec2 driver), or None for drivers without one."""
    try:
        fd = handle.id.get_vfd_handle()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return fd if isinstance(fd, int) else None


def open_reader(fmt: str, root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> ShardReader:
    """Open one shard's files (in this process) for reading the arrays named in ``specs``."""
    return (open_npy if fmt == "npy" else open_hdf5)(Path(root), shard, specs)
