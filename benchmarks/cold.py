"""Cold-storage measurement: evict the shards from the page cache, read batches, count what hit the disk.

Everything that reports cold numbers (``scripts/benchmark_loaders.py --cold``, tests of the harness,
the numbers in the README) goes through :func:`cold_pass`, so they all measure the same way:

* throughput is samples delivered per second of wall time, from the first batch to the last;
* amplification is ``read_bytes`` of ``/proc/self/io`` (bytes that really came from the block
  device, counted for every thread of this process, the prefetch thread included) divided by the
  raw bytes of the samples delivered (784 + 1 for an MNIST image and its label).

The eviction is ``posix_fadvise(DONTNEED)`` per file, which cannot evict pages some process still
maps: :func:`cold_pass` refuses to start while this process maps one of the files, but it cannot
see other processes, so run cold passes with no other reader of the same files alive.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamload.base.procstats import drop_page_cache, read_io
from streamload.format.manifest import HDF5_FILE_ROLE, read_manifest
from streamload.options import LoaderOptions
from streamload.places.generations import shard_root
from streamload.read.sampler import IndexSampler

SEQUENTIAL_READ_BYTES = 8 * 2**20


class Loader(Protocol):
    def load(self, epoch: int, batch: int) -> Any: ...


@dataclass(frozen=True)
class ColdResult:
    samples: int
    seconds: float
    read_bytes: int
    delivered_bytes: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.inf

    @property
    def amplification(self) -> float:
        """Bytes read from storage per byte delivered (1.0 = nothing wasted)."""
        return self.read_bytes / self.delivered_bytes if self.delivered_bytes else math.nan


def _batch_samples(batch: Any) -> int:
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    if isinstance(batch, tuple):
        batch = batch[0]
    return len(batch)


def _sample_bytes(loader: Any) -> int:
    """Raw bytes per delivered sample of the arrays the loader reads (x and y: 785 for MNIST)."""
    if hasattr(loader, "sample_bytes"):
        return int(loader.sample_bytes)
    arrays = loader.dataset.info.arrays
    return sum(arrays[key].sample_bytes for key in loader.keys)


def _mapped_files(paths: set[str]) -> set[str]:
    with open("/proc/self/maps") as maps:
        mapped = {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split(maxsplit=5)) == 6}
    return mapped & paths


def _data_files(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    roots = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
    found = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return [p.resolve() for p in found]


def evict(files: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
    """Drop ``files`` (or folders) from the page cache; refuse while this process still maps one."""
    gc.collect()  # loaders that are gone but not yet collected still hold their maps
    paths = _data_files(files)
    still_mapped = _mapped_files({str(p) for p in paths})
    if still_mapped:
        raise RuntimeError(f"cannot evict files this process still maps (close the loader first): "
                           f"{sorted(still_mapped)[:3]}")
    for path in paths:
        drop_page_cache(path)


def _batch_list(batches: int | Iterable[int | tuple[int, int]]) -> list[tuple[int, int]]:
    if isinstance(batches, int):
        return [(0, batch) for batch in range(batches)]
    return [item if isinstance(item, tuple) else (0, int(item)) for item in batches]


def cold_pass(make_loader: Callable[[], Loader], files: str | os.PathLike | Sequence[str | os.PathLike],
              batches: int | Iterable[int | tuple[int, int]], sample_bytes: int | None = None) -> ColdResult:
    """Evict ``files``, make a loader, time ``loader.load`` over ``batches``, then close the loader.

    ``batches`` is a count (batches 0.. of epoch 0), or batch numbers, or (epoch, batch) pairs.
    ``sample_bytes`` defaults to the loader's ``sample_bytes`` or its dataset's raw bytes per sample.
    """
    evict(files)
    loader = make_loader()
    per_sample = _sample_bytes(loader) if sample_bytes is None else sample_bytes
    requests = _batch_list(batches)
    samples = 0
    before = read_io().read_bytes
    start = time.perf_counter()
    for epoch, batch in requests:
        samples += _batch_samples(loader.load(epoch, batch))
    seconds = time.perf_counter() - start
    read_bytes = read_io().read_bytes - before
    if hasattr(loader, "close"):
        loader.close()
    del loader
    gc.collect()
    return ColdResult(samples, seconds, read_bytes, samples * per_sample)


def sequential_pass(files: Sequence[str | os.PathLike], sample_bytes: int, limit_bytes: int | None = None,
                    on_bytes: Callable[[int], object] = lambda _: None) -> ColdResult:
    """The ceiling: read ``files`` front to back in 8 MiB reads, cold, as if every byte were a sample."""
    evict(files)
    total, before, start = 0, read_io().read_bytes, time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as stream:
            while (limit_bytes is None or total < limit_bytes) and (block := stream.read(SEQUENTIAL_READ_BYTES)):
                total += len(block)
                on_bytes(len(block))
    seconds = time.perf_counter() - start
    return ColdResult(total // sample_bytes, seconds, read_io().read_bytes - before, total)


def resident_fraction(files: Sequence[str | os.PathLike], most_files: int = 64) -> float:
    """Share of the pages of ``files`` (up to ``most_files`` of them, spread) in the page cache now, by mincore:
    ~0 right after an eviction that worked, more when another process keeps the files mapped."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    paths = [Path(path) for path in files if Path(path).stat().st_size]
    paths = paths[::max(1, len(paths) // most_files)][:most_files]
    resident = total = 0
    for path in paths:
        with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            pages = -(-len(mapped) // mmap.PAGESIZE)
            flags = (ctypes.c_ubyte * pages)()
            view = np.frombuffer(mapped, dtype=np.uint8)
            status = libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(len(mapped)), flags)
            del view
            if status == 0:
                resident += int((np.frombuffer(flags, dtype=np.uint8) & 1).sum())
                total += pages
    return resident / total if total else 0.0


class PlainGatherLoader:
    """The baseline: ``np.load(mmap_mode="r")`` (npy) or h5py fancy indexing (HDF5), default kernel hints.

    Same indices as streamload's exact shuffle (or any ``LoaderOptions``), sorted per shard.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", sampling: LoaderOptions = LoaderOptions(),
                 keys: tuple[str, ...] = ("x", "y")) -> None:
        manifest = read_manifest(Path(directory))
        self.info, self.keys, self.format = manifest.split(split), keys, manifest.format
        self.sampler = IndexSampler(self.info.num_samples, sampling)
        self.sample_bytes = sum(self.info.arrays[key].sample_bytes for key in keys)
        self._handles: list[Any] = []  # open h5py files
        root = shard_root(directory, manifest)
        self._shards = [self._open(root, shard) for shard in self.info.shards]

    def _open(self, directory: Path, shard) -> dict[str, Any]:  # noqa: ANN001 - a ShardInfo
        if self.format == "npy":
            return {key: np.load(directory / shard.files[key].name, mmap_mode="r") for key in self.keys}
        import h5py

        handle = h5py.File(directory / shard.files[HDF5_FILE_ROLE].name, "r")
        self._handles.append(handle)
        return {key: handle[key] for key in self.keys}

    def load(self, epoch: int, batch: int) -> dict[str, np.ndarray]:
        indices = np.sort(self.sampler.batch_indices(epoch, batch))
        shards, offsets = self.info.locate(indices)
        parts: dict[str, list[np.ndarray]] = {key: [] for key in self.keys}
        for shard in np.unique(shards).tolist():
            rows = np.unique(offsets[shards == shard])  # h5py wants increasing, unique rows
            for key in self.keys:
                parts[key].append(self._shards[shard][key][rows])
        return {key: np.concatenate(chunks) for key, chunks in parts.items()}

    def close(self) -> None:
        self._shards = []
        for handle in self._handles:
            handle.close()
        self._handles = []
