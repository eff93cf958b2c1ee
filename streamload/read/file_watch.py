"""The shard files a process holds open: enough descriptors for all of them, and one inotify descriptor
that tells, in one ``read`` per batch, whether any of them changed since it was opened."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import threading
import weakref

from ..format.reader import ShardReader

FILES_PER_MAPPED_ARRAY = 2  # our descriptor (for read hints) and the one Python's mmap keeps for itself
_SPARE_FILES = 256


def allow_open_files(needed: int) -> None:
    """Raise the soft limit on open files toward the hard one if every shard's maps would not fit.

    A 40M-sample MNIST set has 468 shards, two arrays each: ~1,900 descriptors, over the common
    default soft limit of 1,024 (the hard limit is usually far higher).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


class ChangeWatch:
    """inotify watches on this process' open shard files: one ``read`` per batch says whether any was
    written, cut or chmod-ed, where readers would otherwise ``fstat`` every shard file a batch touches
    (~1 us each; a batch of random samples from a large set touches hundreds). Once a change is seen, or
    where inotify is missing or out of watches, readers go back to an ``fstat`` before every read.
    Not seen (nor by ``fstat``'s size): writes through another process' shared writable map.
    The shard cache's copies are watched for writes only: the cache itself sets their access time
    (``touch``, an IN_ATTRIB) on every lease, which leaves their contents and modification time alone.
    """

    ANY = 0x2 | 0x4 | 0x02000000  # IN_MODIFY (writes, truncation), IN_ATTRIB (chmod, touch), IN_DONT_FOLLOW
    WRITES = 0x2 | 0x02000000  # IN_MODIFY, IN_DONT_FOLLOW: for the cache's copies

    def __init__(self, mask: int = ANY) -> None:
        self.fd, self.changed, self._lock, self._mask = -1, False, threading.Lock(), mask
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._add_watch = libc.inotify_add_watch
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self.fd = fd
            weakref.finalize(self, os.close, fd)

    def watch(self, reader: ShardReader) -> bool:
        """Watch the files of a reader just opened; False when they cannot all be watched."""
        if self.fd < 0 or self.changed:
            return False
        try:
            for path, fd in reader.files():
                if self._add_watch(self.fd, os.fsencode(path), self._mask) < 0:
                    return False
                if os.lstat(path).st_ino != os.fstat(fd).st_ino:  # the name no longer leads to the open file
                    return False
        except OSError:
            return False
        return True

    def quiet(self) -> bool:
        """True while no watched file has changed; after the first change, False for good."""
        with self._lock:  # a thread must not see "quiet" while another has just taken the event away
            if not self.changed:
                try:
                    os.read(self.fd, 65536)
                except BlockingIOError:
                    return True
                self.changed = True
            return False
