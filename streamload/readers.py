"""Shard readers: fetch given rows of one shard, one implementation per way of storing it.

Every reader maps or opens its files lazily and per process (keyed by pid), so a reader made in
a parent process is safe to use after ``fork`` and pickles as paths only (``spawn``). Reads go
through memory maps wherever the bytes are laid out plainly on disk: a ``.npy`` file, or an HDF5
dataset that is contiguous and uncompressed (its file offset is asked once, then h5py is closed).
Chunked HDF5 datasets are read whole chunk by whole chunk, never with h5py's per-index selection.

``prefetch`` and ``span_hints`` + ``issue`` only ask the kernel to start reading
(``POSIX_FADV_WILLNEED``) the pages a later ``read`` of those rows will touch: exact pages for
scattered rows, long ranges for a contiguous span. They never change what ``read`` returns, only
how soon it can. A hint holds the object owning its descriptor, so the descriptor outlives it.
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ShardFormatError
from .manifest import HDF5_FILE_ROLE, ArraySpec, ShardInfo

PAGE = mmap.PAGESIZE
SMALL_SAMPLE_PAGE_SHARE = 64  # samples this many to a page (labels): hint the whole array once, not per page
_FADVICE = {getattr(mmap, f"MADV_{name}"): getattr(os, f"POSIX_FADV_{name}")
            for name in ("NORMAL", "RANDOM", "SEQUENTIAL") if hasattr(mmap, f"MADV_{name}")}


Hint = tuple["MappedArray | ChunkedArray", int, int]  # (holder of the file descriptor, byte offset, length)


def issue(hints: list[Hint]) -> None:
    """Queue reads of the hinted byte ranges into the page cache; returns without waiting for them."""
    for holder, start, length in hints:
        os.posix_fadvise(holder.fd, start, length, os.POSIX_FADV_WILLNEED)


class ShardReader(Protocol):
    """Reads rows of one shard; ``rows`` is sorted ascending (duplicates allowed)."""

    def read(self, key: str, rows: np.ndarray) -> np.ndarray: ...

    def advise(self, advice: int) -> None: ...

    def array(self, key: str) -> MappedArray | ChunkedArray: ...


def prefetch_mapped_rows(arrays: list[MappedArray], counts: list[int], rows: np.ndarray) -> None:
    """Hint sorted ``rows`` whose first ``counts[0]`` lie in ``arrays[0]``, the next in ``arrays[1]``...

    One pass over the whole batch rather than per shard: in exact order a batch of 64 touches about
    as many shards, and per-shard numpy calls would cost more than the hints save. Pages shared or
    adjacent within one file are merged into one hint.
    """
    if not arrays:
        return
    size = arrays[0].sample_bytes
    if size * SMALL_SAMPLE_PAGE_SHARE <= PAGE:
        for array in arrays:
            array.prefetch_whole_once()
        return
    fds = [array.fd for array, count in zip(arrays, counts) for _ in range(count)]
    bases = np.repeat(np.array([array.offset for array in arrays], dtype=np.int64), counts)
    starts = bases + np.asarray(rows, dtype=np.int64) * size
    run_fd, run_first, run_last = -1, 0, -2
    for fd, first, last in zip(fds, (starts // PAGE).tolist(), ((starts + size - 1) // PAGE).tolist()):
        if fd == run_fd and first <= run_last + 1:
            run_last = max(run_last, last)
            continue
        if run_fd >= 0:
            os.posix_fadvise(run_fd, run_first * PAGE, (run_last - run_first + 1) * PAGE, os.POSIX_FADV_WILLNEED)
        run_fd, run_first, run_last = fd, first, last
    os.posix_fadvise(run_fd, run_first * PAGE, (run_last - run_first + 1) * PAGE, os.POSIX_FADV_WILLNEED)


class MappedArray:
    """A read-only memory map of an array stored plainly at ``offset`` in ``path``.

    A descriptor stays open beside the map so hints can go through ``posix_fadvise``, which, unlike
    ``mmap.madvise``, releases the GIL while the kernel queues the reads.
    """

    def __init__(self, path: Path, offset: int, spec: ArraySpec, num_samples: int) -> None:
        self.path, self.offset, self.sample_bytes = path, offset, spec.sample_bytes
        expected = offset + num_samples * spec.sample_bytes
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        size = os.fstat(self.fd).st_size
        if size < expected:
            raise ShardFormatError(f"{path}: truncated: {size} bytes, its array needs {expected}")
        self._map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) if size else None
        self.array = np.frombuffer(self._map, dtype=np.dtype(spec.dtype), count=num_samples * int(np.prod(spec.shape)),
                                   offset=offset).reshape((num_samples, *spec.shape))
        self._whole_hinted = False

    def advise(self, advice: int, start: int = 0, length: int | None = None) -> None:
        """``madvise`` on a byte range of the mapping (page-aligned outward)."""
        if self._map is None:
            return
        aligned = start - start % PAGE
        end = len(self._map) if length is None else min(len(self._map), start + length)
        self._map.madvise(advice, aligned, end - aligned)

    def prefetch(self, rows: np.ndarray) -> None:
        """Queue reads of the pages that sorted ``rows`` lie on (the whole array if samples are tiny)."""
        if len(rows) and self._map is not None:
            prefetch_mapped_rows([self], [len(rows)], rows)

    def prefetch_whole_once(self) -> None:
        """Tiny samples (labels): every page is needed within a few batches, so read it all, once."""
        if not self._whole_hinted:
            self._whole_hinted = True
            issue(self.span_hints(0, len(self.array)))

    def span_hints(self, first: int, last: int) -> list[Hint]:
        """One sequential read of rows ``[first, last)``."""
        if last <= first or self._map is None or not self.sample_bytes:
            return []
        start = self.offset + first * self.sample_bytes
        aligned = start - start % PAGE
        return [(self, aligned, self.offset + last * self.sample_bytes - aligned)]


class ChunkedArray:
    """An h5py dataset stored in chunks (e.g. compressed), with the file descriptor for hints."""

    def __init__(self, dataset, fd: int | None) -> None:  # noqa: ANN001 - an h5py.Dataset
        self.dataset, self.fd = dataset, fd
        self.chunk_rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])

    def chunk_hints(self, chunks: np.ndarray) -> list[Hint]:
        """The stored (compressed) bytes of the given sorted chunk numbers, neighbours in the file merged."""
        if self.fd is None or self.dataset.chunks is None:
            return []
        tail = (0,) * (self.dataset.ndim - 1)
        hints: list[Hint] = []
        for chunk in chunks.tolist():
            info = self.dataset.id.get_chunk_info_by_coord((chunk * self.chunk_rows, *tail))
            if info.byte_offset is None:
                continue
            if hints and hints[-1][1] + hints[-1][2] == info.byte_offset:
                hints[-1] = (self, hints[-1][1], hints[-1][2] + info.size)
            else:
                hints.append((self, info.byte_offset, info.size))
        return hints

    def prefetch(self, rows: np.ndarray) -> None:
        """Queue reads of the chunks holding sorted ``rows``."""
        issue(self.chunk_hints(np.unique(np.asarray(rows) // self.chunk_rows)))

    def span_hints(self, first: int, last: int) -> list[Hint]:
        if last <= first:
            return []
        return self.chunk_hints(np.arange(first // self.chunk_rows, (last - 1) // self.chunk_rows + 1))

    def advise(self, advice: int) -> None:
        if self.fd is not None and advice in _FADVICE:
            os.posix_fadvise(self.fd, 0, 0, _FADVICE[advice])


def _npy_data_offset(path: Path, spec: ArraySpec, num_samples: int) -> int:
    with open(path, "rb") as stream:
        try:
            version = np.lib.format.read_magic(stream)
            reader = np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
            shape, fortran, dtype = reader(stream)
        except ValueError as exc:
            raise ShardFormatError(f"{path}: not a valid .npy file: {exc}") from exc
        if tuple(shape) != (num_samples, *spec.shape) or dtype != np.dtype(spec.dtype) or fortran:
            raise ShardFormatError(f"{path}: holds {dtype} {tuple(shape)}, the manifest says "
                                   f"{spec.dtype} {(num_samples, *spec.shape)}")
        return stream.tell()


class _LazyPerProcess:
    """Open resources on first use in each process; drop them when pickled or after a fork.

    Threads of one process may race to open the same resource: each opens its own, the first one
    stored is kept (``setdefault``) and the others are dropped, so no lock is needed (none could be
    held across a fork either).
    """

    _opened: dict[str, object]
    _pid: int | None = None

    def _resources(self) -> dict[str, object]:
        if self._pid != os.getpid():
            self._opened, self._pid = {}, os.getpid()
        return self._opened

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_opened", None)
        state.pop("_pid", None)
        return state


class NpyShardReader(_LazyPerProcess):
    """Rows of a ``.npy`` shard by sorted memmap gather."""

    def __init__(self, directory: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> None:
        self.paths = {key: Path(directory) / shard.files[key].name for key in specs}
        self.specs, self.num_samples = dict(specs), shard.num_samples
        self.advice: int | None = None

    def mapped(self, key: str) -> MappedArray:
        opened = self._resources()
        if key not in opened:
            path, spec = self.paths[key], self.specs[key]
            mapped = MappedArray(path, _npy_data_offset(path, spec, self.num_samples), spec, self.num_samples)
            if self.advice is not None:
                mapped.advise(self.advice)
            opened.setdefault(key, mapped)
        return opened[key]  # type: ignore[return-value]

    def read(self, key: str, rows: np.ndarray) -> np.ndarray:
        return self.mapped(key).array[rows]

    def array(self, key: str) -> MappedArray:
        """The mapped array (opened on first use): what ``prefetch``/``prefetch_span`` hints go to."""
        return self.mapped(key)

    def advise(self, advice: int) -> None:
        """Remember a madvise hint (e.g. MADV_RANDOM) for every mapping, now and after re-opening."""
        self.advice = advice
        for mapped in self._resources().values():
            mapped.advise(advice)  # type: ignore[attr-defined]


class Hdf5ShardReader(_LazyPerProcess):
    """Rows of an HDF5 shard: mapped directly when contiguous, else whole chunks then gather.

    h5py's chunk cache is turned off: whole chunks are read once per gather, so a cache would only
    hold anonymous memory (1 MiB per open dataset by default) that grows with the number of shards.
    """

    def __init__(self, directory: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> None:
        self.path = Path(directory) / shard.files[HDF5_FILE_ROLE].name
        self.specs, self.num_samples = dict(specs), shard.num_samples
        self.advice: int | None = None

    def _open(self) -> dict[str, object]:
        import h5py

        try:
            handle = h5py.File(self.path, "r", rdcc_nbytes=0)
        except OSError as exc:
            raise ShardFormatError(f"{self.path}: cannot open as HDF5: {exc}") from exc
        opened: dict[str, object] = {}
        for key, spec in self.specs.items():
            dataset = self._checked_dataset(handle, key, spec)
            offset = dataset.id.get_offset()
            if dataset.chunks is None and dataset.compression is None and offset is not None:
                opened[key] = MappedArray(self.path, offset, spec, self.num_samples)
            else:
                opened[key] = ChunkedArray(dataset, _vfd_handle(handle))
            if self.advice is not None:
                opened[key].advise(self.advice)  # type: ignore[attr-defined]
        if not any(isinstance(value, ChunkedArray) for value in opened.values()):
            handle.close()  # every array is mapped: no HDF5 handle needs to stay open
        return opened

    def _checked_dataset(self, handle, key: str, spec: ArraySpec):  # noqa: ANN001, ANN202 - h5py objects
        if key not in handle:
            raise ShardFormatError(f"{self.path}: no dataset {key!r}")
        dataset = handle[key]
        if dataset.shape != (self.num_samples, *spec.shape) or dataset.dtype != np.dtype(spec.dtype):
            raise ShardFormatError(f"{self.path}: dataset {key!r} is {dataset.dtype} {dataset.shape}, "
                                   f"the manifest says {spec.dtype} {(self.num_samples, *spec.shape)}")
        return dataset

    def array(self, key: str) -> MappedArray | ChunkedArray:
        resources = self._resources()
        if key not in resources:
            for name, value in self._open().items():
                resources.setdefault(name, value)
        return resources[key]  # type: ignore[return-value]

    def source(self, key: str) -> object:
        """The memory map of a contiguous dataset, else the h5py dataset itself."""
        array = self.array(key)
        return array.dataset if isinstance(array, ChunkedArray) else array

    def read(self, key: str, rows: np.ndarray) -> np.ndarray:
        array = self.array(key)
        if isinstance(array, MappedArray):
            return array.array[rows]
        return _read_whole_chunks(array.dataset, rows)

    def advise(self, advice: int) -> None:
        """madvise for mapped datasets, the matching posix_fadvise on HDF5's own descriptor otherwise."""
        self.advice = advice
        for value in self._resources().values():
            value.advise(advice)  # type: ignore[attr-defined]


def _vfd_handle(handle) -> int | None:  # noqa: ANN001 - an h5py.File
    """HDF5's file descriptor (sec2 driver), or None for drivers without one."""
    try:
        fd = handle.id.get_vfd_handle()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return fd if isinstance(fd, int) else None


def _read_whole_chunks(dataset, rows: np.ndarray) -> np.ndarray:  # noqa: ANN001 - an h5py.Dataset
    """Gather sorted ``rows`` by reading each needed chunk once as a contiguous slice."""
    chunk_rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])
    out = np.empty((len(rows), *dataset.shape[1:]), dtype=dataset.dtype)
    chunk_of_row = rows // chunk_rows
    bounds = np.flatnonzero(np.diff(chunk_of_row)) + 1
    for first, last in zip(np.r_[0, bounds], np.r_[bounds, len(rows)]):
        start = int(chunk_of_row[first]) * chunk_rows
        block = dataset[start:min(start + chunk_rows, dataset.shape[0])]
        out[first:last] = block[rows[first:last] - start]
    return out


def make_reader(fmt: str, directory: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> ShardReader:
    return (NpyShardReader if fmt == "npy" else Hdf5ShardReader)(directory, shard, specs)
