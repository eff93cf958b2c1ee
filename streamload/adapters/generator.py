"""``StreamingGenerator``: a Keras ``PyDataset`` that reads each batch from on-disk shards.

This is the only module of the generator path that imports Keras; the reading is
:class:`~streamload.read.loader.BatchLoader`'s, the epoch bookkeeping :class:`~streamload.read.epochs.BatchStream`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras

from ..errors import InvalidOptionError
from ..options import LoaderOptions
from ..read.batching import Batch, Transform
from ..read.epochs import BatchStream, StreamPoint
from ..read.loader import BatchLoader
from ..read.resume import check_state, loader_state
from .workers import WorkerRoster, watch


class StreamingGenerator(keras.utils.PyDataset):
    """Batches of one split of a sharded dataset, read from disk batch by batch.

    Batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the order Keras asks for
    batches in, worker threads or processes, and resuming all give the same data. ``fit`` epoch
    ``k`` reads data epoch ``k`` on every backend (see :mod:`streamload.read.epochs`); pass
    ``shuffle=False`` to ``fit``, since the generator already shuffles exactly.

    Args:
        directory: dataset folder holding ``manifest.json``.
        split: split name in the manifest, e.g. ``"train"`` or ``"test"``.
        batch_size, options, **overrides: a :class:`~streamload.options.LoaderOptions` and/or its
            fields as keywords (``shuffle``, ``seed``, ``one_hot``, ``prefetch_batches``...).
        transform: ``transform(x, y) -> (x, y)`` applied to each finished batch (``y`` is None when
            ``to_fit=False``); must pickle for ``use_multiprocessing=True``.
        input_context: a ``tf.distribute.InputContext``: read this pipeline's share; ``batch_size``
            is then the global batch, as for :func:`~streamload.adapters.tfdata.as_tf_dataset`.
        workers, use_multiprocessing, max_queue_size: passed to ``keras.utils.PyDataset``.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", batch_size: int | None = None, *,
                 options: LoaderOptions | None = None, transform: Transform | None = None, input_context: Any = None,
                 workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10,
                 **overrides: Any) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.loader = BatchLoader(directory, split, options, transform=transform, input_context=input_context,
                                  batch_size=batch_size, **overrides)
        sampler = self.loader.sampler
        self.stream = BatchStream(sampler.num_batches, sampler.samples_per_epoch, sampler.batch_size,
                                  self.options.drop_remainder, shared=use_multiprocessing)
        self.roster: WorkerRoster | None = None
        if use_multiprocessing:  # a worker process that dies must end fit, not hang it (streamload.adapters.workers)
            self.roster = WorkerRoster(sampler.num_batches, self.loader.dataset.directory)
            watch(self.roster)

    @property
    def options(self) -> LoaderOptions:
        return self.loader.options

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The names of the label classes, as the build recorded them (image folders: the sorted folder names)."""
        labels = self.loader.dataset.manifest.labels
        return None if labels is None else labels.class_names

    @property
    def epoch(self) -> int:
        """The data epoch that batch 0 of the current pass belongs to."""
        return self.stream.where(0)[0]

    def __len__(self) -> int:
        return self.loader.num_batches

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self.loader.num_batches:
            raise IndexError(f"batch {index} out of range for {self.loader.num_batches} batches")
        batch = self._read(index)
        if self.finish_for_tf and self.loader.finish.pads_per_batch:  # see BatchFinisher.with_length_parity
            return self.loader.finish.with_length_parity(batch, index)
        return batch

    def _read(self, index: int) -> Batch:
        """Batch ``index`` of the current pass; a worker process notes it in the roster (workers.py)."""
        if self.roster is None:
            return self.loader.load(*self.stream.locate(index))
        self.roster.reading(index)
        try:
            return self.loader.load(*self.stream.locate(index))
        finally:
            self.roster.done(index)

    @property
    def finish_for_tf(self) -> bool:
        """Keras' TensorFlow backend reads this dataset through a tf.data signature fixed from two batches."""
        return keras.backend.backend() == "tensorflow"

    def on_epoch_end(self) -> None:
        """Keras ended an epoch: the next pass starts once every batch of this one was requested."""
        self.stream.end_pass()

    def set_epoch(self, epoch: int) -> None:
        """Serve data epoch ``epoch`` from its start (custom loops; ``fit`` needs no call)."""
        self.stream.restart(StreamPoint(epoch, 0))

    def sync_epoch(self, keras_epoch: int) -> None:
        """Follow the epoch Keras reports (from a callback): exact for any epoch length and initial_epoch."""
        self.stream.set_pass(keras_epoch - self.stream.start.epoch)

    def state_dict(self, batches_done: int | None = None, keras_epoch: int | None = None) -> dict[str, Any]:
        """Where the stream stands after ``batches_done`` batches of the current pass.

        Without ``batches_done``: after the batches served in order, 0, 1, ... up to the first one not
        requested in this pass, so a state never claims a batch that was not served (a loop that read
        batches 0..11 of 20 resumes at batch 12). In ``fit``, workers request batches ahead of training,
        so callbacks pass the count of batches trained (``TrainingCheckpoint`` does). ``keras_epoch``
        names the pass by Keras' epoch number instead (what a callback knows); it needs ``batches_done``.
        """
        if batches_done is None:
            if keras_epoch is not None:
                raise InvalidOptionError("state_dict(keras_epoch=...) needs batches_done: the batches served in "
                                         "order are known only for the current pass")
            batches_done = self.stream.served_prefix()
        number = self.stream.pass_number if keras_epoch is None else keras_epoch - self.stream.start.epoch
        return loader_state(self.loader, self.stream.point(self.stream.served(number, batches_done)))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a stream saved by :meth:`state_dict`: the next pass starts at its first unseen sample.

        ``len()`` does not change: the resumed epoch's remaining batches come first, then whole
        epochs follow, so a ``fit`` call keeps its batch count. Raises InvalidOptionError naming any
        field (seed, shuffle, dataset fingerprint...) that differs from this generator's.
        """
        self.stream.restart(check_state(self.loader, state))

    def __repr__(self) -> str:
        return (f"StreamingGenerator({self.loader.dataset!r}, batch_size={self.options.batch_size}, "
                f"shuffle={self.options.shuffle!r}, epoch={self.epoch}, batches={len(self)})")
