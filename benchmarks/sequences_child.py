"""One reading run of the sequences benchmark, in its own process: ``python -m benchmarks.sequences_child``.

A fresh process per dataset size, so that the larger set's run inherits nothing of the smaller's heap.
It reads ``--batches`` batches of the exact-shuffled order (random records, epoch after epoch) through
``BatchLoader`` and records its own RssAnon/RssFile after its imports, every 50 batches and at the end;
the parent (``memory_child.run_child``) polls the peaks from outside and takes the higher of the two.
Then, in the same process, the bound: the same batches' records with one bare ``os.preadv`` each, their
byte ranges found beforehand, so that what reading a larger set costs the machine (page cache, TLB, CPU
caches) is measured apart from what it costs streamload.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.memory_child import snapshot

SNAPSHOT_EVERY = 50  # batches between two of the child's own readings
PLAN_BATCHES = 50  # batches whose byte ranges the bound holds at once
Result = dict[str, Any]


def cpu_split() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far: time in its own code, and in the kernel for it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def per_batch(before: tuple[float, float], batches: int) -> Result:
    """Microseconds of user and of system CPU time per batch since ``before``."""
    after = cpu_split()
    return {"user_us_per_batch": 1e6 * (after[0] - before[0]) / batches,
            "system_us_per_batch": 1e6 * (after[1] - before[1]) / batches}


def read_batches(data: Path, batch_size: int, batches: int, seed: int = 0) -> Result:
    """Read ``batches`` batches of random records: samples per second of wall clock and of this process's CPU
    time (which other processes on a shared machine do not move), and the highest memory readings seen.

    The first batch (opening the shards, the first index block) is read before the clock starts.
    """
    from streamload.read.loader import BatchLoader

    loader = BatchLoader(data, batch_size=batch_size, seed=seed, prefetch_batches=0)
    loader.load(0, 0)
    peak = snapshot()
    samples, split = 0, cpu_split()
    started, cpu_started = time.perf_counter(), time.process_time()
    for number in range(1, batches + 1):
        _, y = loader.load(number // loader.num_batches, number % loader.num_batches)
        samples += len(y)
        if number % SNAPSHOT_EVERY == 0:
            now = snapshot()
            peak = {key: max(peak[key], now[key]) for key in peak}
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"dataset_samples": len(loader.dataset), "batches": batches, "samples": samples, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "samples_per_s": samples / seconds,
            "samples_per_cpu_s": samples / max(cpu_seconds, 1e-9), **per_batch(split, batches), "peak_seen": peak}


def plain_reads(data: Path, batch_size: int, batches: int, seed: int = 0) -> Result:
    """The same batches' ragged records, one bare ``os.preadv`` each into a fresh buffer per batch (no merging,
    no checks, no labels, no padding): samples per second of wall clock and of CPU time, CPU time per batch.

    The byte ranges are found (through streamload's offsets) off the clock, ``PLAN_BATCHES`` batches at a
    time: a whole run's plans held at once would raise the peak RssAnon the parent measures."""
    from streamload.read.batching import ragged_input
    from streamload.read.loader import BatchLoader

    loader = BatchLoader(data, batch_size=batch_size, seed=seed, prefetch_batches=0)
    key = ragged_input(loader.dataset.manifest, loader.dataset.info.arrays)
    samples, spent = 0, [0.0, 0.0, 0.0, 0.0]  # wall, CPU, user, system seconds while reading
    for first in range(1, batches + 1, PLAN_BATCHES):
        plans = []
        for number in range(first, min(first + PLAN_BATCHES, batches + 1)):
            found = loader.dataset.ranges(loader.indices(number // loader.num_batches, number % loader.num_batches),
                                          [key])
            plans.append([(part.fd, start, end - start) for part in found
                          for start, end in zip(part.starts.tolist(), part.ends.tolist())])
        before = (time.perf_counter(), time.process_time(), *cpu_split())
        samples += read_plans(plans)
        after = (time.perf_counter(), time.process_time(), *cpu_split())
        spent = [total + end - start for total, start, end in zip(spent, before, after)]
    return {"samples": samples, "samples_per_s": samples / spent[0], "samples_per_cpu_s": samples / max(spent[1], 1e-9),
            "user_us_per_batch": 1e6 * spent[2] / batches, "system_us_per_batch": 1e6 * spent[3] / batches}


def read_plans(plans: list[list[tuple[int, int, int]]]) -> int:
    """Each batch's (descriptor, position, size) ranges read with one ``os.preadv`` each; the records read."""
    import numpy as np

    for plan in plans:
        out, at = memoryview(np.empty(sum(size for _, _, size in plan), np.uint8)), 0
        for fd, start, size in plan:
            os.preadv(fd, [out[at:at + size]], start)
            at += size
    return sum(len(plan) for plan in plans)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sequences_child", description="one reading run of benchmark_sequences.py")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (manifest.json)")
    parser.add_argument("--result", type=Path, required=True, help="JSON file this process writes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import numpy  # noqa: F401  (its heap is in the baseline, as in memory_child)

    import streamload.read.loader  # noqa: F401

    result: Result = {"memory": {"baseline": snapshot()}}
    result.update(read_batches(args.data, args.batch_size, args.batches, args.seed))
    result["memory"]["peak_seen"] = result.pop("peak_seen")
    result["memory"]["end"] = snapshot()
    result["plain_preadv"] = plain_reads(args.data, args.batch_size, args.batches, args.seed)
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
