"""The Keras-free core of the generator: (epoch, batch number) -> a model-ready batch from disk.

Kept apart from Keras so the tf.data path, benchmarks and other frameworks use the same code, and
so it pickles small: a dataset path, a few options and the transform, never any data.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from .batching import Batch, BatchOptions, Transform, finish_batch
from .dataset import ShardedDataset
from .sampler import IndexSampler, SamplerOptions


class BatchLoader:
    """Reads batch ``i`` of epoch ``e``: only that batch's samples, gathered in sorted file order."""

    def __init__(self, directory: str | os.PathLike, split: str = "train",
                 sampling: SamplerOptions = SamplerOptions(), batching: BatchOptions = BatchOptions(),
                 transform: Transform | None = None) -> None:
        self.dataset = ShardedDataset(Path(directory), split)
        self.sampling, self.batching, self.transform = sampling, batching, transform
        self.sampler = IndexSampler(len(self.dataset), sampling)
        if sampling.shuffle == "exact" and hasattr(mmap, "MADV_RANDOM"):
            self.dataset.advise(mmap.MADV_RANDOM)  # random order: kernel readahead would read ~150x the bytes

    @property
    def num_batches(self) -> int:
        return self.sampler.num_batches

    def load(self, epoch: int, batch: int) -> Batch:
        indices = self.sampler.batch_indices(epoch, batch)
        arrays = self.dataset.gather(indices, self.batching.keys)
        return finish_batch(arrays, self.batching, self.transform)

    def reference_batch(self, arrays: dict[str, np.ndarray], epoch: int, batch: int) -> Batch:
        """The same batch gathered from in-memory ``arrays`` instead of disk (tests, benchmarks)."""
        indices = self.sampler.batch_indices(epoch, batch)
        return finish_batch({key: arrays[key][indices] for key in self.batching.keys}, self.batching, self.transform)
