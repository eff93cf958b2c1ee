"""Opt-in checks of shard contents before they are used (``LoaderOptions(verify="once")``).

A flipped bit in a shard would otherwise be served as data until someone runs ``--verify``. With
``verify="once"`` each shard file is checked against the CRC-32 its manifest recorded (SHA-256 for
format-1 manifests) before its first use, and only once per generation: a file that passed is noted
in the generation's ``.verified`` record, so worker processes and later runs do not hash it again.
A shard that fails raises :class:`~streamload.errors.ShardCorruptError` naming the file.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from .errors import ShardCorruptError
from .manifest import FileInfo, sha256_file
from .shardfiles import open_shard_file

RECORD = ".verified"
_BLOCK = 4 * 2**20


def crc32_file(path: Path) -> int:
    """CRC-32 of a shard file, opened as one (no link followed, no FIFO waited on)."""
    crc = 0
    with os.fdopen(open_shard_file(path), "rb") as stream:
        while block := stream.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _entry(info: FileInfo) -> str:
    return f"{info.name} {info.crc32 if info.crc32 is not None else info.sha256}"


def recorded(root: Path) -> set[str]:
    """The files of this generation that passed a check before (empty if none or unreadable)."""
    try:
        return set((root / RECORD).read_text().splitlines())
    except OSError:
        return set()


def check_files(root: Path, files: Iterable[FileInfo], passed: set[str]) -> None:
    """Check each file not in ``passed`` against the manifest; add it there, and to the record, when sound."""
    for info in files:
        entry = _entry(info)
        if entry in passed:
            continue
        path = root / info.name
        if info.crc32 is not None:
            actual, expected = f"{crc32_file(path):08x}", f"{info.crc32:08x}"
            kind = "CRC-32"
        else:
            actual, expected, kind = sha256_file(path), info.sha256, "SHA-256"
        if actual != expected:
            raise ShardCorruptError(f"{path}: corrupt shard: its {kind} is {actual}, the manifest says {expected}; "
                                    f"restore or rebuild it (`build_shards.py --verify {root}` checks every shard)")
        passed.add(entry)
        _note(root, entry)


def _note(root: Path, entry: str) -> None:
    """Append to the record; a read-only dataset just checks again in the next process."""
    try:
        fd = os.open(root / RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.write(fd, f"{entry}\n".encode())  # one short O_APPEND write: lines of racing writers never interleave
    finally:
        os.close(fd)
