"""What a shard cache folder holds, and how a download is checked on its way in.

A cached shard is named after its SHA-256 (``<64 hex digits><suffix>``): the name says what the bytes
must be, and two datasets that share a shard share its copy. A download in progress is a hidden
``.part-<sha256>-<size>-<pid>-<token>`` file, preallocated to the shard's full size (so the folder's
bytes already count it, and a full disk says so before the first byte is fetched) and held under a
shared ``flock`` by its downloader: a part file nobody holds belongs to a killed process and is
removed, never renamed into place. Only a download whose size and SHA-256 match the manifest's is
renamed to the shard's name, so a file under that name is always complete and checked.

Per-shard facts (keys, sizes, hashes) live in numpy arrays (:class:`ShardTable`), not in one Python
object per shard: a worker process inherits three arrays, not thousands of objects (streaming#652).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InvalidOptionError

PART_PREFIX = ".part-"
LOCK_NAME = ".cache.lock"
_SHARD_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})(?P<suffix>(\.[A-Za-z0-9]+)*)")
_PART_NAME = re.compile(r"\.part-(?P<sha>[0-9a-f]{64})-(?P<size>\d+)-\d+-[0-9a-f]+")


@dataclass(frozen=True)
class ShardTable:
    """The shards a cache may hold: key (relative to the store's prefix), size and SHA-256, as arrays."""

    keys: np.ndarray  # str
    sizes: np.ndarray  # int64
    sha256: np.ndarray  # str, 64 lowercase hex digits

    @classmethod
    def of(cls, keys: Sequence[str], sizes: Sequence[int], sha256: Sequence[str]) -> ShardTable:
        """A table from the manifest's lists, checked: same lengths, sizes >= 0, well-formed hashes."""
        table = cls(np.asarray(keys, dtype=str), np.asarray(sizes, dtype=np.int64),
                    np.char.lower(np.asarray(sha256, dtype=str)))
        if not len(table.keys) == len(table.sizes) == len(table.sha256) or len(table.keys) == 0:
            raise InvalidOptionError(f"a shard table needs equal, non-empty lists: {len(table.keys)} keys, "
                                     f"{len(table.sizes)} sizes, {len(table.sha256)} hashes")
        if (table.sizes < 0).any() or not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in table.sha256):
            raise InvalidOptionError("a shard table needs sizes >= 0 and SHA-256 digests of 64 hex digits")
        return table

    def __len__(self) -> int:
        return len(self.keys)

    def file_name(self, index: int) -> str:
        """The cached copy's name: the shard's hash and its key's suffixes (``.npy``, ``.h5``)."""
        return str(self.sha256[index]) + "".join(PurePosixPath(str(self.keys[index])).suffixes)


@dataclass(frozen=True)
class FolderEntry:
    """One file of a cache folder: a checked shard, a part (with the size it reserves) or something else."""

    name: str
    kind: str  # "shard", "part" or "other"
    size: int  # the bytes it counts for: a part counts its full reservation
    used_ns: int  # last use: the access time, which the cache sets on every lease and release


def scan(folder: Path) -> list[FolderEntry]:
    """Every regular file of ``folder`` but the lock file; foreign files count, and are never removed."""
    entries = []
    with os.scandir(folder) as found:
        for entry in found:
            if entry.name == LOCK_NAME or not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            part = _PART_NAME.fullmatch(entry.name)
            kind = "part" if part else "shard" if _SHARD_NAME.fullmatch(entry.name) else "other"
            size = max(stat.st_size, int(part["size"])) if part else stat.st_size
            entries.append(FolderEntry(entry.name, kind, size, stat.st_atime_ns))
    return entries


def part_name(sha256: str, size: int) -> str:
    return f"{PART_PREFIX}{sha256}-{size}-{os.getpid()}-{secrets.token_hex(4)}"


def is_part_of(name: str, sha256: str) -> bool:
    found = _PART_NAME.fullmatch(name)
    return found is not None and found["sha"] == sha256


class VerifyingSink:
    """Writes a download into its preallocated part file while hashing it; never past ``size``.

    The part file is mapped, so a store can read the body straight into it (:class:`ObjectBuffer`): one copy,
    socket to page cache. Mapping is safe here: ``posix_fallocate`` reserved every block (a full disk cannot
    fault a write), and nothing but this downloader truncates a part file it holds.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self._map = mmap.mmap(fd, size) if size else None
        self._view = memoryview(self._map) if self._map is not None else memoryview(bytearray())
        self.restart()

    def restart(self) -> None:
        self.written, self.overflow, self.digest = 0, False, hashlib.sha256()

    def room(self) -> memoryview:
        return self._view[self.written:]

    def filled(self, count: int) -> None:
        self.digest.update(self._view[self.written:self.written + count])
        self.written += count

    def write(self, data: memoryview) -> None:
        if self.overflow or self.written + len(data) > self.size:
            self.overflow = True  # more bytes than the manifest says: a mismatch, and the limit stays kept
            return
        self._view[self.written:self.written + len(data)] = data
        self.filled(len(data))

    def close(self, *, sync: bool) -> None:
        """Unmap; with ``sync``, first write the bytes to disk (the shard's name will promise them)."""
        mapped, self._map = self._map, None
        if mapped is not None:
            if sync:
                mapped.flush()
            self._view.release()
            with contextlib.suppress(BufferError):  # a slice still held (by a failed read's traceback): the
                mapped.close()  # map goes with it, and the error being raised stays the one the caller sees
        if sync:
            os.fsync(self.fd)

    def matches(self, sha256: str) -> bool:
        return not self.overflow and self.written == self.size and self.digest.hexdigest() == sha256

    def describe(self) -> str:
        got = "more than expected" if self.overflow else f"{self.written} bytes"
        return f"{got}, SHA-256 {self.digest.hexdigest()[:16]}..."
