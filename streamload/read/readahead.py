"""The system calls that queue reads into the page cache, and where the pages of plainly stored rows lie.

:mod:`~streamload.read.kernel_hints` decides what to read ahead; this module asks the kernel for it.

* :func:`issue` hints byte ranges (long block spans, HDF5 chunks) with one ``posix_fadvise``
  (WILLNEED) per run of touching pages.
* :class:`PlainRows` finds the pages of a batch's rows, every shard at once, for arrays stored
  plainly (``offset + row * row_bytes`` in a memory map), and :func:`advise_runs` queues them with
  ``process_madvise(MADV_WILLNEED)`` on this process' own maps: up to 1,024 runs per system call.
  A Python loop of ``posix_fadvise`` calls gives up and takes back the GIL once per run: ~1,200
  times for a batch of 1,024 random MNIST samples, and while another thread runs Python (Keras'
  training loop) each take-back waits, so a cold exact-order pass fell from ~40k samples/s to a few
  hundred with one busy thread beside it. Where ``process_madvise`` is missing (Linux < 5.10) or
  refused (self-advice without CAP_SYS_NICE before Linux 6.x), the loop of ``posix_fadvise`` is used.

Every call here only queues reads and returns; none reads or returns data.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..base.process import current_pid
from ..format.reader import PAGE, ByteRanges, MappedArray
from .dataset import ShardedDataset

SYS_PROCESS_MADVISE = 440  # one number on every architecture (the unified table since Linux 5.1)
MADV_WILLNEED = 3
IOV_MAX = 1024  # ranges per process_madvise call (UIO_MAXIOV)
_GIVE_UP = {errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EBADF, errno.ESRCH}


class PageRuns(NamedTuple):
    """Runs of touching pages: ``counts[i]`` pages from file page ``first[i]`` of one shard's file,
    open as descriptor ``fds[i]`` and mapped from address ``bases[i]`` (the map of the whole file)."""

    fds: np.ndarray
    bases: np.ndarray
    first: np.ndarray
    counts: np.ndarray


def issue(ranges: list[ByteRanges]) -> None:
    """Queue reads of the pages under ``ranges`` (merged per file when adjacent); returns at once."""
    for found in ranges:
        first, last = found.starts // PAGE, (found.ends - 1) // PAGE
        if len(first) > 1 and (first[1:] < first[:-1]).any():  # the merge below needs ranges in file order
            order = np.argsort(first, kind="stable")
            first, last = first[order], last[order]
        if len(first) > 1:  # merge runs of touching or overlapping pages into one hint each
            breaks = np.flatnonzero(first[1:] > np.maximum.accumulate(last)[:-1] + 1) + 1
            first, last = first[np.r_[0, breaks]], np.maximum.reduceat(last, np.r_[0, breaks])
        for page, end in zip(first.tolist(), last.tolist()):
            os.posix_fadvise(found.fd, page * PAGE, (end - page + 1) * PAGE, os.POSIX_FADV_WILLNEED)


class _SelfMadvise:
    """``process_madvise`` on this process, through ctypes (which releases the GIL during the call)."""

    def __init__(self) -> None:
        self.pid, self.pidfd, self.usable, self.worked = -1, -1, hasattr(os, "pidfd_open"), False
        try:
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            self._syscall.restype = ctypes.c_long
        except (OSError, AttributeError):
            self.usable = False

    def advise(self, vectors: np.ndarray) -> bool:
        """WILLNEED for each (address, length) row of ``vectors`` (uint64); False where it cannot be used."""
        if not self.usable:
            return False
        if self.pid != current_pid():  # a forked child needs a descriptor of its own process
            try:
                self.pidfd, self.pid = os.pidfd_open(current_pid()), current_pid()
            except OSError:
                self.usable = False
                return False
        for start in range(0, len(vectors), IOV_MAX):
            chunk = np.ascontiguousarray(vectors[start:start + IOV_MAX])
            done = self._syscall(SYS_PROCESS_MADVISE, self.pidfd, ctypes.c_void_p(chunk.ctypes.data),
                                 ctypes.c_size_t(len(chunk)), MADV_WILLNEED, 0)
            if done < 0:
                if not self.worked and ctypes.get_errno() in _GIVE_UP:  # not on this kernel, or not allowed
                    self.usable = False
                    return False
                continue  # a one-off (a map gone meanwhile): hints are optional
            self.worked = True
        return True


_SELF = _SelfMadvise()


def _load_mincore() -> Callable[..., int] | None:
    try:
        mincore = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):
        return None
    mincore.argtypes, mincore.restype = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p), ctypes.c_int
    return mincore


_MINCORE = _load_mincore()


def resident(runs: PageRuns) -> bool:
    """Whether the pages of ``runs`` are in the page cache: one ``mincore`` per shard's map; False if unknown.

    The first and last page of each run are looked at (runs of rows span one or two pages).
    """
    if not len(runs.first) or _MINCORE is None:
        return False
    lasts = runs.first + runs.counts - 1
    for base in np.unique(runs.bases).tolist():
        mine = runs.bases == base
        first, last = runs.first[mine], lasts[mine]
        low, high = int(first.min()), int(last.max())
        vector = np.zeros(high - low + 1, dtype=np.uint8)
        if _MINCORE(base + low * PAGE, (high - low + 1) * PAGE, vector.ctypes.data) != 0:
            return False
        if not (vector[first - low] & vector[last - low] & 1).all():
            return False
    return True


def advise_runs(runs: PageRuns) -> None:
    """Queue reads of ``runs``: in a few ``process_madvise`` calls where possible, else one fadvise per run."""
    if not len(runs.first):
        return
    vectors = np.empty((len(runs.first), 2), dtype=np.uint64)
    vectors[:, 0] = runs.bases + (runs.first * PAGE).astype(np.uint64)
    vectors[:, 1] = runs.counts * PAGE
    if _SELF.advise(vectors):
        return
    for fd, start, length in zip(runs.fds.tolist(), (runs.first * PAGE).tolist(), (runs.counts * PAGE).tolist()):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)


class PlainRows:
    """Where the rows of plainly stored arrays (``MappedArray``) lie, for every shard: one numpy pass a batch.

    Asking each shard's reader for its ranges costs ~30 us of numpy calls per shard: a batch of 1,024
    random samples of a 468-shard set touches ~400 shards, so the hints alone held a core at ~25k
    samples/s. Rows stored plainly are at ``offset + row * row_bytes`` of one file per shard, so the
    pages of a whole batch come from a few vectorised operations. Arrays stored in chunks (compressed
    HDF5) are left to their readers' own ranges. Filled per process, shard by shard, on first use;
    it keeps the arrays it lists (their descriptors and maps) open.
    """

    def __init__(self, dataset: ShardedDataset, keys: tuple[str, ...]) -> None:
        shards = len(dataset.info.shards)
        self.dataset = dataset
        self.fds = {key: np.full(shards, -1, dtype=np.int64) for key in keys}
        self.bases = {key: np.zeros(shards, dtype=np.uint64) for key in keys}
        self.offsets = {key: np.zeros(shards, dtype=np.int64) for key in keys}
        self.row_bytes = {key: dataset.info.arrays[key].sample_bytes for key in keys}
        self.owners: dict[tuple[str, int], MappedArray] = {}
        self.chunked: set[str] = set()  # keys some shard stores in chunks

    def pages(self, shards: np.ndarray, rows: np.ndarray, key: str) -> PageRuns | None:
        """The page runs of rows sorted by (shard, row), touching ones merged; None for a key stored in chunks."""
        fds, offsets, size = self.fds[key], self.offsets[key], self.row_bytes[key]
        for shard in np.unique(shards[fds[shards] < 0]).tolist():
            self._open(key, shard)
        if key in self.chunked:
            return None
        starts = offsets[shards] + rows * size
        first, last = starts // PAGE, (starts + size - 1) // PAGE
        # sorted by (shard, row): pages only grow within a shard, so a run breaks at a new shard or a gap
        breaks = np.flatnonzero((shards[1:] != shards[:-1]) | (first[1:] > last[:-1] + 1)) + 1
        heads = np.r_[0, breaks] if len(first) else breaks
        counts = np.maximum.reduceat(last, heads) - first[heads] + 1 if len(first) else heads
        heads_shards = shards[heads]
        return PageRuns(fds[heads_shards], self.bases[key][heads_shards], first[heads], counts)

    def _open(self, key: str, shard: int) -> None:
        found = self.dataset.reader(shard).ranges(key, np.zeros(1, dtype=np.int64))
        owner = None if found is None else found.owner
        if not isinstance(owner, MappedArray):
            self.chunked.add(key)
            return
        self.owners[(key, shard)] = owner
        self.offsets[key][shard] = owner.offset
        if owner.array.size:  # the array's data starts ``offset`` bytes into the map of the whole file
            self.bases[key][shard] = owner.array.ctypes.data - owner.offset
        self.fds[key][shard] = owner.fd  # last: a racing thread that sees the descriptor sees the rest too
