"""``as_tf_dataset``: the same batches as :class:`StreamingGenerator`, as a ``tf.data`` pipeline.

The pipeline is a stream of step numbers (the index pipeline, already at batch granularity), then
one vectorised read per batch through ``tf.numpy_function`` run in parallel (AUTOTUNE), static
shapes restored with ``ensure_shape``, and ``prefetch``. Step ``s`` is batch ``s % B`` of epoch
``s // B`` (``B`` batches per epoch), read by the same :class:`~streamload.loader.BatchLoader` as the
generator, so batch ``i`` of epoch ``e`` is bit-identical to ``StreamingGenerator(...)[i]`` in epoch ``e``.

Why epochs are an argument, not a counter of passes: a ``tf.data`` pipeline cannot know which pass
over it is the "real" one. Keras' ``fit`` opens and discards an iterator to build the model
(``_symbolic_build``), ``prefetch`` reads ahead as soon as an iterator exists, and distributed
iterators are created outside Python's ``__iter__``; a counter advanced per iteration would skip or
repeat epochs depending on those internals. Instead the dataset holds epochs
``[first_epoch, first_epoch + epochs)`` back to back (or every epoch from ``first_epoch`` on with
``epochs=None``), so its contents depend only on its arguments and ``cardinality()`` is known.
Train with ``fit(ds, epochs=E, steps_per_epoch=batches_per_epoch(...))``: with ``steps_per_epoch``
Keras keeps one iterator across its epochs, so its epoch ``e`` is data epoch ``first_epoch + e``.
Without ``steps_per_epoch`` Keras re-iterates the dataset every epoch and would see the same order again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .batching import BatchOptions, finish_batch
from .dataset import ShardedDataset
from .errors import InvalidOptionError
from .loader import BatchLoader
from .sampler import IndexSampler, SamplerOptions, shuffle_mode

OnRead = Callable[[int, int, np.ndarray], None]


def pipeline_options(batch_size: int, num_pipelines: int, pipeline_index: int,
                     input_context: Any) -> tuple[int, int, int]:
    """(batch size per pipeline, num_pipelines, pipeline_index), from an InputContext if one is given.

    With an ``input_context``, ``batch_size`` is the global batch: each replica gets an equal part.
    """
    if input_context is None:
        return batch_size, num_pipelines, pipeline_index
    if (num_pipelines, pipeline_index) != (1, 0):
        raise InvalidOptionError("pass either input_context or num_pipelines/pipeline_index, not both")
    replicas = input_context.num_replicas_in_sync
    if batch_size <= 0 or batch_size % replicas:
        raise InvalidOptionError(f"the global batch_size {batch_size} must be a positive multiple of the "
                                 f"{replicas} replicas in sync")
    return batch_size // replicas, input_context.num_input_pipelines, input_context.input_pipeline_id


def batches_per_epoch(directory: str | os.PathLike, split: str = "train", batch_size: int = 64, *,
                      drop_remainder: bool = False, num_pipelines: int = 1, input_context: Any = None) -> int:
    """Batches one pipeline delivers per epoch: ``steps_per_epoch`` for ``fit`` with one replica per
    pipeline (with several replicas per pipeline, divide by them, rounding up)."""
    batch, pipelines, _ = pipeline_options(batch_size, num_pipelines, 0, input_context)
    sampling = SamplerOptions(batch_size=batch, drop_remainder=drop_remainder, num_pipelines=pipelines)
    return IndexSampler(len(ShardedDataset(directory, split)), sampling).num_batches


def as_tf_dataset(directory: str | os.PathLike, split: str = "train", batch_size: int = 64, *,
                  shuffle: bool | str = True, seed: int = 0, to_fit: bool = True, one_hot: bool = True,
                  num_classes: int = 10, normalize: bool = True, channel_axis: bool = True,
                  drop_remainder: bool = False, block_size: int = 4096, window_blocks: int = 8,
                  num_pipelines: int = 1, pipeline_index: int = 0, input_context: Any = None,
                  epochs: int | None = 1, first_epoch: int = 0, on_read: OnRead | None = None) -> tf.data.Dataset:
    """Batches of one split of a sharded dataset as a ``tf.data.Dataset``, read from disk batch by batch.

    Takes the generator's arguments (see :class:`~streamload.StreamingGenerator`; a per-batch
    ``transform`` is left to ``dataset.map``), and:

    Args:
        input_context: a ``tf.distribute.InputContext`` (``distribute_datasets_from_function``
            passes one): this pipeline reads only its disjoint share of each epoch, and
            ``batch_size`` is the global batch, so each element holds
            ``input_context.get_per_replica_batch_size(batch_size)`` samples. Without it,
            ``num_pipelines``/``pipeline_index`` shard the same way and ``batch_size`` is per element.
        epochs: how many epochs the dataset holds, back to back; ``None`` for every epoch from
            ``first_epoch`` on (infinite cardinality). See the module docstring for why.
        first_epoch: the first epoch's number (to resume, or to continue after another dataset).
        on_read: called as ``on_read(epoch, batch, indices)`` with the global sample indices of
            every batch read (e.g. to audit which samples a worker reads); runs in tf.data's
            reader threads, so it must be thread-safe.

    Elements are ``(x, y)`` (``x`` alone if not ``to_fit``); the batch dimension is static only
    with ``drop_remainder``, every other dimension always is.
    """
    batch, pipelines, index = pipeline_options(batch_size, num_pipelines, pipeline_index, input_context)
    sampling = SamplerOptions(batch_size=batch, shuffle=shuffle_mode(shuffle), seed=seed,
                              drop_remainder=drop_remainder, block_size=block_size, window_blocks=window_blocks,
                              num_pipelines=pipelines, pipeline_index=index)
    batching = BatchOptions(to_fit=to_fit, one_hot=one_hot, num_classes=num_classes, normalize=normalize,
                            channel_axis=channel_axis)
    return loader_dataset(BatchLoader(directory, split, sampling, batching), epochs=epochs, first_epoch=first_epoch,
                          on_read=on_read)


def loader_dataset(loader: BatchLoader, *, epochs: int | None = 1, first_epoch: int = 0,
                   on_read: OnRead | None = None) -> tf.data.Dataset:
    """The pipeline over any loader (``as_tf_dataset`` builds one; tools may pass a subclass)."""
    if loader.transform is not None:
        raise InvalidOptionError("a transform cannot run inside the tf.data pipeline; use dataset.map instead")
    num_batches = loader.num_batches
    if num_batches == 0:
        raise InvalidOptionError(f"{loader.dataset!r} gives no batch of {loader.sampling.batch_size} samples "
                                 f"to pipeline {loader.sampling.pipeline_index} of {loader.sampling.num_pipelines}")
    if (epochs is not None and epochs < 0) or first_epoch < 0:
        raise InvalidOptionError(f"epochs and first_epoch must not be negative, got {epochs}, {first_epoch}")
    start = first_epoch * num_batches
    steps = (tf.data.Dataset.counter(start) if epochs is None
             else tf.data.Dataset.range(start, start + epochs * num_batches))
    specs = output_specs(loader)
    dtypes = [spec.dtype for spec in specs]

    def read(step: np.ndarray) -> list[np.ndarray]:
        epoch, batch = divmod(int(step), num_batches)
        out = loader.load(epoch, batch)
        if on_read is not None:
            on_read(epoch, batch, loader.sampler.batch_indices(epoch, batch))
        return list(out) if isinstance(out, tuple) else [out]

    def read_batch(step: tf.Tensor) -> tuple[tf.Tensor, ...] | tf.Tensor:
        tensors = tf.numpy_function(read, [step], dtypes, stateful=False, name="streamload_read_batch")
        shaped = tuple(tf.ensure_shape(tensor, spec.shape) for tensor, spec in zip(tensors, specs))
        return shaped if loader.batching.to_fit else shaped[0]

    batches = steps.map(read_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def output_specs(loader: BatchLoader) -> list[tf.TensorSpec]:
    """Dtypes and shapes of the loader's batches, found by finishing an empty batch the same way."""
    arrays = loader.dataset.info.arrays
    empty = {key: np.empty((0, *arrays[key].shape), dtype=np.dtype(arrays[key].dtype)) for key in loader.batching.keys}
    finished = finish_batch(empty, loader.batching)
    parts = finished if isinstance(finished, tuple) else (finished,)
    batch_dim = loader.sampling.batch_size if loader.sampling.drop_remainder else None
    return [tf.TensorSpec((batch_dim, *part.shape[1:]), tf.as_dtype(part.dtype)) for part in parts]
