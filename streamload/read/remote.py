"""Shards of a dataset in a bucket, read through the local shard cache (:class:`~streamload.store.ShardCache`).

Whole shards are fetched into the cache and then read by the same npy and HDF5 readers as a local
dataset, from the checked local copy. Every shuffle mode reads this way; exact order from a bucket
fetches whole shards too (simplest correct; whether byte-range reads beat it is for the benchmark of
issue 20 §4 to measure, and range reads would first need per-block checksums in the manifest).

The working set: a batch may touch ``touched`` shards (two for a run of samples that crosses a shard
boundary in order "none"; the shards of a window of blocks in block order; up to ``batch_size`` in
exact order), and ``AHEAD_SHARDS`` more are fetched ahead of use, several at once. ``keep`` = their sum
(at most every shard) is what a process holds; the cache limit must hold ``keep`` x the largest shard,
or the loader is refused at construction with that number (Mosaic deadlocks there: streaming#417).

Settings: ``LoaderOptions(cache_dir=..., cache_bytes=...)``, else ``STREAMLOAD_CACHE_DIR`` (default
``$XDG_CACHE_HOME/streamload`` or ``~/.cache/streamload``) and ``STREAMLOAD_CACHE_BYTES`` (default 10 GiB).
Each dataset URL gets its own folder below it. The cache object is per process (a forked or unpickled
copy makes its own on first use); the table of shards pickles as three arrays.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..base.process import current_pid
from ..errors import InvalidOptionError
from ..format.manifest import FileInfo, ShardInfo, SplitInfo
from ..options import LoaderOptions
from ..places.bucket import BucketGeneration, BucketPlace
from ..store import Lease, ShardCache

CACHE_DIR_ENV = "STREAMLOAD_CACHE_DIR"
CACHE_BYTES_ENV = "STREAMLOAD_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 10 * 2**30
AHEAD_SHARDS = 3  # shards fetched ahead of use, concurrently


def cache_root(options: LoaderOptions) -> Path:
    if options.cache_dir is not None:
        return Path(options.cache_dir)
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streamload"


def cache_limit(options: LoaderOptions) -> int:
    if options.cache_bytes is not None:
        return options.cache_bytes
    text = os.environ.get(CACHE_BYTES_ENV)
    if not text:
        return DEFAULT_CACHE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidOptionError(f"{CACHE_BYTES_ENV} must be a positive number of bytes, got {text!r}")
    return value


def _span(samples: int, smallest: int) -> int:
    """Shards a run of ``samples`` consecutive samples may touch when no shard holds fewer than ``smallest``."""
    return math.ceil(max(samples - 1, 0) / max(smallest, 1)) + 1


def shards_touched(split: SplitInfo, options: LoaderOptions) -> int:
    """How many shards one batch may read, by shuffle mode (an upper bound, at most every shard)."""
    n = len(split.shards)
    counts = [shard.num_samples for shard in split.shards if shard.num_samples]
    smallest = min(counts, default=1)
    if options.shuffle == "none" and not options.bucket_by_length:
        touched = _span(options.batch_size * options.num_pipelines, smallest)
    elif options.shuffle == "block" and not options.bucket_by_length:
        touched = 2 * options.window_blocks * _span(options.block_size, smallest)  # a batch may straddle two windows
    else:
        touched = options.batch_size
    return min(n, touched)


class RemoteShards:
    """The shards of one split of a bucket dataset, leased from a per-process cache, some fetched ahead."""

    def __init__(self, place: BucketPlace, hold: BucketGeneration, split: SplitInfo, options: LoaderOptions) -> None:
        self.store = place.store
        self.table, self.files_per_shard = place.shard_table(hold, split)
        self.roles = sorted(split.shards[0].files)
        per_shard = self.table.sizes.reshape(-1, self.files_per_shard).sum(axis=1)
        count = len(split.shards)
        self.keep = min(count, shards_touched(split, options) + AHEAD_SHARDS)
        self.ahead = max(0, min(AHEAD_SHARDS, count - 1))
        self.needed = self.keep * int(per_shard.max())
        self.limit = cache_limit(options)
        url = place.url
        self.folder = cache_root(options) / f"{url.bucket}-{hashlib.sha256(url.prefix.encode()).hexdigest()[:12]}"
        if self.limit < self.needed:
            raise InvalidOptionError(
                f"cache_bytes {self.limit:,} is below the working set of {place.location}: {self.keep} shards (a "
                f"batch's and those fetched ahead, shuffle {options.shuffle!r}) x the largest shard "
                f"({int(per_shard.max()):,} bytes) need cache_bytes of at least {self.needed:,} (or "
                f"{CACHE_BYTES_ENV})")
        self._pid = -1
        self._process()  # the folder is made, stale downloads go, now rather than in the first batch

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if not key.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = -1

    def _process(self) -> None:
        """This process's cache, prefetch threads and prefetched leases (new ones after a fork)."""
        if self._pid == current_pid():
            return
        self._cache = ShardCache(self.folder, self.store, self.table, self.limit,
                                 in_flight=self.keep * self.files_per_shard, working_set_bytes=self.needed)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, self.ahead), thread_name_prefix="streamload-prefetch")
        self._ahead: OrderedDict[int, Future[list[Lease] | None]] = OrderedDict()
        self._pid = current_pid()

    def _lease(self, shard: int, wait: bool = True) -> list[Lease] | None:
        """Leases on every file of ``shard`` (fetched and checked first where absent); without ``wait`` (a
        prefetch), None where the cache has no room now: the read fetches it when it needs it."""
        leases: list[Lease] = []
        try:
            for j in range(self.files_per_shard):
                index = shard * self.files_per_shard + j
                lease = self._cache.lease(index) if wait else self._cache.try_lease(index)
                if lease is None:
                    _release(leases)
                    return None
                leases.append(lease)
        except BaseException:
            _release(leases)
            raise
        return leases

    def open(self, shard: int, info: ShardInfo, owner_of: Any = None) -> tuple[Path, ShardInfo, list[Lease]]:
        """(cache folder, the shard's files as named there, the leases to hold while they are read)."""
        self._process()
        with self._lock:
            future = self._ahead.pop(shard, None)
        leases = future.result() if future is not None else None
        if leases is None:
            leases = self._lease(shard)
        assert leases is not None
        files = {role: FileInfo(self.table.file_name(shard * self.files_per_shard + j), file.bytes, file.sha256,
                                file.crc32)
                 for j, (role, file) in enumerate((role, info.files[role]) for role in self.roles)}
        return self.folder, ShardInfo(info.num_samples, files), leases

    def prefetch(self, wanted: list[int], open_now: int) -> None:
        """Fetch ``wanted`` (the shards of the batches coming, in order of use) ahead, within the working set;
        prefetched shards no longer wanted are released."""
        self._process()
        with self._lock:
            for shard in [s for s in self._ahead if s not in wanted]:
                self._ahead.pop(shard).add_done_callback(_release_when_done)
            room = self.keep - open_now - len(self._ahead)
            for shard in wanted:
                if room <= 0:
                    break
                if shard not in self._ahead:
                    self._ahead[shard] = self._pool.submit(self._lease, shard, False)
                    room -= 1

    def all_cached(self) -> bool:
        """Whether every shard's copy is in the cache, as far as this process knows (then fetching ahead saves
        nothing: a read leases the local copy at once); see :meth:`ShardCache.seen_all`."""
        self._process()
        return self._cache.seen_all()

    def pending(self) -> int:
        """Shards fetched ahead (or being fetched) that no reader has taken yet, in this process."""
        return len(self._ahead) if self._pid == current_pid() else 0

    def is_ahead(self, shard: int) -> bool:
        return self._pid == current_pid() and shard in self._ahead

    def close(self) -> None:
        """Cancel the prefetches not yet started and wait for those under way (each bounded by the retry
        budget), releasing what they fetched: a closed dataset leaves no download in progress."""
        if self._pid != current_pid():
            return
        with self._lock:
            for future in self._ahead.values():
                future.add_done_callback(_release_when_done)
            self._ahead.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pid = -1  # a later use starts afresh


def _release(leases: list[Lease]) -> None:
    for lease in leases:
        lease.release()


def _release_when_done(future: Future[list[Lease] | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        _release(future.result() or [])


def hold_until_collected(reader: object, leases: list[Lease]) -> None:
    """Release ``leases`` once ``reader`` is garbage: after the last thread reading from its maps is done."""
    weakref.finalize(reader, _release, leases)


def upcoming(shards: np.ndarray, limit: int) -> list[int]:
    """The first ``limit`` distinct values of ``shards``, in the order they first appear."""
    _values, first = np.unique(shards, return_index=True)
    return shards[np.sort(first)][:limit].tolist()
