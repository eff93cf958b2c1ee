"""What the storage under a dataset can do, measured in the same run as the loader it is compared with.

* Random reads: 4 KiB reads at random page offsets of the dataset's own files, O_DIRECT (no page
  cache), at queue depth 1 and 64, for a few seconds each: with fio where it is installed
  (``libaio``), else with a pool of Python threads each doing ``os.preadv`` into its own aligned
  buffer (one read in flight per thread; ``preadv`` releases the GIL). The result says which.
  Then 64 threads of plain reads through the page cache (``buffered-64``): what a reader that
  goes through the page cache (as memory maps do) can get here, page allocation and reclaim included.
* Pages per sample: what an exact-order sample costs in reads when nothing is cached: the expected
  number of pages a row of each array spans at a random position (exact, over the row offsets'
  period), arrays of tiny samples (labels) counted as read whole, their bytes over the page.

The sequential ceiling is :func:`benchmarks.cold.sequential_pass`, shared with the cold benchmark.
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamload.format.reader import PAGE
from streamload.read.dataset import ShardedDataset
from streamload.read.kernel_hints import SMALL_SAMPLES_PER_PAGE

from .cold import evict

Result = dict[str, Any]
BLOCK = 4096
MAX_FILES = 64  # fio fails on --filename lists much over 4 KiB; 64 files spread over the set are as random for a disk


def row_pages(row_bytes: int, offset: int) -> float:
    """Expected pages spanned by a row at a random position of an array stored at ``offset``: exact, the mean
    over one period of the rows' start offsets within a page (they repeat after PAGE / gcd(row_bytes, PAGE))."""
    period = PAGE // math.gcd(row_bytes, PAGE)
    starts = [offset + row * row_bytes for row in range(period)]
    return sum((start + row_bytes - 1) // PAGE - start // PAGE + 1 for start in starts) / period


def pages_per_sample(dataset: ShardedDataset, keys: Sequence[str] | None = None) -> Result:
    """Expected pages read per random sample, per array and in all, and how each was counted.

    Rows are counted where they lie (each shard's data offset, weighted by its samples); arrays of
    tiny samples (labels) are read whole once per shard, so a sample costs their bytes over a page.
    """
    info, per_key = dataset.info, {}
    for key in keys or dataset.keys:
        size = info.arrays[key].sample_bytes
        if size * SMALL_SAMPLES_PER_PAGE <= PAGE:
            per_key[key] = {"bytes": size, "pages": size / PAGE, "counted_as": "array read whole: bytes / page"}
            continue
        weighted = 0.0
        for number, shard in enumerate(info.shards):
            found = dataset.reader(number).ranges(key, np.zeros(1, dtype=np.int64)) if shard.num_samples else None
            offset = int(found.starts[0]) if found is not None and len(found.starts) else 0
            weighted += shard.num_samples * row_pages(size, offset)
        per_key[key] = {"bytes": size, "pages": weighted / max(1, info.num_samples),
                        "counted_as": "pages a row spans where it lies, averaged over the row offsets' period"}
    return {"arrays": per_key, "total": sum(item["pages"] for item in per_key.values()), "page_bytes": PAGE}


def _fio_iops(files: Sequence[Path], depth: int, seconds: float, buffered: bool = False) -> float:
    """O_DIRECT reads, ``depth`` in flight (libaio); ``buffered``: ``depth`` threads reading through the page cache."""
    folders = {path.parent for path in files}  # fio cuts --filename near 4 KiB: name the files from their folder
    where = [f"--directory={folders.pop()}"] if len(folders) == 1 else []
    names = ":".join((path.name if where else str(path)).replace(":", "\\:") for path in files)
    engine = ([f"--numjobs={depth}", "--group_reporting", "--direct=0", "--ioengine=psync", "--invalidate=1"]
              if buffered else ["--direct=1", "--ioengine=libaio", f"--iodepth={depth}"])
    command = ["fio", "--name=randread", *where, f"--filename={names}", "--rw=randread", f"--bs={BLOCK}", *engine,
               f"--runtime={seconds:g}", "--time_based", "--file_service_type=random", "--output-format=json"]
    for _attempt in range(2):  # once more before giving up: a busy shared machine makes fio fail now and then
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode == 0:
            return float(json.loads(run.stdout[run.stdout.index("{"):])["jobs"][0]["read"]["iops"])
    raise FioError(f"fio exited with status {run.returncode}: {(run.stderr or run.stdout)[-300:].strip()}")


class FioError(RuntimeError):
    """fio ran and failed (the message has the end of what it printed)."""


def _python_iops(files: Sequence[Path], depth: int, seconds: float, buffered: bool = False) -> float:
    """``depth`` threads, each with one 4 KiB read in flight at a time (O_DIRECT unless ``buffered``)."""
    sizes = [path.stat().st_size // BLOCK for path in files]
    fds = [os.open(path, os.O_RDONLY | (0 if buffered else os.O_DIRECT)) for path in files]
    counts = [0] * depth
    deadline = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        buffer, rng = mmap.mmap(-1, BLOCK), random.Random(slot)  # an anonymous map is page-aligned
        while time.perf_counter() < deadline:
            index = rng.randrange(len(fds))
            os.preadv(fds[index], [buffer], rng.randrange(sizes[index]) * BLOCK)
            counts[slot] += 1

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(depth)]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for fd in fds:
            os.close(fd)
    return sum(counts) / (time.perf_counter() - started)


def _direct_io_works(path: Path) -> bool:
    """False where the filesystem refuses O_DIRECT (tmpfs, some overlays)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def _evicted_buffered_iops(files: Sequence[Path], depth: int, seconds: float, buffered: bool = False) -> float:
    """The O_DIRECT measurement's stand-in: reads through the page cache of files evicted first."""
    evict(files)
    return _python_iops(files, depth, seconds, buffered=True)


def _measure(measure: Callable[..., float], files: Sequence[Path], depths: Sequence[int],
             seconds: float, progress: Callable[[str], None]) -> dict[str, float]:
    """IOPS per depth (O_DIRECT), then 64 threads through the page cache (key ``buffered-64``), files evicted."""
    iops = {}
    for depth in depths:
        progress(f"random 4 KiB reads, depth {depth}")
        iops[str(depth)] = measure(files, depth, seconds)
    progress("random 4 KiB reads through the page cache, 64 threads")
    evict(files)
    iops["buffered-64"] = measure(files, 64, seconds, buffered=True)
    evict(files)
    return iops


def random_read_limits(files: Sequence[Path], depths: Sequence[int] = (1, 64), seconds: float = 8.0,
                       engine: str = "auto", progress: Callable[[str], None] = lambda _: None) -> Result:
    """4 KiB random-read IOPS of ``files`` (up to 64 of them, spread) at each queue depth, and how measured."""
    files = [path for path in files if path.stat().st_size >= BLOCK]
    files = [files[round(i * (len(files) - 1) / max(1, MAX_FILES - 1))] for i in range(min(MAX_FILES, len(files)))]
    use_fio, note = engine == "fio" or (engine == "auto" and shutil.which("fio") is not None), ""
    if use_fio:
        try:
            iops = _measure(_fio_iops, files, depths, seconds, progress)
        except (FioError, ValueError, KeyError) as exc:
            use_fio, note = False, f"fio failed ({exc}): measured with Python threads instead"
    direct = _direct_io_works(files[0])
    if not use_fio:
        iops = _measure(_python_iops if direct else _evicted_buffered_iops, files, depths, seconds, progress)
    described = ("fio randread, libaio, O_DIRECT, 4 KiB" if use_fio else
                 "Python threads, one O_DIRECT 4 KiB os.preadv in flight each (a lower bound: the GIL caps it)"
                 if direct else "Python threads, one 4 KiB read of evicted files in flight each (this filesystem "
                 "refuses O_DIRECT)")
    return {"engine": "fio" if use_fio else "python", "described": described, "seconds": seconds, "note": note,
            "files": len(files), "file_bytes": sum(path.stat().st_size for path in files), "iops": iops}
