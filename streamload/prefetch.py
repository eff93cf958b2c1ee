"""Keep cold storage busy: ask the kernel for the pages of batches ahead while the caller works.

The only effect of a prefetcher is *when* pages arrive in the page cache: it issues
``posix_fadvise(WILLNEED)`` hints and never reads or returns data, so every batch is still
gathered by the same code from the same indices. Which batches come next is cheap to know because
the sampler is a pure function of (seed, epoch, batch).

* Every requested batch that was not hinted yet gets its own pages hinted before its gather, so
  its 64-odd scattered pages are read in parallel instead of one page fault at a time.
* While requests arrive in order (one epoch after another, or a few workers close to each other),
  the next ``depth`` batches are hinted by one I/O thread per process: exact pages for exact or no
  shuffling; whole blocks in block mode, plus the batch one window ahead, so the next window is read
  as a few long sequential runs while the current one is consumed.
* Requests in random order (Keras shuffling batch order) get no lookahead: it would only waste reads.

Hints live in the page cache (file pages the kernel may drop), never in this process' heap; the
bookkeeping is a few bounded tables, so anonymous memory does not grow with the dataset.
State is per process: after ``fork`` or unpickling, a fresh lock, queue and thread are made on
first use, and nothing is started in ``__init__``.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .dataset import ShardedDataset
from .sampler import IndexSampler

DEFAULT_PREFETCH_BATCHES = 8
STREAM_SLACK = 8  # requests this close to the previous one count as in order (several workers interleave)
_PAGES, _BLOCKS = 0, 1


class _Bounded:
    """A set that forgets its oldest members beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self._members = limit, OrderedDict()

    def add(self, member: object) -> bool:
        """Add ``member``; False if it was there already."""
        if member in self._members:
            return False
        self._members[member] = None
        while len(self._members) > self.limit:
            self._members.popitem(last=False)
        return True


class _HintWorker:
    """Turns (kind, stream position) jobs into hints; run by the I/O thread only, so it needs no lock."""

    def __init__(self, dataset: ShardedDataset, sampler: IndexSampler, keys: tuple[str, ...]) -> None:
        self.dataset, self.keys = dataset, keys
        self.sampler = IndexSampler(sampler.num_samples, sampler.options)  # its own index cache
        options = sampler.options
        self.block_size = options.block_size
        self.blocks_done = _Bounded(4 * options.window_blocks)

    def __call__(self, job: tuple[int, int]) -> None:
        kind, position = job
        epoch, batch = divmod(position, self.sampler.num_batches)
        indices = self.sampler.batch_indices(epoch, batch)
        if kind == _PAGES:
            self.dataset.prefetch(indices, self.keys)
            return
        for block in np.unique(indices // self.block_size).tolist():
            if self.blocks_done.add((epoch, block)):
                self.dataset.prefetch_span(block * self.block_size, (block + 1) * self.block_size, self.keys)


def _serve(jobs: queue.Queue, worker: _HintWorker) -> None:
    while (job := jobs.get()) is not None:
        try:
            worker(job)
        except Exception:  # noqa: BLE001 - a hint is optional; the gather itself reports real errors
            pass


@dataclass
class _ProcessState:
    """What one process knows about the requests it served and the hints it queued."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last: int | None = None
    hinted: _Bounded = field(default_factory=lambda: _Bounded(1024))
    jobs: queue.Queue | None = None
    thread: threading.Thread | None = None


class Prefetcher:
    """Hints the batches a ``BatchLoader`` is about to read; thread-safe, per process, pickles small."""

    def __init__(self, dataset: ShardedDataset, sampler: IndexSampler, keys: tuple[str, ...],
                 depth: int = DEFAULT_PREFETCH_BATCHES) -> None:
        self.dataset, self.sampler, self.keys, self.depth = dataset, sampler, keys, depth
        options = sampler.options
        self.block_mode = options.shuffle == "block"
        window_samples = options.block_size * options.window_blocks
        self.window_batches = math.ceil(window_samples / (options.batch_size * options.num_pipelines))
        self._states: dict[int, _ProcessState] = {}

    def _state(self) -> _ProcessState:
        # setdefault is atomic, so threads racing here agree on one state; a forked child gets its own
        return self._states.get(os.getpid()) or self._states.setdefault(os.getpid(), _ProcessState())

    def before_load(self, epoch: int, batch: int, indices: np.ndarray) -> None:
        """Call before gathering ``indices``, batch ``batch`` of ``epoch``: hints it if needed, and the ones ahead."""
        state = self._state()
        position = epoch * self.sampler.num_batches + batch
        with state.lock:
            in_order = (batch == 0 if state.last is None
                        else abs(position - state.last) <= max(self.depth, STREAM_SLACK))
            state.last = position
            current = state.hinted.add(position)
            ahead = [p for p in self._lookahead(position) if state.hinted.add(p)] if in_order else []
            if ahead and state.jobs is None:
                state.jobs, state.thread = self._start_thread()
        if current:
            self.dataset.prefetch(indices, self.keys)
        kind = _BLOCKS if self.block_mode else _PAGES
        for ahead_position in ahead:
            try:
                state.jobs.put_nowait((kind, ahead_position))
            except queue.Full:  # the disk is behind anyway: those batches fault their own pages in
                break

    def _lookahead(self, position: int) -> list[int]:
        ahead = list(range(position + 1, position + self.depth + 1))
        if self.block_mode:
            ahead.append(position + self.window_batches)  # reaches into the next window
        return ahead

    def _start_thread(self) -> tuple[queue.Queue, threading.Thread]:
        jobs: queue.Queue = queue.Queue(maxsize=4 * (self.depth + 1))
        worker = _HintWorker(self.dataset, self.sampler, self.keys)
        thread = threading.Thread(target=_serve, args=(jobs, worker), name="streamload-prefetch", daemon=True)
        thread.start()
        weakref.finalize(self, _stop, jobs)  # the thread holds no reference to self, so this can fire
        return jobs, thread

    def close(self) -> None:
        """Stop this process' I/O thread after the hints already queued (it restarts if used again)."""
        state = self._states.pop(os.getpid(), None)
        if state is not None and state.jobs is not None:
            _stop(state.jobs)
            state.thread.join()

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_states": {}}


def _stop(jobs: queue.Queue) -> None:
    jobs.put(None)
