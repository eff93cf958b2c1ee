#!/usr/bin/env python3
"""Padding saved by length bucketing, and memory while reading records, measured on a dataset of sequences.

    python3 scripts/sequences_report.py padding DATA [--batch-size 64]
    python3 scripts/sequences_report.py memory DATA [--batch-size 64] [--batches 2000]
    python3 scripts/sequences_report.py mnist-ink OUT [--mnist DIR]

``padding`` prints the rows of one epoch's batches padded to their longest record with and without
``bucket_by_length`` (from the offsets alone; no data read). ``memory`` reads random batches and prints
the peak RssAnon and RssFile (/proc/self/status): records are read with ``preadv`` into each batch's buffer,
so anonymous memory should not grow with the dataset. ``mnist-ink`` builds a real set of sequences whose
lengths vary as real data's do: each MNIST digit as the positions of its inked pixels (uint16 tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from streamload import ArraySource, BuildOptions, build_dataset
from streamload.base.procstats import read_memory
from streamload.format.records import Records
from streamload.read.loader import BatchLoader
from streamload.read.sampler import padded_cells


def padding(data: Path, batch_size: int, seed: int) -> None:
    for bucket in (False, True):
        loader = BatchLoader(data, batch_size=batch_size, seed=seed, bucket_by_length=True)
        loader.sampler.options = loader.options.__class__(batch_size=batch_size, seed=seed, bucket_by_length=bucket)
        padded, held = padded_cells(loader.sampler, loader.sampler.lengths)
        print(f"bucket_by_length={bucket!s:5}: {padded:,} padded rows for {held:,} real rows "
              f"({1 - held / padded:.1%} padding)")


def memory(data: Path, batch_size: int, batches: int) -> None:
    loader = BatchLoader(data, batch_size=batch_size, prefetch_batches=0)
    peak_anon = peak_file = 0
    start = read_memory()
    for number in range(batches):
        loader.load(number // loader.num_batches, number % loader.num_batches)
        if number % 50 == 0:
            now = read_memory()
            peak_anon, peak_file = max(peak_anon, now.rss_anon), max(peak_file, now.rss_file)
    mib = 2**20
    print(f"{len(loader.dataset):,} samples, {batches} batches of {batch_size}: RssAnon {start.rss_anon / mib:.1f} "
          f"-> peak {peak_anon / mib:.1f} MiB, RssFile {start.rss_file / mib:.1f} -> peak {peak_file / mib:.1f} MiB")


def mnist_ink(out: Path, mnist: Path | None) -> None:
    from streamload.write.sources.mnist import mnist_sources

    splits = {}
    for name, source in mnist_sources(mnist, download=False).items():
        chunks = list(source.iter_chunks())
        images = np.concatenate([chunk["x"] for chunk in chunks]).reshape(source.num_samples, -1)
        labels = np.concatenate([chunk["y"] for chunk in chunks])
        tokens = [np.flatnonzero(image > 127).astype(np.uint16) for image in images]
        splits[name] = ArraySource(x=Records.from_arrays(tokens, np.uint16), y=labels)
    build_dataset(splits, out, BuildOptions(overwrite=True))


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
        padding(args.data, args.batch_size, args.seed)
    elif args.what == "memory":
        memory(args.data, args.batch_size, args.batches)
    else:
        mnist_ink(args.data, args.mnist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
