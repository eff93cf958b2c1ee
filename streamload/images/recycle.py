"""Batch arrays taken back for the next batch once nothing outside this module refers to them.

A 64-image batch of 224x224x3 float32 is 38 MB, over glibc's largest mmap threshold: every fresh one is a
new mapping whose pages the kernel faults in and zeroes as the decoders first write them, then unmaps when
the batch is dropped. Profiled (``perf``) in the image benchmark's streamload pass, that zeroing alone was
about a tenth of the CPU time. An array handed out is reused only when its reference count says that nobody
else holds it: a view, a slice, a memoryview, a ``tf.Tensor`` or ``jax.Array`` sharing its memory all keep a
reference to it (a view's base is the array that owns the memory), so a batch still held, in Keras' queue of
batches say, is never written over. Only the few most recent arrays are kept (``KEPT``); more batches alive at
once simply get fresh arrays.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ..base.process import current_pid

KEPT = 4  # arrays kept for reuse: the batch being made, the one the caller holds, and two in a queue ahead


def _references(arrays: list[np.ndarray], position: int) -> int:
    """The reference count of ``arrays[position]``, as seen from here (the list's own and the call's included)."""
    return sys.getrefcount(arrays[position])


class ArrayRecycler:
    """Arrays of up to ``kept`` shapes-and-capacities, handed out again once only this recycler refers to them."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._pid = current_pid()
        self._unshared = _references([np.empty(0)], 0)  # the count of an array only the list holds

    def empty(self, count: int, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised ``(count, *shape)`` array: a view of a kept one nobody else holds, else a new one."""
        if current_pid() != self._pid:  # a forked child: the parent's lock may have been held at the fork
            self._arrays, self._lock, self._pid = [], threading.Lock(), current_pid()
        with self._lock:
            position = self._free(count, shape, np.dtype(dtype))
            if position is not None:
                return self._arrays[position][:count]
            array = np.empty((count, *shape), dtype)
            if len(self._arrays) < self.kept:
                self._arrays.append(array)
            else:
                self._replace_one(array)
            return array

    def _free(self, count: int, shape: tuple[int, ...], dtype: np.dtype) -> int | None:
        """The position of a kept array that fits and that nobody else holds (no local name may refer to it
        while its references are counted)."""
        for position in range(len(self._arrays)):
            kept = self._arrays[position]
            fits = kept.shape[1:] == shape and kept.dtype == dtype and len(kept) >= count
            del kept
            if fits and _references(self._arrays, position) <= self._unshared:
                return position
        return None

    def _replace_one(self, array: np.ndarray) -> None:
        """Keep ``array`` in place of the oldest kept one nobody holds (none such: ``array`` is not kept)."""
        for position in range(len(self._arrays)):
            if _references(self._arrays, position) <= self._unshared:
                del self._arrays[position]
                self._arrays.append(array)
                return

    def __reduce__(self) -> tuple[type, tuple[int]]:
        """Pickled (a loader sent to a worker process) as an empty recycler: arrays are per process."""
        return ArrayRecycler, (self.kept,)
