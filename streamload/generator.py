"""``StreamingGenerator``: a Keras ``PyDataset`` that reads each batch from on-disk shards.

This is the only module of the generator path that imports Keras; everything it does per batch
lives in :class:`~streamload.loader.BatchLoader`.
"""

from __future__ import annotations

import os
from typing import Any

import keras

from .batching import Batch, BatchOptions, Transform
from .epochs import EpochClock
from .errors import InvalidOptionError
from .loader import BatchLoader
from .prefetch import DEFAULT_PREFETCH_BATCHES
from .sampler import SamplerOptions, shuffle_mode


class StreamingGenerator(keras.utils.PyDataset):
    """Batches of one split of a sharded dataset, read from disk batch by batch.

    Batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the order Keras asks for
    batches in (``fit(shuffle=True)`` shuffles it), worker threads or processes, and resuming all
    give the same data. Pass ``shuffle=False`` to ``fit``: the generator already shuffles exactly.

    Args:
        directory: dataset folder holding ``manifest.json``.
        split: split name in the manifest, e.g. ``"train"`` or ``"test"``.
        batch_size: samples per batch; the last batch is shorter unless ``drop_remainder``.
        shuffle: ``True``/``"exact"`` (uniform order per epoch), ``"block"`` (cold storage: shuffled
            contiguous blocks, see README), ``False``/``"none"``.
        seed: with the epoch number, determines the order.
        to_fit: return ``(x, y)``; ``False`` returns ``x`` alone.
        one_hot, num_classes: one-hot float32 labels, or sparse int32 labels.
        normalize: integer pixels to float32 in [0, 1].
        channel_axis: add a trailing channel axis to 2-D samples.
        drop_remainder: drop the last partial batch.
        transform: ``transform(x, y) -> (x, y)`` applied to each finished batch (``y`` is None when
            ``to_fit=False``); must pickle for ``use_multiprocessing=True``.
        block_size, window_blocks: block shuffle geometry, in samples and blocks.
        prefetch_batches: how many batches ahead to ask the kernel to read while batches are requested
            in order (0: off); only the timing changes, never the data. See README, cold storage.
        num_pipelines, pipeline_index: read only this pipeline's disjoint share of each epoch;
            ``input_context`` (a ``tf.distribute.InputContext``) sets both.
        workers, use_multiprocessing, max_queue_size: passed to ``keras.utils.PyDataset``.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", batch_size: int = 64, *,
                 shuffle: bool | str = True, seed: int = 0, to_fit: bool = True, one_hot: bool = True,
                 num_classes: int = 10, normalize: bool = True, channel_axis: bool = True,
                 drop_remainder: bool = False, transform: Transform | None = None, block_size: int = 4096,
                 window_blocks: int = 8, prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
                 num_pipelines: int = 1, pipeline_index: int = 0,
                 input_context: Any = None, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if input_context is not None:
            num_pipelines, pipeline_index = input_context.num_input_pipelines, input_context.input_pipeline_id
        sampling = SamplerOptions(batch_size=batch_size, shuffle=shuffle_mode(shuffle), seed=seed,
                                  drop_remainder=drop_remainder, block_size=block_size,
                                  window_blocks=window_blocks, num_pipelines=num_pipelines,
                                  pipeline_index=pipeline_index)
        batching = BatchOptions(to_fit=to_fit, one_hot=one_hot, num_classes=num_classes,
                                normalize=normalize, channel_axis=channel_axis)
        self.loader = BatchLoader(directory, split, sampling, batching, transform, prefetch_batches)
        self.clock = EpochClock()
        self._skip = 0  # batches of the resumed epoch already consumed before load_state_dict
        self._position = 0  # batches handed out in order during this epoch, for state_dict

    @property
    def epoch(self) -> int:
        return self.clock.epoch

    def __len__(self) -> int:
        return self.loader.num_batches - self._skip

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        self.clock.batch_read()
        self._position = max(self._position, index + 1)
        return self.loader.load(self.clock.epoch, index + self._skip)

    def on_epoch_begin(self) -> None:
        before = self.clock.epoch
        self.clock.begin()
        self._epoch_changed(before)

    def on_epoch_end(self) -> None:
        before = self.clock.epoch
        self.clock.end()
        self._epoch_changed(before)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (e.g. in a custom training loop); the order depends only on it and the seed."""
        before = self.clock.epoch
        self.clock.set(epoch)
        self._epoch_changed(before)

    def _epoch_changed(self, before: int) -> None:
        if self.clock.epoch != before:
            self._skip = self._position = 0

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        """Where this epoch stands: ``position`` batches consumed (default: the highest read in order)."""
        done = self._skip + (self._position if position is None else position)
        return {"seed": self.loader.sampling.seed, "epoch": self.clock.epoch, "position": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: this epoch continues at ``position``, so ``self[0]`` is the next unseen batch."""
        if state["seed"] != self.loader.sampling.seed:
            raise InvalidOptionError(f"state was saved with seed {state['seed']}, this generator has seed "
                                     f"{self.loader.sampling.seed}; the orders would differ")
        if not 0 <= state["position"] <= self.loader.num_batches:
            raise InvalidOptionError(f"position {state['position']} outside [0, {self.loader.num_batches}]")
        self.clock.set(state["epoch"])
        self._skip, self._position = state["position"], 0

    def __repr__(self) -> str:
        return (f"StreamingGenerator({self.loader.dataset!r}, batch_size={self.loader.sampling.batch_size}, "
                f"shuffle={self.loader.sampling.shuffle!r}, epoch={self.epoch}, batches={len(self)})")
