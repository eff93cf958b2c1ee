"""``as_tf_dataset``: the same batches as :class:`StreamingGenerator`, as a ``tf.data`` pipeline.

The index pipeline comes first and is already cut into batches: a stream of read numbers, each
naming a run of whole batches of one epoch (:class:`ReadPlan`). Each read is one vectorised
gather through ``tf.numpy_function``, run in parallel (AUTOTUNE); ``unbatch`` splits it back into
batches, ``ensure_shape`` restores static shapes, ``assert_cardinality`` keeps the count known, and
``prefetch`` overlaps reading with training. Batch ``i`` of epoch ``e`` holds the samples
``IndexSampler.batch_indices(e, i)``, finished by the same ``BatchFinisher``, so it is bit-identical
to ``StreamingGenerator(...)[i]`` in epoch ``e``.

Why epochs are an argument, not a counter of passes: a ``tf.data`` pipeline cannot know which pass
over it is the "real" one. Under a ``tf.distribute`` strategy Keras' ``fit`` opens an iterator,
takes one batch to build the model and discards it (``_maybe_symbolic_build``); ``prefetch``
reads ahead as soon as an iterator exists; distributed iterators are not made by Python's
``__iter__``. A counter advanced per iteration would skip or repeat epochs with those internals.
Instead the dataset holds epochs ``[first_epoch, first_epoch + epochs)`` back to back (every
epoch from ``first_epoch`` on with ``epochs=None``), so its contents depend only on its arguments
and ``cardinality()`` is known. Train with ``fit(ds, epochs=E, steps_per_epoch=batches_per_epoch(...))``:
with ``steps_per_epoch`` Keras keeps one iterator across its epochs, so its epoch ``e`` is data
epoch ``first_epoch + e``. Without it Keras re-iterates the dataset every epoch: the same order again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import InvalidOptionError
from ..format.records import Records
from ..options import LoaderOptions, check_int
from ..read.epochs import BatchStream, StreamPoint
from ..read.loader import BatchLoader, batches_per_epoch  # noqa: F401 - re-exported for the tf.data user
from ..read.resume import check_state, loader_state

OnRead = Callable[[int, int, np.ndarray], None]
READ_SAMPLES = 1024  # samples per numpy_function call (see ReadPlan)
READ_BYTES = 4 * 2**20  # finished bytes per call at most: large samples are read one batch at a time


def as_tf_dataset(directory: str | os.PathLike, split: str = "train", batch_size: int | None = None, *,
                  options: LoaderOptions | None = None, input_context: Any = None, epochs: int | None = 1,
                  first_epoch: int = 0, state: Mapping[str, Any] | None = None, on_read: OnRead | None = None,
                  **overrides: Any) -> tf.data.Dataset:
    """Batches of one split of a sharded dataset as a ``tf.data.Dataset``: only their samples are read from disk.

    Takes the generator's options (a :class:`~streamload.options.LoaderOptions` and/or its fields as
    keywords; a per-batch ``transform`` is left to ``dataset.map``), and:

    Args:
        input_context: a ``tf.distribute.InputContext`` (``distribute_datasets_from_function``
            passes one): this pipeline reads only its disjoint share of each epoch, and
            ``batch_size`` is the global batch, so each element holds
            ``input_context.get_per_replica_batch_size(batch_size)`` samples (as for the generator).
        epochs: how many epochs the dataset holds, back to back; ``None`` for every epoch from
            ``first_epoch`` on (infinite cardinality). See the module docstring for why.
        first_epoch: the first epoch's number (to resume at an epoch's start, or to continue after another dataset).
        state: a saved position (:func:`tf_state_after`, ``BatchLoader.state_dict()``,
            ``StreamingGenerator.state_dict()``) to start from instead of ``first_epoch``: the resumed
            epoch's remaining samples come first, cut into batches from there, then whole epochs;
            the dataset still holds ``epochs`` times ``batches_per_epoch`` batches, as the generator's
            ``len()`` stays the same. InvalidOptionError names any field that differs.
        on_read: called as ``on_read(epoch, batch, indices)`` with the global sample indices of
            every batch read (e.g. to audit which samples a worker reads); runs in tf.data's
            reader threads, so it must be thread-safe (``batch`` counts from the resumed offset).

    Elements are ``(x, y)`` (``x`` alone if not ``to_fit``); the batch dimension is static only
    with ``drop_remainder``, every other dimension always is.
    """
    loader = BatchLoader(directory, split, options, input_context=input_context, batch_size=batch_size, **overrides)
    if state is not None and first_epoch != 0:
        raise InvalidOptionError("pass first_epoch or state, not both: a state names its own epoch")
    start = StreamPoint(first_epoch, 0) if state is None else check_state(loader, state)
    return loader_dataset(loader, epochs=epochs, start=start, on_read=on_read)


def tf_state_after(directory: str | os.PathLike, split: str = "train", batch_size: int | None = None, *,
                   batches: int, options: LoaderOptions | None = None, input_context: Any = None,
                   first_epoch: int = 0, state: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The state after ``batches`` batches of ``as_tf_dataset`` with the same arguments were consumed.

    A tf.data pipeline reads ahead of its consumer, so it cannot know what was trained; the caller
    counts the batches it took (in ``fit``: ``(keras_epoch - initial_epoch) * steps_per_epoch +
    batches of this epoch``). Resume with ``as_tf_dataset(..., state=tf_state_after(...))``.
    """
    loader = BatchLoader(directory, split, options, input_context=input_context, batch_size=batch_size, **overrides)
    batches = check_int("batches (the count of batches consumed)", batches, 0)
    stream = _stream(loader, StreamPoint(first_epoch, 0) if state is None else check_state(loader, state))
    return loader_state(loader, stream.point(batches))


