"""A local cache of remote shards, bounded by a byte limit, shared safely by the processes of one machine.

The rules, and why each holds:

- **The limit is never passed.** The folder's bytes are counted from the folder itself (every file, a
  download in progress at its full size) under an exclusive ``flock`` on ``.cache.lock``, and a download
  starts only once its whole size fits; otherwise least recently used shards are evicted, and if
  still nothing fits the fetch waits for a reader to let go, up to ``wait_s``, then raises
  CacheFullError naming the bytes it needs. Files the cache did not make count but are never removed.
- **A leased shard is never evicted.** A lease holds a shared ``flock`` on the shard's file; eviction
  removes only files it can lock exclusively, so a shard in use by any thread or process on the
  machine stays, and a killed reader's leases end with it (the kernel drops its locks).
- **Least recently used first.** Taking and returning a lease sets the file's access time (never its
  modification time, which a reader of the open file compares to notice a changed shard); eviction goes
  oldest first.
- **A working set that cannot fit is refused at construction**, with the limit it needs: ``in_flight``
  shards (the reader's prefetch depth, what it may hold at once) times the largest shard. Below that,
  readers would wait on one another forever (streaming#417).
- **Only checked, complete copies are ever used**: see :mod:`streamload.store.cachefiles`. A mismatch
  is fetched again once, then raises ShardCorruptError.
- **Nothing whose only copy is local is evicted**: the cache holds only copies of remote objects that
  it downloaded itself; it has no way to put a local-only file in.

One ShardCache object per process and folder; after a fork it reopens its lock file and forgets its
parent's leases (those stay the parent's), so the cache lock excludes parent and child too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..base.durable import open_in_folder
from ..base.process import current_pid
from ..errors import CacheFullError, InvalidOptionError, ShardCorruptError
from .cachefiles import LOCK_NAME, FolderEntry, ShardTable, VerifyingSink, is_part_of, part_name, scan
from .protocol import ObjectStore

POLL_S = 0.05  # how often a waiting fetch looks again
DEFAULT_WAIT_S = 120.0  # how long a fetch waits for room before CacheFullError


def touch(fd: int) -> None:
    """Mark a cached shard used now: its access time only (the modification time stays the download's)."""
    os.utime(fd, ns=(time.time_ns(), os.fstat(fd).st_mtime_ns))


class Lease:
    """A shard's checked local copy, kept in the cache until :meth:`release` (or the ``with`` block ends)."""

    __slots__ = ("_cache", "index", "path", "_held")

    def __init__(self, cache: ShardCache, index: int, path: Path) -> None:
        self._cache, self.index, self.path, self._held = cache, index, path, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._cache._release(self.index)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ShardCache:
    """Shards of ``shards`` fetched from ``store`` into ``folder``, never more than ``limit_bytes`` there."""

    def __init__(self, folder: Path, store: ObjectStore, shards: ShardTable, limit_bytes: int, in_flight: int,
                 *, wait_s: float = DEFAULT_WAIT_S, working_set_bytes: int | None = None) -> None:
        if in_flight < 1:
            raise InvalidOptionError(f"in_flight must be at least 1, got {in_flight}")
        largest = int(shards.sizes.max())
        needed = in_flight * largest if working_set_bytes is None else working_set_bytes
        if limit_bytes < needed:
            what = "it needs" if working_set_bytes is not None else \
                f"{in_flight} shards in flight x the largest shard ({largest:,} bytes) need"
            raise InvalidOptionError(f"cache limit {limit_bytes:,} bytes is below the working set: {what} a limit of "
                                     f"at least {needed:,} bytes")
        self.folder, self.store, self.shards = Path(folder), store, shards
        self.limit_bytes, self.wait_s = limit_bytes, wait_s
        self._disk_full = False  # the last fetch that found no room found the disk full, not the limit reached
        # each shard's copy's name, once (not again in every forked worker); equal files share one name
        self._names = np.array([shards.file_name(i) for i in range(len(shards))])
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open_process_state()
        with self._locked():
            self._remove_stale_parts()

    def _open_process_state(self) -> None:
        """Per process: the lock file's own descriptor, lease counts and the descriptors holding them."""
        self._pid = current_pid()
        self._thread_lock = threading.Lock()
        self._lock_fd = open_in_folder(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, folder_may_be_link=True)
        self._leases = np.zeros(len(self.shards), np.int32)
        self._fds = np.full(len(self.shards), -1, np.int32)
        self._seen = np.isin(self._names, [entry.name for entry in scan(self.folder) if entry.kind == "shard"])
        self._all_seen = bool(self._seen.all())

    def _mark_seen(self, where: int | np.ndarray, seen: bool) -> None:
        """Record whether the copies at ``where`` (an index or a mask) are here, and so whether all are: kept as one
        flag because :meth:`seen_all` is asked every batch and this changes only on a lease, a download or an
        eviction."""
        self._seen[where] = seen
        self._all_seen = bool(self._seen.all())

    def _after_fork(self) -> None:
        if self._pid != current_pid():
            for fd in [self._lock_fd, *self._fds[self._fds >= 0].tolist()]:
                os.close(fd)  # the child's copies; the parent's locks stay with the parent
            self._open_process_state()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's threads, then every process on the machine, one at a time."""
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def seen_all(self) -> bool:
        """Whether this process last saw a checked copy of every shard here: from one scan of the folder when it
        started, then its own leases, downloads and evictions, never a look at the folder (it is asked every batch).
        A hint for fetching ahead: another process may have evicted one since; a lease then fetches it again."""
        self._after_fork()
        return self._all_seen

    def path(self, index: int) -> Path:
        return self.folder / str(self._names[index])

    def used_bytes(self) -> int:
        """The folder's bytes as the limit counts them (downloads in progress at their full size)."""
        return sum(entry.size for entry in scan(self.folder))

    # --- leases ------------------------------------------------------------------------------------------

    def lease(self, index: int) -> Lease:
        """Shard ``index``'s checked local copy, fetched first if absent; held until the lease is released.
        Waits up to ``wait_s`` for room (or for another process's download of it), then CacheFullError."""
        lease = self._lease_within(index, self.wait_s)
        if lease is None:
            raise self._full_error(index)
        return lease

    def try_lease(self, index: int) -> Lease | None:
        """As :meth:`lease`, but None at once rather than wait for room or for another process's download: a
        prefetch must never hold its thread (nor the interpreter's exit, which joins it) for ``wait_s``."""
        return self._lease_within(index, 0.0)

    def _lease_within(self, index: int, wait_s: float) -> Lease | None:
        self._after_fork()
        deadline = time.monotonic() + wait_s
        while True:
            with self._locked():
                if self._take_local(index):
                    return Lease(self, index, self.path(index))
                if not self._download_in_progress(index):
                    reserved = self._reserve(index)
                    if reserved is not None:
                        break
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)
        self._fetch(index, *reserved)
        return Lease(self, index, self.path(index))

    def _take_local(self, index: int) -> bool:
        """Under the lock: a lease on a copy already here (this process's or on disk); False if none."""
        if self._leases[index] > 0:
            self._leases[index] += 1
            return True
        try:
            fd = os.open(self.path(index), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._mark_seen(index, False)
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)  # never waits: exclusive holders hold the cache lock, which we have
        touch(fd)
        self._fds[index], self._leases[index] = fd, 1
        self._mark_seen(index, True)
        return True

    def _release(self, index: int) -> None:
        with self._thread_lock:
            if self._pid != current_pid() or self._leases[index] <= 0:
                return  # a lease taken before a fork belongs to the parent
            self._leases[index] -= 1
            if self._leases[index] == 0:
                fd, self._fds[index] = int(self._fds[index]), -1
                touch(fd)  # last use: the least recently used shard is the one released longest ago
                os.close(fd)

    # --- room --------------------------------------------------------------------------------------------

    def _download_in_progress(self, index: int) -> bool:
        """Whether a live process is fetching this shard (then we wait for its copy instead of fetching too)."""
        sha = str(self.shards.sha256[index])
        return any(is_part_of(entry.name, sha) and not self._try_remove(entry.name) for entry in scan(self.folder))

    def _try_remove(self, name: str) -> bool:
        """Remove ``name`` if no process holds it (no lease, no download); False if it is held."""
        try:
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops the exclusive lock too; we still hold the cache lock
        os.unlink(self.folder / name)
        self._mark_seen(self._names == name, False)
        return True

    def _remove_stale_parts(self) -> None:
        for entry in scan(self.folder):
            if entry.kind == "part":
                self._try_remove(entry.name)

    def _reserve(self, index: int) -> tuple[Path, int] | None:
        """Under the lock: evict until the shard fits, then create its preallocated part file; None if no room."""
        size = int(self.shards.sizes[index])
        entries = scan(self.folder)
        used = sum(entry.size for entry in entries)
        for entry in self._by_age(entries):
            if used + size <= self.limit_bytes:
                break
            if self._try_remove(entry.name):
                used -= entry.size
        if used + size > self.limit_bytes:
            self._disk_full = False
            return None
        part = self.folder / part_name(str(self.shards.sha256[index]), size)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if self._allocate(fd, size):
                return part, fd
        except BaseException:
            os.close(fd)
            os.unlink(part)
            raise
        os.close(fd)
        os.unlink(part)
        self._disk_full = True
        return None

    @staticmethod
    def _by_age(entries: list[FolderEntry]) -> list[FolderEntry]:
        """The shards and downloads of the folder, least recently used first (what eviction tries)."""
        return sorted((e for e in entries if e.kind in ("part", "shard")), key=lambda e: e.used_ns)

    def _allocate(self, fd: int, size: int) -> bool:
        """Reserve the part file's bytes on disk. A full disk (below the limit: the disk is smaller, or shared)
        evicts least recently used shards until they fit; False if none can go (all leased or being fetched)."""
        while size:
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
            if not self._evict_one():
                return False
        return True

    def _evict_one(self) -> bool:
        """Under the lock: remove the least recently used shard or download that no process holds (never the
        part file being allocated: its holder's lock keeps it); False if every one is held."""
        return any(self._try_remove(entry.name) for entry in self._by_age(scan(self.folder)))

    def _full_error(self, index: int) -> CacheFullError:
        entries = scan(self.folder)
        where, remedy = (("on its disk, which is full,", "free space on that disk") if self._disk_full else
                         (f"under the limit of {self.limit_bytes:,} bytes", "release leases or raise the limit"))
        return CacheFullError(
            f"cache {self.folder}: {self.shards.keys[index]} ({int(self.shards.sizes[index]):,} bytes) found no room "
            f"{where} in {self.wait_s:g} s: {len(entries)} files hold {sum(e.size for e in entries):,} bytes, all "
            f"leased or being fetched; {remedy} (nothing was fetched)")

    # --- fetching ----------------------------------------------------------------------------------------

    def _fetch(self, index: int, part: Path, fd: int) -> None:
        """Download into the part file, check it (a mismatch is fetched once more), rename it into place."""
        key, sha, size = str(self.shards.keys[index]), str(self.shards.sha256[index]), int(self.shards.sizes[index])
        sink: VerifyingSink | None = None
        try:
            sink = VerifyingSink(fd, size)
            for _attempt in range(2):
                self.store.get_into(key, sink)
                if sink.matches(sha):
                    break
            else:
                raise ShardCorruptError(f"{key}: fetched twice and both copies differ from the manifest "
                                        f"({sink.describe()}; expected {size:,} bytes, SHA-256 {sha[:16]}...); "
                                        "not used")
            sink.close(sync=True)  # the name below promises complete bytes, after a crash too
        except BaseException:
            if sink is not None:
                sink.close(sync=False)
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        with self._locked():
            os.rename(part, self.path(index))
            touch(fd)
            self._fds[index], self._leases[index] = fd, 1
            self._mark_seen(index, True)
