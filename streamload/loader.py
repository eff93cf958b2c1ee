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
from .errors import InvalidOptionError
from .prefetch import DEFAULT_PREFETCH_BATCHES, Prefetcher
from .sampler import IndexSampler, SamplerOptions


def access_advice(shuffle: str, prefetching: bool) -> int | None:
    """The madvise hint for a shuffle mode: what the kernel should read on a page fault.

    Exact order is random: readahead would read ~100x the bytes, so a fault reads its page only.
    Block order with prefetching hints every block itself, so faults need no readahead either;
    without prefetching, the kernel's default read-around still finds neighbours in the block.
    """
    if shuffle == "none":
        return getattr(mmap, "MADV_SEQUENTIAL", None)
    if shuffle == "exact" or prefetching:
        return getattr(mmap, "MADV_RANDOM", None)
    return None


class BatchLoader:
    """Reads batch ``i`` of epoch ``e``: only that batch's samples, gathered in sorted file order.

    ``prefetch_batches`` batches ahead are hinted to the kernel while requests come in order (see
    :mod:`streamload.prefetch`); 0 turns hinting off. Either way the batches are the same.
    Safe to call from several threads, and from processes after ``fork`` or unpickling.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train",
                 sampling: SamplerOptions = SamplerOptions(), batching: BatchOptions = BatchOptions(),
                 transform: Transform | None = None, prefetch_batches: int = DEFAULT_PREFETCH_BATCHES) -> None:
        if prefetch_batches < 0:
            raise InvalidOptionError(f"prefetch_batches must be 0 (off) or positive, got {prefetch_batches}")
        self.dataset = ShardedDataset(Path(directory), split)
        self.sampling, self.batching, self.transform = sampling, batching, transform
        self.sampler = IndexSampler(len(self.dataset), sampling)
        self.prefetcher = (Prefetcher(self.dataset, self.sampler, batching.keys, prefetch_batches)
                           if prefetch_batches else None)
        advice = access_advice(sampling.shuffle, self.prefetcher is not None)
        if advice is not None:
            self.dataset.advise(advice)

    @property
    def num_batches(self) -> int:
        return self.sampler.num_batches

    def load(self, epoch: int, batch: int) -> Batch:
        return self.read(self.indices(epoch, batch))

    def indices(self, epoch: int, batch: int) -> np.ndarray:
        """The samples of batch ``batch`` of ``epoch``; the prefetcher hears that it is about to be read."""
        indices = self.sampler.batch_indices(epoch, batch)
        if self.prefetcher is not None:
            self.prefetcher.before_load(epoch, batch, indices)
        return indices

    def read(self, indices: np.ndarray) -> Batch:
        """Gather ``indices`` from disk and finish them into a model-ready batch."""
        return finish_batch(self.dataset.gather(indices, self.batching.keys), self.batching, self.transform)

    def close(self) -> None:
        """Stop this process' block-hinting thread now rather than when the loader is collected."""
        if self.prefetcher is not None:
            self.prefetcher.close()

    def reference_batch(self, arrays: dict[str, np.ndarray], epoch: int, batch: int) -> Batch:
        """The same batch gathered from in-memory ``arrays`` instead of disk (tests, benchmarks)."""
        indices = self.sampler.batch_indices(epoch, batch)
        return finish_batch({key: arrays[key][indices] for key in self.batching.keys}, self.batching, self.transform)