def _stream(loader: BatchLoader, start: StreamPoint) -> BatchStream:
    """The generator's batch stream over this loader from ``start``: positions counted the same way."""
    stream = BatchStream(loader.num_batches, loader.sampler.samples_per_epoch, loader.options.batch_size,
                         loader.options.drop_remainder)
    stream.restart(start)
    return stream


def loader_dataset(loader: BatchLoader, *, epochs: int | None = 1, first_epoch: int = 0,
                   start: StreamPoint | None = None, on_read: OnRead | None = None,
                   read_samples: int = READ_SAMPLES) -> tf.data.Dataset:
    """The pipeline over a loader built with the options wanted (what ``as_tf_dataset`` does).

    ``start`` (a resumed position) replaces ``first_epoch``: the resumed epoch's rest is its own
    segment of reads, cut from the offset; whole epochs follow, cut to ``epochs * num_batches`` batches.
    """
    if loader.finish.transform is not None:
        raise InvalidOptionError("a transform cannot run inside the tf.data pipeline; use dataset.map instead")
    if loader.num_batches == 0:
        raise InvalidOptionError(f"{loader.dataset!r} gives no batch of {loader.options.batch_size} samples "
                                 f"to pipeline {loader.options.pipeline_index} of {loader.options.num_pipelines}")
    start = start or StreamPoint(first_epoch, 0)
    if (epochs is not None and epochs < 0) or start.epoch < 0:
        raise InvalidOptionError(f"epochs and first_epoch must not be negative, got {epochs}, {start.epoch}")
    specs = output_specs(loader)
    whole = _epochs(loader, specs, start.epoch + (start.sample > 0), epochs, read_samples, on_read)
    total = tf.data.INFINITE_CARDINALITY if epochs is None else epochs * loader.num_batches
    if start.sample and loader.sampler.batches_from(start.sample):
        rest = _epochs(loader, specs, start.epoch, 1, read_samples, on_read, offset=start.sample)
        whole = rest.concatenate(whole)
    if start.sample and epochs is not None:
        whole = whole.take(total)  # as the generator's len(): the last epoch is cut where the count ends
    return whole.apply(tf.data.experimental.assert_cardinality(total)).prefetch(tf.data.AUTOTUNE)


