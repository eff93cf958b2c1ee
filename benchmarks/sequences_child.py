"""One reading run of the sequences benchmark, in its own process: ``python -m benchmarks.sequences_child``.

A fresh process per dataset size, so that the larger set's run inherits nothing of the smaller's heap.
It reads ``--batches`` batches of the exact-shuffled order (random records, epoch after epoch) through
``BatchLoader`` and records its own RssAnon/RssFile after its imports, every 50 batches and at the end;
the parent (``memory_child.run_child``) polls the peaks from outside and takes the higher of the two.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.memory_child import snapshot

SNAPSHOT_EVERY = 50  # batches between two of the child's own readings
Result = dict[str, Any]


def read_batches(data: Path, batch_size: int, batches: int, seed: int = 0) -> Result:
    """Read ``batches`` batches of random records: samples per second of wall clock and of this process's CPU
    time (which other processes on a shared machine do not move), and the highest memory readings seen.

    The first batch (opening the shards, the first index block) is read before the clock starts.
    """
    from streamload.read.loader import BatchLoader

    loader = BatchLoader(data, batch_size=batch_size, seed=seed, prefetch_batches=0)
    loader.load(0, 0)
    peak = snapshot()
    samples = 0
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
            "samples_per_cpu_s": samples / max(cpu_seconds, 1e-9), "peak_seen": peak}


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
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
