"""Kernel read hints: ask for the pages of the next batches before they are gathered.

This layer only issues WILLNEED hints (:mod:`~streamload.read.readahead`: ``process_madvise`` for the
pages of many rows at once, ``posix_fadvise`` for long ranges), which queue asynchronous reads into
the page cache and return; it never reads or returns data, so the batches are the same with it or
without it (``prefetch_batches=0``). It uses the loader's own sampler to know what comes next.

* A requested batch not hinted yet gets its own pages hinted just before its gather, so its ~64
  scattered pages are read in parallel instead of one page fault after another.
* While requests come in order, exact and unshuffled modes also hint the batches up to ``depth``
  ahead, from a thread, so the device always has reads queued while this batch is gathered.
  Block mode instead hints whole blocks, for the batches being read and for those half a shuffle
  window ahead (on the thread), so every window is read as a few long sequential runs.
* Requests in random order (Keras shuffling the batch order) get no lookahead: it would be wasted.
* Once the data is in the page cache, exact-order hints would cost ~60 system calls a batch for
  nothing: every ``_IO_CHECK_EVERY`` batches the process' storage reads (``getrusage``'s
  ``ru_inblock``, the kernel's ``read_bytes`` / 512, one system call, no ``/proc`` parsing) are
  looked at, and while they stand still hinting pauses. A later read from storage resumes it if
  the batch at hand has pages outside the page cache (``mincore``: another reader of the process,
  say a checkpoint, leaves a warm loader paused). Block mode is exempt: storage is idle, by design,
  while a window read ahead is consumed.

Hinted pages are page cache (file pages the kernel may drop), never this process' heap; the
bookkeeping is a few bounded tables. State is per process: a forked or unpickled copy starts afresh.
"""

from __future__ import annotations

import math
import queue
import resource
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..base.process import current_pid
from ..errors import StreamloadError
from ..format.reader import PAGE, ByteRanges
from .dataset import ShardedDataset
from .readahead import PageRuns, PlainRows, advise_runs, issue, resident
from .sampler import IndexSampler

__all__ = ["KernelHints"]

SMALL_SAMPLES_PER_PAGE = 64  # arrays of samples this small (labels) are hinted whole, once per shard
STREAM_SLACK = 8  # requests this close to the previous one count as in order (several workers interleave)
_BLOCK_PROBES = 256  # samples of a group whose blocks are looked up: all of a window's blocks, almost surely
_REMEMBERED = 1024  # hinted batches, groups and blocks remembered, so none is hinted twice while it matters
_HINT_QUEUE = 16  # lists of block hints waiting for the hinting thread (about one per window)
_IO_CHECK_EVERY = 16  # batches between looks at this process' storage reads
_IDLE_CHECKS = 2  # looks without a block read from storage before hinting pauses


@dataclass
class _Reads:
    """Hints worked out by the caller (numpy, reader lookups), to be issued by whoever has the time."""

    ranges: list[ByteRanges] = field(default_factory=list)  # each keeps its file open
    pages: list[PageRuns] = field(default_factory=list)
    owner: object = None  # keeps the files and maps of ``pages`` open until they are issued

    def __bool__(self) -> bool:
        return bool(self.ranges or self.pages)

    def issue(self) -> None:
        issue(self.ranges)
        for runs in self.pages:
            advise_runs(runs)


class _Bounded:
    """A set that forgets its oldest members beyond ``limit`` (bounded memory, whatever the run length)."""

    def __init__(self, limit: int = _REMEMBERED) -> None:
        self.limit, self._members = limit, OrderedDict()

    def add(self, member: object) -> bool:
        """Add ``member``; False if it was there already."""
        if member in self._members:
            return False
        self._members[member] = None
        while len(self._members) > self.limit:
            self._members.popitem(last=False)
        return True


