"""Writes that survive a crash: data flushed to storage before anything points at it.

A build's shards, its manifest switch and a training checkpoint all follow the same rule: write,
fsync, then publish with an atomic rename, and fsync the folder so the rename itself is on disk.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to storage, so a crash cannot lose it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and flush it to storage before returning."""
    with open(path, "w", encoding="utf-8") as stream:
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
