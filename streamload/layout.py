"""Where a dataset's files lie, and the file locks that say who uses them.

A dataset folder DIR (manifest format 2) holds::

    DIR/manifest.json    names the current generation; replaced atomically as the last step of a build
    DIR/gen-000007/      that generation's shards, an identical copy of its manifest and a ``.lock`` file
    DIR/gen-000006/      an older generation, kept while a reader holds a shared lock on its ``.lock``
    DIR/.build.lock      held exclusively by the one build of DIR running now
    DIR/.staging-*       a build in progress (its ``.lock`` held exclusively), or an abandoned one

Every lock is a ``flock`` on an open file: the kernel drops it when the process dies, in whatever PID
namespace it ran, so liveness never depends on process ids. Generation numbers only grow.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from .manifest import Manifest

LOCK_NAME = ".lock"
BUILD_LOCK_NAME = ".build.lock"
FLAT_LOCK_NAME = ".flat.lock"
FLAT_LEFTOVERS_NAME = ".flat-leftovers.json"  # version-1 shard files a build left for garbage collection
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
_GENERATION = re.compile(r"gen-(\d{6,})")
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


def lock_file(path: Path, *, exclusive: bool, wait: bool, create: bool = False) -> int | None:
    """Open and ``flock`` ``path``: the descriptor (closing it unlocks), or None where flock does not work.

    Raises BlockingIOError when ``wait`` is False and another open file holds a conflicting lock,
    FileNotFoundError when ``path`` is missing (and ``create`` is False).
    """
    fd = -1
    if create:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            pass  # a reader without write access: lock the file if it exists
    if fd < 0:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in _NO_LOCKS:
            return None
        raise
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock ``lock_file`` or ``claim`` returned (None: there was none to release)."""
    if fd is not None:
        os.close(fd)


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def generation_number(name: str | None) -> int | None:
    match = _GENERATION.fullmatch(name or "")
    return int(match.group(1)) if match else None


def list_generations(directory: str | os.PathLike) -> list[str]:
    """The generation folders of ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((name for name in names if generation_number(name) is not None), key=generation_number)


def next_generation(directory: str | os.PathLike) -> str:
    """One more than any generation folder in ``directory``: a published number is never used again."""
    numbers = [generation_number(name) or 0 for name in list_generations(directory)]
    return generation_name(1 + max(numbers, default=0))


def shard_root(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Where the shard files of ``manifest`` live: its generation folder, or DIR itself for version 1."""
    return Path(directory) / manifest.generation if manifest.generation else Path(directory)


def claim(path: Path) -> tuple[str, int | None]:
    """Try to lock ``path`` exclusively without waiting.

    ("free", fd) when it is ours now (fd None if the file is missing: nobody can hold it),
    ("held", None) when someone holds it, ("unknown", None) where flock does not work.
    """
    try:
        fd = lock_file(path, exclusive=True, wait=False)
    except BlockingIOError:
        return "held", None
    except FileNotFoundError:
        return "free", None
    return ("unknown", None) if fd is None else ("free", fd)


def file_names(manifest: Manifest) -> list[str]:
    return [info.name for split in manifest.splits.values() for shard in split.shards for info in shard.files.values()]