@dataclass
class _ProcessState:
    """What one process knows: the last request, what it hinted, and whether storage is busy."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last: int | None = None
    batches: _Bounded = field(default_factory=_Bounded)
    groups: _Bounded = field(default_factory=_Bounded)
    blocks: _Bounded = field(default_factory=_Bounded)
    shards: _Bounded = field(default_factory=_Bounded)  # (epoch, shard) whose tiny arrays were hinted whole
    hinter: _Hinter | None = None
    calls: int = 0
    blocks_read: int = -1  # ru_inblock at the last look
    idle_checks: int = 0  # consecutive looks that found no read from storage
    plain_rows: PlainRows | None = None

    def rows(self, owner: KernelHints) -> PlainRows:
        if self.plain_rows is None:
            self.plain_rows = PlainRows(owner.dataset, owner.row_keys)
        return self.plain_rows

    def storage_idle(self, owner: KernelHints, indices: np.ndarray) -> bool:
        """True while the data comes from the page cache alone, so hints would be wasted system calls.

        The storage reads counted are the whole process': once paused, a read by someone else (another
        loader, a checkpoint) resumes hinting only if the pages of ``indices`` are not all cached.
        """
        self.calls += 1
        if self.calls % _IO_CHECK_EVERY:  # the common case, kept to a few bytecodes
            return self.idle_checks >= _IDLE_CHECKS
        blocks_read = resource.getrusage(resource.RUSAGE_SELF).ru_inblock
        if blocks_read == self.blocks_read:
            self.idle_checks += 1
        elif self.idle_checks < _IDLE_CHECKS or not owner.cached(self, indices):
            self.idle_checks = 0
        self.blocks_read = blocks_read
        return self.idle_checks >= _IDLE_CHECKS


class KernelHints:
    """Hints the batches a ``BatchLoader`` is about to gather; thread-safe, per process, pickles small."""

    def __init__(self, dataset: ShardedDataset, sampler: IndexSampler, keys: tuple[str, ...], depth: int) -> None:
        self.dataset, self.sampler, self.keys, self.depth = dataset, sampler, keys, depth
        arrays = dataset.info.arrays
        # tiny samples (labels): a page holds a whole batch's worth, so read each shard's array once, sequentially,
        # instead of one page per sample (which would double the pages an MNIST sample costs)
        self.row_keys = tuple(key for key in keys if arrays[key].sample_bytes * SMALL_SAMPLES_PER_PAGE > PAGE)
        self.whole_keys = tuple(key for key in keys if key not in self.row_keys)
        options = sampler.options
        self.block_mode = options.shuffle == "block"
        window_samples = options.block_size * options.window_blocks
        self.window_batches = math.ceil(window_samples / (options.batch_size * options.num_pipelines))
        self.group_batches = max(1, self.window_batches // 4)  # block mode looks for new blocks once per group
        self.window_lead = max(1, self.window_batches // 2)  # hint the next window half a window early
        self._states: dict[int, _ProcessState] = {}

    def _state(self) -> _ProcessState:
        # setdefault is atomic, so racing threads agree on one state; a forked child makes its own
        return self._states.get(current_pid()) or self._states.setdefault(current_pid(), _ProcessState())

    def before_batch(self, epoch: int, batch: int, indices: np.ndarray, offset: int = 0) -> None:
        """Call just before gathering ``indices``, batch ``batch`` of ``epoch`` counted from sample ``offset``."""
        state = self._states.get(current_pid()) or self._state()
        if offset:  # a resumed epoch: batch numbers are not epoch positions, so hint this batch only, no lookahead
            with state.lock:
                state.last = None  # the next epoch starts afresh at its batch 0
                fresh = state.batches.add((epoch, offset, batch))
            if fresh and not state.storage_idle(self, indices):
                self._issue_now(self._row_reads(state, epoch, [indices]))
            return
        position = epoch * self.sampler.num_batches + batch
        # no lock: a race only shifts when the storage reads are looked at
        if not self.block_mode and state.storage_idle(self, indices):
            state.last = position
            return
        with state.lock:
            in_order = batch == 0 if state.last is None else abs(position - state.last) <= max(self.depth, STREAM_SLACK)
            state.last = position
            spans, spans_ahead, pages, ahead = [], [], [], []
            if in_order and self.block_mode:
                spans = self._new_blocks(state, position)
                spans_ahead = self._new_blocks(state, position + self.window_lead)
            else:
                pages = [indices] if state.batches.add(position) else []
                if in_order:
                    ahead = [self._indices(p) for p in range(position + 1, position + self.depth + 1)
                             if state.batches.add(p)]
            if (spans_ahead or ahead) and state.hinter is None:
                state.hinter = _Hinter(self)
        if spans:
            issue(self._block_ranges(spans))
        if spans_ahead:
            state.hinter.submit(_Reads(ranges=self._block_ranges(spans_ahead)))
        self._issue_now(self._row_reads(state, epoch, pages))
        if ahead:  # the system calls overlap with this batch's gather, on the hinting thread
            state.hinter.submit(self._row_reads(state, epoch, ahead))

    @staticmethod
    def _issue_now(reads: _Reads) -> None:
        try:
            reads.issue()
        except OSError:  # hints are optional: the gather reports real errors
            pass

    def _row_reads(self, state: _ProcessState, epoch: int, batches: list[np.ndarray]) -> _Reads:
        """The pages of each batch's rows, and the whole arrays of tiny samples in shards not hinted this epoch."""
        starts, reads = self.dataset.info.shard_starts, _Reads()
        for wanted in batches:
            try:
                wanted, shards, runs = self._row_runs(state, wanted)
                for key, found in runs.items():
                    if found is None:
                        reads.ranges += self.dataset.ranges(wanted, (key,))
                    else:
                        reads.pages.append(found)
                        reads.owner = state.plain_rows
                for shard in np.unique(shards).tolist() if self.whole_keys else ():
                    if state.shards.add((epoch, shard)):
                        reads.ranges += self.dataset.span_ranges(int(starts[shard]), int(starts[shard + 1]),
                                                                 self.whole_keys)
            except (StreamloadError, OSError):  # hints are optional: the gather that needs the shard reports it
                continue
        return reads

    def cached(self, state: _ProcessState, indices: np.ndarray) -> bool:
        """Whether the pages of a batch's rows are all in the page cache (plainly stored arrays only)."""
        try:
            _, _, runs = self._row_runs(state, indices)
        except (StreamloadError, OSError):
            return False
        return all(found is not None and resident(found) for found in runs.values())

    def _row_runs(self, state: _ProcessState, indices: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, PageRuns | None]]:
        """A batch's indices sorted, their shards, and each row key's page runs (None: stored in chunks)."""
        indices = indices if (indices[1:] >= indices[:-1]).all() else np.sort(indices)
        shards, rows = self.dataset.info.locate(indices)
        return indices, shards, {key: state.rows(self).pages(shards, rows, key) for key in self.row_keys}

    def _block_ranges(self, block_starts: list[int]) -> list[ByteRanges]:
        size = self.sampler.options.block_size
        return [ranges for first in block_starts for ranges in self.dataset.span_ranges(first, first + size, self.keys)]

    def _indices(self, position: int) -> np.ndarray:
        epoch, batch = divmod(position, self.sampler.num_batches)
        return self.sampler.batch_indices(epoch, batch)

    def _new_blocks(self, state: _ProcessState, position: int) -> list[int]:
        """First samples of the blocks, not hinted yet, that the group of batches around ``position`` reads."""
        epoch, batch = divmod(position, self.sampler.num_batches)
        first = batch - batch % self.group_batches
        if not state.groups.add((epoch, first)):
            return []
        options = self.sampler.options
        last = min(first + self.group_batches, self.sampler.num_batches)
        end = min(last * options.batch_size, self.sampler.samples_per_epoch)
        positions = np.unique(np.linspace(first * options.batch_size, end - 1, _BLOCK_PROBES).astype(np.int64))
        blocks = np.unique(self.sampler.indices(epoch, positions) // options.block_size).tolist()
        return [block * options.block_size for block in blocks if state.blocks.add((epoch, block))]

    def flush(self) -> None:
        """Wait until the hints this process queued so far are issued (tests and benchmarks start clean)."""
        state = self._states.get(current_pid())
        if state is not None and state.hinter is not None:
            state.hinter.flush()

    def close(self) -> None:
        """Stop this process' hinting thread, if it started one; hints still queued are dropped."""
        state = self._states.pop(current_pid(), None)
        if state is not None and state.hinter is not None:
            state.hinter.stop(wait=True)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_states": {}}


class _Hinter:
    """One thread per process that issues the hints read ahead: block windows, exact-order batches.

    Queueing reads costs the kernel ~5 us a page (page allocation, request building), more when
    the device queue is full and the call waits for a free slot: a 25 MB window ~10 ms, a batch
    of 1,024 random samples ~10 ms. ``posix_fadvise`` spends that with the GIL released, so here
    it overlaps with the caller's gathers instead of stalling them (in exact order, from the
    caller's thread, it took ~60% of the time of a cold pass). The thread only makes that system
    call (pages, byte ranges and HDF5 chunk lookups are worked out by the caller), so it never
    holds a library lock a ``fork`` could copy while held. Started on first use, never in
    ``__init__``; it stops once its owner is garbage-collected or closed.
    """

    def __init__(self, owner: KernelHints) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=_HINT_QUEUE)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=_serve_hints, args=(self._jobs, self._stopped),
                                        name="streamload-hints", daemon=True)
        self._thread.start()
        # the thread holds no reference to the owner, so this fires once the loader is gone
        weakref.finalize(owner, _send_stop, self._jobs, self._stopped, current_pid())

    def submit(self, reads: _Reads) -> None:
        if not reads:
            return
        try:
            self._jobs.put_nowait(reads)
        except queue.Full:  # the thread is behind: do it here rather than drop it or wait
            KernelHints._issue_now(reads)

    def flush(self) -> None:
        self._jobs.join()

    def stop(self, wait: bool) -> None:
        _send_stop(self._jobs, self._stopped, current_pid())
        if wait:
            self._thread.join()


def _send_stop(jobs: queue.Queue, stopped: threading.Event, pid: int) -> None:
    if current_pid() != pid:  # a forked child inherited the finaliser, not the thread (nor a usable queue)
        return
    stopped.set()  # hints still queued are dropped: nobody will read those blocks
    jobs.put(None)


def _serve_hints(jobs: queue.Queue, stopped: threading.Event) -> None:
    while (reads := jobs.get()) is not None:
        if not stopped.is_set():
            KernelHints._issue_now(reads)
        del reads  # the ranges hold their files' maps open: only while queued
        jobs.task_done()
