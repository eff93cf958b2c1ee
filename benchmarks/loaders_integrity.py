"""What ``verify="once"`` costs: a first epoch that checks every shard's CRC-32 before its first use,
next to the same epoch unchecked, warm page cache, interleaved rounds; also the hashing rate alone.

Each checked round starts from a generation that no process has checked yet (its ``.verified``
record removed), so every round pays the full check, as the first epoch after a build does.
"""

from __future__ import annotations

import time
from typing import Any

from streamload.read.integrity import RECORD, crc32_file
from streamload.read.loader import BatchLoader

from .loaders_data import BenchData
from .rounds import NullProgress, run_rounds, summarize

Result = dict[str, Any]
CHECKED, UNCHECKED = "first epoch, verify once", "first epoch, no check"


def _epoch_seconds(data: BenchData, verify: str) -> Result:
    started = time.perf_counter()
    loader = BatchLoader(data.npy, "train", data.options(verify=verify))
    if verify == "once":
        (loader.dataset.root / RECORD).unlink(missing_ok=True)  # as after a build: nothing checked yet
    for batch in range(loader.num_batches):
        loader.load(0, batch)
    loader.dataset.close()
    return {"seconds": time.perf_counter() - started}


def _crc_rate(data: BenchData) -> Result:
    loader = BatchLoader(data.npy, "train", data.options())
    files = [loader.dataset.root / info.name for shard in loader.dataset.info.shards for info in shard.files.values()]
    started = time.perf_counter()
    for path in files:
        crc32_file(path)
    seconds = time.perf_counter() - started
    total = sum(path.stat().st_size for path in files)
    loader.dataset.close()
    return {"seconds": seconds, "bytes": total}


def integrity_benchmark(data: BenchData, rounds: int, progress: Any = NullProgress()) -> Result:
    contenders = {CHECKED: lambda number: _epoch_seconds(data, "once"),
                  UNCHECKED: lambda number: _epoch_seconds(data, "off")}
    _epoch_seconds(data, "once"), _epoch_seconds(data, "off")  # warm: page cache, imports
    results = run_rounds(contenders, rounds, progress)
    medians = summarize(results, "seconds")["median"]
    crc = _crc_rate(data)
    return {"rounds": results, "median_seconds": medians, "ratio": medians[CHECKED] / medians[UNCHECKED],
            "crc32_mb_per_s": crc["bytes"] / 2**20 / crc["seconds"], "dataset_bytes": crc["bytes"]}


def integrity_table(part: Result) -> list[str]:
    seconds = part["median_seconds"]
    return ["### What `verify=\"once\"` costs: the first epoch, median of "
            f"{len(part['rounds'])} interleaved rounds, page cache warm", "",
            "| first epoch | seconds | vs no check |", "|---|---:|---:|",
            f"| {UNCHECKED} | {seconds[UNCHECKED]:.3f} | 1.00x |",
            f"| {CHECKED} | {seconds[CHECKED]:.3f} | {part['ratio']:.2f}x |", "",
            f"CRC-32 of the shards alone: {part['crc32_mb_per_s']:,.0f} MB/s over "
            f"{part['dataset_bytes'] / 2**20:,.0f} MB (zlib, in this process). Later epochs pay nothing: the check "
            "is once per generation."]
