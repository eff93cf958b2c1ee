"""Byte-level access to shard files: read-only memory maps, and hints that start reads early.

``issue`` and the arrays' ``prefetch``/``span_hints`` only ask the kernel to start reading
(``POSIX_FADV_WILLNEED``) the pages a later gather of those rows will touch: exact pages for
scattered rows, long ranges for a contiguous span. They never change what is read, only how soon
it can be. A hint holds the object owning its descriptor, so the descriptor outlives it.
"""

from __future__ import annotations

import mmap
import os
import weakref
from pathlib import Path

import numpy as np

from .errors import ShardFormatError
from .manifest import ArraySpec

PAGE = mmap.PAGESIZE
SMALL_SAMPLE_PAGE_SHARE = 64  # samples this many to a page (labels): hint the whole array once, not per page
_FADVICE = {getattr(mmap, f"MADV_{name}"): getattr(os, f"POSIX_FADV_{name}")
            for name in ("NORMAL", "RANDOM", "SEQUENTIAL") if hasattr(mmap, f"MADV_{name}")}


Hint = tuple["MappedArray | ChunkedArray", int, int]  # (holder of the file descriptor, byte offset, length)


def issue(hints: list[Hint]) -> None:
    """Queue reads of the hinted byte ranges into the page cache; returns without waiting for them."""
    for holder, start, length in hints:
        os.posix_fadvise(holder.fd, start, length, os.POSIX_FADV_WILLNEED)


def prefetch_mapped_rows(arrays: list[MappedArray], counts: list[int], rows: np.ndarray) -> None:
    """Hint sorted ``rows`` whose first ``counts[0]`` lie in ``arrays[0]``, the next in ``arrays[1]``...

    One pass over the whole batch rather than per shard: in exact order a batch of 64 touches about
    as many shards, and per-shard numpy calls would cost more than the hints save. Pages shared or
    adjacent within one file are merged into one hint.
    """
    if not arrays:
        return
    size = arrays[0].sample_bytes
    if size * SMALL_SAMPLE_PAGE_SHARE <= PAGE:
        for array in arrays:
            array.prefetch_whole_once()
        return
    fds = [array.fd for array, count in zip(arrays, counts) for _ in range(count)]
    bases = np.repeat(np.array([array.offset for array in arrays], dtype=np.int64), counts)
    starts = bases + np.asarray(rows, dtype=np.int64) * size
    run_fd, run_first, run_last = -1, 0, -2
    for fd, first, last in zip(fds, (starts // PAGE).tolist(), ((starts + size - 1) // PAGE).tolist()):
        if fd == run_fd and first <= run_last + 1:
            run_last = max(run_last, last)
            continue
        if run_fd >= 0:
            os.posix_fadvise(run_fd, run_first * PAGE, (run_last - run_first + 1) * PAGE, os.POSIX_FADV_WILLNEED)
        run_fd, run_first, run_last = fd, first, last
    os.posix_fadvise(run_fd, run_first * PAGE, (run_last - run_first + 1) * PAGE, os.POSIX_FADV_WILLNEED)


class MappedArray:
    """A read-only memory map of an array stored plainly at ``offset`` in ``path``.

    A descriptor stays open beside the map so hints can go through ``posix_fadvise``, which, unlike
    ``mmap.madvise``, releases the GIL while the kernel queues the reads.
    """

    def __init__(self, path: Path, offset: int, spec: ArraySpec, num_samples: int) -> None:
        self.path, self.offset, self.sample_bytes = path, offset, spec.sample_bytes
        expected = offset + num_samples * spec.sample_bytes
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        size = os.fstat(self.fd).st_size
        if size < expected:
            raise ShardFormatError(f"{path}: truncated: {size} bytes, its array needs {expected}")
        self._map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) if size else None
        self.array = np.frombuffer(self._map, dtype=np.dtype(spec.dtype), count=num_samples * int(np.prod(spec.shape)),
                                   offset=offset).reshape((num_samples, *spec.shape))
        self._whole_hinted = False

    def advise(self, advice: int, start: int = 0, length: int | None = None) -> None:
        """``madvise`` on a byte range of the mapping (page-aligned outward)."""
        if self._map is None:
            return
        aligned = start - start % PAGE
        end = len(self._map) if length is None else min(len(self._map), start + length)
        self._map.madvise(advice, aligned, end - aligned)

    def prefetch(self, rows: np.ndarray) -> None:
        """Queue reads of the pages that sorted ``rows`` lie on (the whole array if samples are tiny)."""
        if len(rows) and self._map is not None:
            prefetch_mapped_rows([self], [len(rows)], rows)

    def prefetch_whole_once(self) -> None:
        """Tiny samples (labels): every page is needed within a few batches, so read it all, once."""
        if not self._whole_hinted:
            self._whole_hinted = True
            issue(self.span_hints(0, len(self.array)))

    def span_hints(self, first: int, last: int) -> list[Hint]:
        """One sequential read of rows ``[first, last)``."""
        if last <= first or self._map is None or not self.sample_bytes:
            return []
        start = self.offset + first * self.sample_bytes
        aligned = start - start % PAGE
        return [(self, aligned, self.offset + last * self.sample_bytes - aligned)]


class ChunkedArray:
    """An h5py dataset stored in chunks (e.g. compressed), with the file descriptor for hints."""

    def __init__(self, dataset, fd: int | None) -> None:  # noqa: ANN001 - an h5py.Dataset
        self.dataset, self.fd = dataset, fd
        self.chunk_rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])

    def chunk_hints(self, chunks: np.ndarray) -> list[Hint]:
        """The stored (compressed) bytes of the given sorted chunk numbers, neighbours in the file merged."""
        if self.fd is None or self.dataset.chunks is None:
            return []
        tail = (0,) * (self.dataset.ndim - 1)
        hints: list[Hint] = []
        for chunk in chunks.tolist():
            info = self.dataset.id.get_chunk_info_by_coord((chunk * self.chunk_rows, *tail))
            if info.byte_offset is None:
                continue
            if hints and hints[-1][1] + hints[-1][2] == info.byte_offset:
                hints[-1] = (self, hints[-1][1], hints[-1][2] + info.size)
            else:
                hints.append((self, info.byte_offset, info.size))
        return hints

    def prefetch(self, rows: np.ndarray) -> None:
        """Queue reads of the chunks holding sorted ``rows``."""
        issue(self.chunk_hints(np.unique(np.asarray(rows) // self.chunk_rows)))

    def span_hints(self, first: int, last: int) -> list[Hint]:
        if last <= first:
            return []
        return self.chunk_hints(np.arange(first // self.chunk_rows, (last - 1) // self.chunk_rows + 1))

    def advise(self, advice: int) -> None:
        if self.fd is not None and advice in _FADVICE:
            os.posix_fadvise(self.fd, 0, 0, _FADVICE[advice])
