"""Random access to one split of a sharded dataset: ``gather(indices)`` reads exactly those samples.

Only the manifest is read on construction; each shard's reader opens its files the first time a
sample from it is needed. A gather over several shards sorts the wanted indices so every shard is
touched once, in ascending file order, then puts the rows back in the order asked for; a split in
one memory-mapped shard is gathered directly in that order.
``prefetch`` and ``span_hints`` (with ``storage.issue``) ask the kernel to start reading what a later
gather will touch, without waiting and without changing what it returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .manifest import Manifest, SplitInfo, read_manifest
from .readers import ShardReader, make_reader
from .storage import Hint, MappedArray, prefetch_mapped_rows


class ShardedDataset:
    """One split of a dataset on disk; pickles as its path, split name and access hint, never as data."""

    def __init__(self, directory: str | os.PathLike, split: str = "train", manifest: Manifest | None = None) -> None:
        self.directory = Path(directory)
        self.split_name = split
        self.manifest = manifest if manifest is not None else read_manifest(self.directory)
        self.info: SplitInfo = self.manifest.split(split)
        self.advice: int | None = None
        self._readers: list[ShardReader | None] = [None] * len(self.info.shards)
        self._arrays: dict[str, list[np.ndarray | None]] = {}
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.info.num_samples

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.info.arrays)

    def reader(self, shard: int) -> ShardReader:
        reader = self._readers[shard]
        if reader is None:
            reader = make_reader(self.manifest.format, self.directory, self.info.shards[shard], self.info.arrays)
            if self.advice is not None:
                reader.advise(self.advice)
            self._readers[shard] = reader
        return reader

    def _shard_runs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """Sort ``indices`` into file order: (order, offsets in shard, [(shard, first, last)] runs)."""
        order = np.argsort(indices, kind="stable")
        shards, offsets = self.info.locate(indices[order])
        edges = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), len(indices)]
        runs = list(zip(shards[edges[:-1]].tolist(), edges[:-1], edges[1:])) if len(indices) else []
        return order, offsets, runs

    def gather(self, indices: np.ndarray, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Samples ``indices`` (any order, repeats allowed) as fresh C-contiguous arrays in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        keys = self.keys if keys is None else keys
        if len(self._readers) == 1:
            single = self._gather_single_shard(indices, keys)
            if single is not None:
                return single
        order, offsets, runs = self._shard_runs(indices)
        out = {}
        for key in keys:
            spec = self.info.arrays[key]
            mapped = self._mapped(key)
            in_file_order = np.empty((len(indices), *spec.shape), dtype=spec.dtype)
            for shard, first, last in runs:
                array = mapped[shard]
                if array is None:  # not opened yet in this process, or read whole chunks (compressed HDF5)
                    array = self._open_mapped(key, shard)
                    if array is None:
                        in_file_order[first:last] = self.reader(shard).read(key, offsets[first:last])
                        continue
                array.take(offsets[first:last], axis=0, out=in_file_order[first:last], mode="clip")
            out[key] = np.empty_like(in_file_order)
            out[key][order] = in_file_order
        return out

    def _gather_single_shard(self, indices: np.ndarray, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """One memory-mapped shard (a whole MNIST split): one ``take`` per array, no sorting or scatter.

        Sorting only pays when rows must be read in file order (several shards, chunked HDF5); here
        the copy in request order costs what fancy indexing of an in-RAM array costs.
        """
        if indices.size and indices.min() < 0:  # take() raises past the end, but wraps negatives
            raise IndexError(f"sample index out of range [0, {len(self)})")
        out = {}
        for key in keys:
            array = self._mapped(key)[0]
            if array is None and (array := self._open_mapped(key, 0)) is None:
                return None  # compressed HDF5: the general path reads whole chunks in order
            out[key] = array.take(indices, axis=0)
        return out

    def _mapped(self, key: str) -> list[np.ndarray | None]:
        """Per process: shard -> the memory-mapped array of ``key``, so a gather skips the reader layers."""
        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        return self._arrays.get(key) or self._arrays.setdefault(key, [None] * len(self._readers))

    def _open_mapped(self, key: str, shard: int) -> np.ndarray | None:
        array = self.reader(shard).array(key)
        if not isinstance(array, MappedArray):
            return None
        self._mapped(key)[shard] = array.array
        return array.array

    def prefetch(self, indices: np.ndarray, keys: tuple[str, ...] | None = None) -> None:
        """Queue reads of the pages a ``gather(indices, keys)`` will touch; returns without waiting."""
        _order, offsets, runs = self._shard_runs(np.asarray(indices, dtype=np.int64))
        readers = [self.reader(shard) for shard, _first, _last in runs]
        for key in self.keys if keys is None else keys:
            arrays = [reader.array(key) for reader in readers]
            if all(isinstance(array, MappedArray) for array in arrays):
                prefetch_mapped_rows(arrays, [last - first for _shard, first, last in runs], offsets)
            else:
                for array, (_shard, first, last) in zip(arrays, runs):
                    array.prefetch(offsets[first:last])

    def span_hints(self, first: int, last: int, keys: tuple[str, ...] | None = None) -> list[Hint]:
        """Long sequential reads covering samples ``[first, last)`` (a block), shard by shard, for ``issue``."""
        starts = self.info.shard_starts
        first, last = max(0, first), min(last, len(self))
        shard = int(np.searchsorted(starts, first, side="right")) - 1
        hints: list[Hint] = []
        while first < last:
            end = min(last, int(starts[shard + 1]))
            for key in self.keys if keys is None else keys:
                hints += self.reader(shard).array(key).span_hints(first - int(starts[shard]), end - int(starts[shard]))
            first, shard = end, shard + 1
        return hints

    def advise(self, advice: int) -> None:
        """A madvise hint (e.g. MADV_RANDOM) for every shard: now for open ones, on opening for the rest.

        Kept through pickling, so worker processes started with ``spawn`` read with the same hint.
        """
        self.advice = advice
        for reader in self._readers:
            if reader is not None:
                reader.advise(advice)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._readers)  # readers re-open lazily in the new process
        state["_arrays"], state["_pid"] = {}, None
        return state

    def __repr__(self) -> str:
        return (f"ShardedDataset({str(self.directory)!r}, split={self.split_name!r}, samples={len(self)}, "
                f"format={self.manifest.format!r}, shards={len(self.info.shards)})")
