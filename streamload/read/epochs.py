"""Which data epoch Keras is reading: a stream of batches, and passes over it that end when complete.

A ``PyDataset`` only hears ``on_epoch_begin``/``on_epoch_end`` and ``__getitem__(i)``, and Keras
adds calls of its own that differ by backend and version: TensorFlow reads batches 0 and 1 for the
output signature then calls an unpaired ``on_epoch_end``; JAX and PyTorch open an epoch, read one
batch to build the model, and close it. Counting those calls would skip or repeat epochs.

The rule here depends on no order of calls: a *pass* (one Keras epoch over ``len()`` batches)
ends at an ``on_epoch_end`` only once every batch of it has been requested. Keras' probes read one
or two batches, so they never complete a pass; a real epoch, in any batch order, on threads or in
worker processes, always does. Requests are recorded in a per-pass table; with worker processes it
lives in a small shared file, so the parent sees what its workers served. A pass that ends early
(``steps_per_epoch`` below ``len()``) simply continues in the next Keras epoch, as Keras' own
iterator does. For epochs of one or two batches, or to follow ``initial_epoch``, let a callback
report Keras' epoch (:meth:`BatchStream.set_pass`, used by ``streamload.adapters.callbacks``).

Batches form one stream: epoch ``e`` batch ``b`` follows epoch ``e`` batch ``b - 1``. A resumed
stream starts mid-epoch at a sample position, so the resumed epoch's remaining samples come first,
cut into batches from there, then whole epochs; ``len()`` stays the same in every pass.
"""

from __future__ import annotations

import math
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.process import current_pid

_TAGS = 255  # pass tags cycle through 1..255 so late writes from an earlier pass never count


@dataclass(frozen=True)
class StreamPoint:
    """A place in the stream: ``sample`` samples of this pipeline's ``epoch`` already served."""

    epoch: int
    sample: int


class BatchStream:
    """Maps request ``i`` of the current pass to (epoch, batch, offset) and tells when a pass is complete."""

    def __init__(self, num_batches: int, samples_per_epoch: int, batch_size: int, drop_remainder: bool,
                 shared: bool = False) -> None:
        self.num_batches, self.samples_per_epoch, self.batch_size = num_batches, samples_per_epoch, batch_size
        self.drop_remainder = drop_remainder
        self.start = StreamPoint(0, 0)
        self.pass_number = 0
        self._tag = 1
        self._path: Path | None = _shared_table(num_batches) if shared else None
        if self._path is not None:
            weakref.finalize(self, _remove, self._path, current_pid())
        self._table: np.ndarray | None = None
        self._table_pid: int | None = None

    @property
    def first_batches(self) -> int:
        """Batches in the stream's first (possibly resumed) epoch."""
        remaining = self.samples_per_epoch - self.start.sample
        return remaining // self.batch_size if self.drop_remainder else math.ceil(remaining / self.batch_size)

    def locate(self, index: int) -> tuple[int, int, int]:
        """(epoch, batch, sample offset of batch 0) of request ``index`` in the current pass; records it."""
        self._requests()[index] = self._tag
        return self.where(index)

    def where(self, index: int) -> tuple[int, int, int]:
        """(epoch, batch, sample offset of batch 0) of batch ``index`` of the current pass."""
        served = self.pass_number * self.num_batches + index
        first = self.first_batches
        if served < first:
            return self.start.epoch, served, self.start.sample
        epochs, batch = divmod(served - first, self.num_batches)
        return self.start.epoch + 1 + epochs, batch, 0

    def served_prefix(self) -> int:
        """Batches 0..k-1 of the current pass that were all requested: what a state may claim was served.

        A request out of order (batch 15 after batch 11) does not count until the gap before it is filled.
        """
        missing = np.flatnonzero(self._requests()[:self.num_batches] != self._tag)
        return int(missing[0]) if len(missing) else self.num_batches

    def served(self, pass_number: int, batches_done: int) -> int:
        """Batches from the stream's start after ``batches_done`` batches of pass ``pass_number``."""
        return pass_number * self.num_batches + batches_done

    def point(self, served: int) -> StreamPoint:
        """Where the stream stands after ``served`` batches from its start."""
        first = self.first_batches
        if served < first:
            return StreamPoint(self.start.epoch, self.start.sample + served * self.batch_size)
        epochs, batch = divmod(served - first, self.num_batches)
        return StreamPoint(self.start.epoch + 1 + epochs, batch * self.batch_size)

    def batches_before(self, epoch: int) -> int:
        """Batches from the stream's start to the start of ``epoch``."""
        if epoch <= self.start.epoch:
            return 0
        return self.first_batches + (epoch - self.start.epoch - 1) * self.num_batches

    def end_pass(self) -> bool:
        """Keras ended an epoch: start the next pass if every batch of this one was requested."""
        complete = int(np.count_nonzero(self._requests() == self._tag)) >= self.num_batches
        if complete:
            self.set_pass(self.pass_number + 1)
        return complete

    def set_pass(self, number: int) -> None:
        if number != self.pass_number:
            self.pass_number = number
            self._tag = self._tag % _TAGS + 1

    def restart(self, start: StreamPoint) -> None:
        self.start = start
        self.pass_number = -1
        self.set_pass(0)

    def _requests(self) -> np.ndarray:
        """This process' view of the request table: in memory, or the shared file mapped once per process."""
        if self._table_pid != current_pid():
            if self._path is None:
                table = np.zeros(max(1, self.num_batches), dtype=np.uint8)
            else:
                table = np.memmap(self._path, dtype=np.uint8, mode="r+", shape=(max(1, self.num_batches),))
            self._table, self._table_pid = table, current_pid()
        return self._table  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_table": None, "_table_pid": None}  # a process maps or makes its own


def _shared_table(num_batches: int) -> Path:
    """A zeroed file of one byte per batch, in shared memory where there is one (/dev/shm)."""
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    descriptor, name = tempfile.mkstemp(prefix="streamload-requests-", dir=folder)
    with os.fdopen(descriptor, "wb") as stream:
        stream.truncate(max(1, num_batches))
    return Path(name)


def _remove(path: Path, owner: int) -> None:
    if current_pid() == owner:  # a forked worker's copy being collected must not remove the parent's table
        path.unlink(missing_ok=True)
