"""Writes that survive a crash: data flushed to storage before anything points at it.

A build's shards, its manifest switch and a training checkpoint all follow the same rule: write,
fsync, then publish with an atomic rename, and fsync the folder so the rename itself is on disk.

Every file streamload creates, appends to or locks is opened with :func:`open_in_folder`: never
through a symbolic link (a dataset folder is often made by someone else; a planted ``.build.lock``
link would otherwise empty the file it points at), and only when it is a regular file (a FIFO
would block the open forever).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

from ..errors import UnsafeFileError

_FOLDER_ONLY = getattr(os, "O_PATH", os.O_RDONLY)


def open_in_folder(path: Path, flags: int, mode: int = 0o644, *, folder_may_be_link: bool = False) -> int:
    """Open ``path`` with ``flags`` without following a link at its name nor, by default, at its folder.

    ``folder_may_be_link``: the folder is one the user named (a dataset folder may be a link to
    another disk); folders streamload makes inside it (generations, staging) never are.
    Raises UnsafeFileError naming a link or non-regular file; its target is never touched.
    """
    # O_PATH: a folder the user may only search (no read permission) still serves as the anchor
    folder_flags = _FOLDER_ONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if folder_may_be_link else os.O_NOFOLLOW)
    try:
        folder_fd = os.open(path.parent, folder_flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path.parent):
            raise UnsafeFileError(f"{path.parent}: is a symbolic link where streamload keeps its own folder; "
                                  "it is not followed (remove the link)") from None
        raise
    try:
        fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=folder_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(f"{path}: is a symbolic link; streamload never writes or locks through a link "
                                  "(it is left as it is: remove it)") from None
        raise
    finally:
        os.close(folder_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{path}: is not a regular file; streamload writes and locks only its own files "
                              "(it is left as it is: remove it)")
    return fd


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to storage, so a crash cannot lose it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (never through a link) and flush it to storage before returning."""
    fd = open_in_folder(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, folder_may_be_link=True)
    with open(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def replace_durably(path: Path, text: str, temporary_prefix: str = ".") -> None:
    """Put ``text`` at ``path`` atomically: readers see the old content or the new, never a mix.

    The text is first written beside ``path`` under a name starting with ``temporary_prefix`` (so
    a cleaner that knows the prefix can remove what a killed writer left).
    """
    temporary = path.parent / f"{temporary_prefix}{path.name}-{uuid.uuid4().hex[:8]}.tmp"
    write_durably(temporary, text)
    os.replace(temporary, path)
    fsync_path(path.parent)
