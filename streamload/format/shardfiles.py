"""Opening shard files for reading, and noticing when one changes under a reader.

Shards come from folders others made (downloaded, unpacked, copied): a shard must be a regular file
inside the dataset folder, never a symbolic link (which could lead to ``/etc/passwd`` or a token) nor
a FIFO (opening one waits for a writer, forever). And a shard cut short while it is memory-mapped kills
the reading process with SIGBUS at the first touch of a page past its new end, so readers remember what
each file looked like when they opened it and compare before reading.
"""

from __future__ import annotations

import os
import stat
import weakref
from pathlib import Path

from ..base.durable import open_in_folder
from ..errors import ShardChangedError, ShardFormatError, UnsafeFileError


def irregular_shard(path: Path, mode: int) -> ShardFormatError | None:
    """The error for a shard file whose ``lstat``/``fstat`` mode is not a regular file's, or None."""
    if stat.S_ISREG(mode):
        return None
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    return ShardFormatError(f"{path}: is {kind}; shard files must be regular files inside the dataset folder")


def open_shard_file(path: Path) -> int:
    """A read-only descriptor of the shard file ``path``, which must be a regular file, not a link to one.

    Opened as streamload opens its own files (:func:`~streamload.base.durable.open_in_folder`: ``O_NOFOLLOW``,
    and ``O_NONBLOCK`` so that a FIFO is refused by ``fstat`` instead of waiting for a writer): a planted
    link never makes a reader serve (or an error show) a file from outside the dataset.
    """
    try:
        fd = open_in_folder(path, os.O_RDONLY, folder_may_be_link=True)
    except UnsafeFileError:
        raise irregular_shard(path, os.lstat(path).st_mode) or ShardFormatError(f"{path}: is not a regular file") \
            from None
    os.set_blocking(fd, True)
    return fd


class OpenShardFile:
    """One open shard file (its own descriptor, closed with the object) and its size and modification
    time when opened (a ``chmod`` alone is not a change)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        weakref.finalize(self, os.close, fd)
        status = os.fstat(fd)
        self.opened = status.st_size, status.st_mtime_ns

    def check(self) -> None:
        """Raise ShardChangedError if the file changed since it was opened (before its pages are touched).

        Fields compared one by one, not as a tuple: this can run once per shard file per batch (~0.8 us).
        """
        status = os.fstat(self.fd)
        size, modified = self.opened
        if status.st_size != size or status.st_mtime_ns != modified:
            self._changed(status.st_size)

    def _changed(self, size: int) -> None:
        was = self.opened[0]
        what = (f"cut from {was} to {size} bytes" if size < was else f"grown from {was} to {size} bytes"
                if size > was else "written or touched in place")
        raise ShardChangedError(f"{self.path}: the shard file changed while the dataset was reading it ({what}); "
                                "shards must not change while in use: restore the file or rebuild the dataset")