def _epochs(loader: BatchLoader, specs: Any, first: int, count: int | None, read_samples: int,
            on_read: OnRead | None, offset: int = 0) -> tf.data.Dataset:
    """Batches of ``count`` epochs (``None``: endless) from epoch ``first``, each cut into batches from ``offset``."""
    plan = ReadPlan.of(loader, tf.nest.flatten(specs), read_samples, offset)
    start = first * plan.reads_per_epoch
    reads = (tf.data.Dataset.counter(start) if count is None
             else tf.data.Dataset.range(start, start + count * plan.reads_per_epoch))

    def read(number: np.ndarray) -> list[np.ndarray]:
        epoch, batches = plan.batches(int(number))
        indices = [loader.indices(epoch, batch, offset) for batch in batches]
        # finishing works sample by sample, so reading the batches' samples together gives each
        # batch exactly what BatchLoader.load (the generator) gives it
        finished = tf.nest.flatten(loader.read(np.concatenate(indices), epoch))
        if on_read is not None:
            for batch, batch_indices in zip(batches, indices):
                on_read(epoch, batch, batch_indices)
        return [part.reshape(len(batches), -1, *part.shape[1:]) for part in finished]

    def read_batches(number: tf.Tensor) -> Any:
        tensors = tf.numpy_function(read, [number], [spec.dtype for spec in tf.nest.flatten(specs)], stateful=False,
                                    name="streamload_read")
        shaped = [tf.ensure_shape(tensor, (None, *spec.shape)) for tensor, spec in zip(tensors, tf.nest.flatten(specs))]
        return tf.nest.pack_sequence_as(specs, shaped)

    return reads.map(read_batches, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


@dataclass(frozen=True)
class ReadPlan:
    """How each epoch is cut into reads: runs of whole batches, then the short last batch on its own.

    A ``numpy_function`` call with its parallel-map element costs a few hundred microseconds of
    overhead, several times the work of gathering and finishing a 64-sample MNIST batch (one read
    per batch ran at a third of the generator's speed), so a read covers several batches (about
    ``READ_SAMPLES`` samples, at most ``READ_BYTES``) and ``unbatch`` splits them again. Every
    batch of a read is full, so the reads stack into one array; large samples get one batch per read.
    """

    full_batches: int  # batches of exactly batch_size in one epoch of this pipeline
    short_batches: int  # 1 when the epoch ends with a shorter batch, else 0
    batches_per_read: int

    @classmethod
    def of(cls, loader: BatchLoader, specs: list[tf.TensorSpec], read_samples: int = READ_SAMPLES,
           offset: int = 0) -> ReadPlan:
        """The plan of an epoch's batches counted from sample ``offset`` (0 but in a resumed epoch)."""
        size = loader.options.batch_size
        batches = loader.sampler.batches_from(offset)
        full = min(batches, (loader.sampler.samples_per_epoch - offset) // size)
        if any(None in spec.shape[1:] for spec in specs):  # padded per batch: batches of one read do not stack
            return cls(full, batches - full, 1)
        sample_bytes = sum(math.prod(spec.shape[1:]) * spec.dtype.size for spec in specs)
        per_read = min(math.ceil(read_samples / size), READ_BYTES // max(1, size * sample_bytes))
        return cls(full, batches - full, max(1, per_read))

    @property
    def reads_per_epoch(self) -> int:
        return math.ceil(self.full_batches / self.batches_per_read) + self.short_batches

    def batches(self, read: int) -> tuple[int, range]:
        """(epoch, batch numbers) of read number ``read``, counted from epoch 0."""
        epoch, slot = divmod(read, self.reads_per_epoch)
        first = slot * self.batches_per_read
        if first >= self.full_batches:
            return epoch, range(self.full_batches, self.full_batches + 1)
        return epoch, range(first, min(first + self.batches_per_read, self.full_batches))


def output_specs(loader: BatchLoader) -> Any:
    """Dtypes and shapes of the loader's batches (nested like them), found by finishing an empty batch.

    A ragged input's padded length differs from batch to batch: finishing two one-sample batches whose records
    hold 0 and 2 rows tells which dimensions vary, and those are None (what ``ensure_shape`` then allows).
    """
    arrays = loader.dataset.info.arrays
    empty = {key: np.empty((0, *arrays[key].shape), dtype=np.dtype(arrays[key].dtype)) for key in loader.keys
             if not arrays[key].ragged}
    probes = [loader.finish({**{key: np.zeros((1, *array.shape[1:]), array.dtype) for key, array in empty.items()},
                             **_probe_records(arrays, loader.keys, rows)}, np.zeros(1, np.int64)) for rows in (0, 2)]
    batch_dim = loader.options.batch_size if loader.options.drop_remainder else None

    def spec(short: np.ndarray, long: np.ndarray) -> tf.TensorSpec:
        dims = tuple(a if a == b else None for a, b in zip(short.shape[1:], long.shape[1:]))
        return tf.TensorSpec((batch_dim, *dims), tf.as_dtype(short.dtype))

    return tf.nest.map_structure(spec, *probes)


def _probe_records(arrays: dict, keys: tuple[str, ...], rows: int) -> dict[str, Records]:
    """One record of ``rows`` zero rows for each ragged array among ``keys``; no record of encoded images (their
    decoded shape is the reader's ``image_size``, found without decoding anything)."""
    return {key: Records(np.zeros((rows, *arrays[key].row_shape), arrays[key].dtype), [0, rows])
            if not arrays[key].encoded_image else Records(np.zeros(0, np.uint8), [0])
            for key in keys if arrays[key].ragged}
