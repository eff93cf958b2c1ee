#!/usr/bin/env python3
"""Padding saved by length bucketing, and memory while reading records, measured on a dataset of sequences.

    python3 scripts/sequences_report.py padding DATA [--batch-size 64]
    python3 scripts/sequences_report.py memory DATA [--batch-size 64] [--batches 2000]
    python3 scripts/sequences_report.py mnist-ink OUT [--mnist DIR]

``padding`` prints the rows of one epoch's batches padded to their longest record with and without
``bucket_by_length`` (from the offsets alone; no data read). ``memory`` reads random batches in this
process and prints the peak RssAnon and RssFile (/proc/self/status). ``mnist-ink`` builds a real set of
sequences whose lengths vary as real data's do: each MNIST digit as the positions of its inked pixels
(uint16 tokens). The recorded benchmark (``benchmark_sequences.py``) does all three in one run, and
reads a set ten times larger beside it, each in a fresh process; this script is the same code, one
step at a time, for a dataset of your own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ beside streamload/

from benchmarks.common import MB  # noqa: E402
from benchmarks.memory_child import snapshot  # noqa: E402
from benchmarks.sequences import build_ink, padding, padding_lines  # noqa: E402
from benchmarks.sequences_child import read_batches  # noqa: E402


def memory(data: Path, batch_size: int, batches: int, seed: int) -> str:
    """One line: the records read, and RssAnon/RssFile before reading and at their peak."""
    start = snapshot()
    figures = read_batches(data, batch_size, batches, seed)
    peak = figures["peak_seen"]
    return (f"{figures['dataset_samples']:,} samples, {batches} batches of {batch_size}: RssAnon "
            f"{start['rss_anon'] / MB:.1f} -> peak {peak['rss_anon'] / MB:.1f} MiB, RssFile "
            f"{start['rss_file'] / MB:.1f} -> peak {peak['rss_file'] / MB:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("padding", "memory", "mnist-ink"))
    parser.add_argument("data", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", type=Path, help="MNIST folder for mnist-ink (default: $STREAMLOAD_MNIST_DIR)")
    args = parser.parse_args(argv)
    if args.what == "padding":
        print("\n".join(padding_lines(padding(args.data, args.batch_size, args.seed), args.batch_size)))
    elif args.what == "memory":
        print(memory(args.data, args.batch_size, args.batches, args.seed))
    else:
        build_ink(args.data, args.mnist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
