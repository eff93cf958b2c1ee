"""Shard readers: fetch given rows of one shard, one implementation per way of storing it.

Every reader maps or opens its files lazily and per process (keyed by pid), so a reader made in
a parent process is safe to use after ``fork`` and pickles as paths only (``spawn``). Reads go
through memory maps wherever the bytes are laid out plainly on disk: a ``.npy`` file, or an HDF5
dataset that is contiguous and uncompressed (its file offset is asked once, then h5py is closed).
Chunked HDF5 datasets are read whole chunk by whole chunk, never with h5py's per-index selection.
The bytes themselves are reached through :mod:`streamload.storage` (memory maps, read hints).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ShardFormatError
from .manifest import HDF5_FILE_ROLE, ArraySpec, ShardInfo
from .storage import ChunkedArray, MappedArray


class ShardReader(Protocol):
    """Reads rows of one shard; ``rows`` is sorted ascending (duplicates allowed)."""

    def read(self, key: str, rows: np.ndarray) -> np.ndarray: ...

    def advise(self, advice: int) -> None: ...

    def array(self, key: str) -> MappedArray | ChunkedArray: ...


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
