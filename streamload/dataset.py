"""Random access to one split of a sharded dataset: ``gather(indices)`` reads exactly those samples.

Only the manifest is read on construction; each shard's reader opens its files the first time a
sample from it is needed. A gather sorts the wanted indices so every shard is touched once, reads
in ascending file order, and writes the rows straight to their places in the output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .manifest import Manifest, SplitInfo, read_manifest
from .readers import ShardReader, make_reader


class ShardedDataset:
    """One split of a dataset on disk; pickles as its path and split name, never as data."""

    def __init__(self, directory: str | os.PathLike, split: str = "train", manifest: Manifest | None = None) -> None:
        self.directory = Path(directory)
        self.split_name = split
        self.manifest = manifest if manifest is not None else read_manifest(self.directory)
        self.info: SplitInfo = self.manifest.split(split)
        self._readers: list[ShardReader | None] = [None] * len(self.info.shards)

    def __len__(self) -> int:
        return self.info.num_samples

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.info.arrays)

    def reader(self, shard: int) -> ShardReader:
        reader = self._readers[shard]
        if reader is None:
            reader = make_reader(self.manifest.format, self.directory, self.info.shards[shard], self.info.arrays)
            self._readers[shard] = reader
        return reader

    def gather(self, indices: np.ndarray, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Samples ``indices`` (any order, repeats allowed) as fresh C-contiguous arrays in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        keys = self.keys if keys is None else keys
        order = np.argsort(indices, kind="stable")
        shards, offsets = self.info.locate(indices[order])
        out = {key: np.empty((len(indices), *self.info.arrays[key].shape), dtype=self.info.arrays[key].dtype)
               for key in keys}
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for first, last in zip(np.r_[0, bounds], np.r_[bounds, len(indices)]):
            if first == last:
                continue
            reader = self.reader(int(shards[first]))
            for key in keys:
                out[key][order[first:last]] = reader.read(key, offsets[first:last])
        return out

    def advise(self, advice: int) -> None:
        """Pass a madvise hint to every shard, opened or not (e.g. MADV_RANDOM for exact shuffling)."""
        for shard in range(len(self._readers)):
            self.reader(shard).advise(advice)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._readers)  # readers re-open lazily in the new process
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"ShardedDataset({str(self.directory)!r}, split={self.split_name!r}, samples={len(self)}, "
                f"format={self.manifest.format!r}, shards={len(self.info.shards)})")
