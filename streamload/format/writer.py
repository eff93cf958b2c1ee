"""Shard writers: one base class that cuts a stream of chunks into shards; each format subclasses it
(npy/writer.py, hdf5/writer.py).

A writer holds at most the chunk it is given plus the open shard (whose pages live in the page cache
of a memory map or in HDF5's chunk cache, not in anonymous memory), so a dataset larger than RAM
writes in bounded memory. Every finished shard is fsynced and hashed on a background thread
(hashlib and fsync release the GIL) while the next shard is written, at most a few shards behind.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..base.durable import fsync_path
from ..errors import InvalidOptionError, SourceMismatchError
from .manifest import ArraySpec, FileInfo, ShardInfo, hash_file
from .ragged.writer import check_records

TARGET_SHARD_BYTES = 64 * 2**20
_SHARDS_HASHING_AHEAD = 2  # finished shards whose pages wait in the page cache to be hashed
SHARD_MODE = 0o444  # finished shard files: read-only for everyone


def default_shard_size(specs: Mapping[str, ArraySpec]) -> int:
    """Samples per shard so that a shard is about 64 MB, whatever the sample size."""
    sample_bytes = sum(spec.sample_bytes for spec in specs.values())
    return max(1, TARGET_SHARD_BYTES // max(1, sample_bytes))


def file_info(path: Path) -> FileInfo:
    """Make a finished file read-only, fsync it and describe it by size, SHA-256 and CRC-32.

    Read-only (0444): readers map shards, and a file cut short under a map kills the reading process
    (SIGBUS); nobody but root then truncates or rewrites a shard without a deliberate ``chmod`` first.
    """
    os.chmod(path, SHARD_MODE)
    fsync_path(path)
    sha256, crc32 = hash_file(path)
    return FileInfo(name=path.name, bytes=path.stat().st_size, sha256=sha256, crc32=crc32)


class ShardWriter(ABC):
    """Writes one split as consecutive shards of ``shard_size`` samples (the last may be shorter)."""

    def __init__(self, directory: Path, split: str, specs: Mapping[str, ArraySpec], num_samples: int,
                 shard_size: int, on_rows: Callable[[int], object] | None = None) -> None:
        if shard_size <= 0:
            raise InvalidOptionError(f"shard size must be a positive number of samples, got {shard_size}")
        self.directory, self.split, self.specs = Path(directory), split, dict(specs)
        self.num_samples, self.shard_size = num_samples, shard_size
        self._on_rows = on_rows
        self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamload-hash")
        self._finished: list[tuple[int, dict[str, Future[FileInfo]]]] = []  # (samples, role -> file info)
        self._written = 0  # samples written to the whole split
        self._filled = 0  # samples written to the open shard
        self._shard_rows = 0  # capacity of the open shard; 0 when none is open

    def write(self, chunk: Mapping[str, np.ndarray]) -> None:
        rows = self._check_chunk(chunk)
        position = 0
        while position < rows:
            if not self._shard_rows:
                self._shard_rows = min(self.shard_size, self.num_samples - self._written)
                self._begin_shard(len(self._finished), self._shard_rows)
            take = min(rows - position, self._shard_rows - self._filled)
            self._write_rows(self._filled, {k: chunk[k][position:position + take] for k in self.specs})
            position, self._filled, self._written = position + take, self._filled + take, self._written + take
            if self._filled == self._shard_rows:
                self._finish_shard()
        if self._on_rows:
            self._on_rows(rows)

    def close(self) -> tuple[ShardInfo, ...]:
        """Finish the split; the source must have delivered exactly the samples it announced."""
        if self._written != self.num_samples:
            raise SourceMismatchError(
                f"split {self.split!r}: the source announced {self.num_samples} samples but delivered {self._written}"
            )
        shards = tuple(ShardInfo(num_samples=count, files={role: future.result() for role, future in files.items()})
                       for count, files in self._finished)
        self._hashing.shutdown()
        return shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hashing.shutdown(wait=True, cancel_futures=True)
        if self._shard_rows:
            self._abandon_shard()  # a failed build: close the open shard's files so their space can be freed

    def _abandon_shard(self) -> None:
        try:
            self._end_shard()
        except OSError:
            pass  # closing a file on a full disk may fail too; the build reports the first error
        self._shard_rows = 0

    def _check_chunk(self, chunk: Mapping[str, np.ndarray]) -> int:
        if set(chunk) != set(self.specs):
            raise SourceMismatchError(
                f"split {self.split!r}: chunk has arrays {sorted(chunk)}, expected {sorted(self.specs)}")
        rows = {len(array) for array in chunk.values()}
        if len(rows) != 1:
            raise SourceMismatchError(f"split {self.split!r}: arrays of one chunk differ in length: {rows}")
        for key, spec in self.specs.items():
            array = chunk[key]
            if spec.ragged:
                check_records(self.split, key, array, spec)
                continue
            if tuple(array.shape[1:]) != spec.shape or array.dtype.newbyteorder("=") != np.dtype(spec.dtype):
                raise SourceMismatchError(
                    f"split {self.split!r}: array {key!r} has samples of {array.dtype} {array.shape[1:]}, "
                    f"expected {spec.dtype} {spec.shape}"
                )
        (count,) = rows
        if self._written + count > self.num_samples:
            raise SourceMismatchError(f"split {self.split!r}: source delivered more than {self.num_samples} samples")
        return count

    def _finish_shard(self) -> None:
        paths = self._end_shard()
        self._finished.append((self._shard_rows, {role: self._hashing.submit(file_info, path)
                                                  for role, path in paths.items()}))
        if len(self._finished) > _SHARDS_HASHING_AHEAD:  # bound the backlog, and surface hashing errors early
            for future in self._finished[-_SHARDS_HASHING_AHEAD - 1][1].values():
                future.result()
        self._filled = self._shard_rows = 0

    def _shard_stem(self, index: int) -> str:
        return f"{self.split}-{index:05d}"

    @abstractmethod
    def _begin_shard(self, index: int, num_samples: int) -> None: ...

    @abstractmethod
    def _write_rows(self, offset: int, arrays: Mapping[str, np.ndarray]) -> None: ...

    @abstractmethod
    def _end_shard(self) -> dict[str, Path]:
        """Close the open shard's files and return them by role."""
