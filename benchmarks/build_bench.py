"""Issue 2's build benchmark: write throughput against ``np.save``, and the memory of an 8.1M build.

Throughput: the same in-RAM arrays (real MNIST training digits tiled to ``--mb``) are written by
``np.save`` and by ``build_dataset`` in both formats, on the same disk, in interleaved rounds whose
order rotates, so that the drift of a shared, noisy machine hits every contender alike; the median
of each is reported. ``build_dataset`` fsyncs and hashes every shard before it returns, while
``np.save`` returns once the bytes are in the page cache, so a ``np.save`` run is timed twice: when
it returns, and after ``os.fsync`` (the fair baseline). Every output is evicted from the page cache
and deleted right after it is timed, so no run inherits the dirty pages of the one before.

Memory: the real CLI builds ``--augment-to`` deformed digits in a child process, polled by
``PeakMemorySampler``, which keeps heap (RssAnon) and mapped shard pages (RssFile) apart.

MB means 2**20 bytes throughout; the RssAnon goal of 1 GB is 10**9 bytes, the stricter reading.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import PeakMemorySampler, drop_page_cache
from streamload.errors import StreamloadError
from streamload.format.manifest import Manifest, read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource
from streamload.write.sources.mnist import mnist_sources

from .build_report import BASELINE, BASELINE_FSYNC, markdown
from .common import MB, build_command, check_free_space, emit, fail, log, machine_info, run_sampled
from .rounds import rotated

GOAL_RATIO = 0.5  # streamload should write at least half as fast as np.save
GOAL_RSS_ANON = 10**9  # peak heap of an --augment-to 8100000 build
MNIST_TEST_SAMPLES = 10_000  # the CLI builds the test split too
Result = dict[str, Any]


def tiled_mnist(source: str | os.PathLike | None, mb: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Real MNIST training digits repeated cyclically to about ``mb`` MB, resident before any timing."""
    train = mnist_sources(source)["train"]
    chunks = list(train.iter_chunks())
    images = np.concatenate([chunk["x"] for chunk in chunks])
    labels = np.concatenate([chunk["y"] for chunk in chunks])
    sample_bytes = images[0].nbytes + labels[0].nbytes
    count = max(1, int(mb * MB) // sample_bytes)
    return np.resize(images, (count, *images.shape[1:])), np.resize(labels, count), train.description


def _rate(nbytes: int, seconds: float) -> Result:
    return {"bytes": nbytes, "seconds": seconds, "mb_per_s": nbytes / MB / seconds}


def time_np_save(x: np.ndarray, y: np.ndarray, out: Path) -> dict[str, Result]:
    """``np.save`` of x and y, timed when it returns and again after both files are fsynced."""
    out.mkdir(parents=True)
    paths = [out / "x.npy", out / "y.npy"]
    with ExitStack() as stack:
        streams = [stack.enter_context(open(path, "wb")) for path in paths]
        started = time.perf_counter()
        for stream, array in zip(streams, (x, y)):
            np.save(stream, array)
            stream.flush()
        saved = time.perf_counter()
        for stream in streams:
            os.fsync(stream.fileno())
        synced = time.perf_counter()
    nbytes = sum(path.stat().st_size for path in paths)
    return {BASELINE: _rate(nbytes, saved - started), BASELINE_FSYNC: _rate(nbytes, synced - started)}


def shard_bytes(manifest: Manifest) -> int:
    """Bytes of every shard file of a dataset (the manifest itself excluded)."""
    return sum(info.bytes for split in manifest.splits.values() for shard in split.shards
               for info in shard.files.values())


def time_build(x: np.ndarray, y: np.ndarray, out: Path, fmt: str) -> dict[str, Result]:
    """The whole ``build_dataset``: writer, fsync and SHA-256 of every shard, manifest, atomic swap."""
    options = BuildOptions(format=fmt, progress=False)
    started = time.perf_counter()
    manifest = build_dataset({"train": ArraySource("tiled MNIST", x=x, y=y)}, out, options)
    seconds = time.perf_counter() - started
    return {f"streamload {fmt}": _rate(shard_bytes(manifest), seconds)}


def _evict_and_remove(path: Path) -> None:
    if path.exists():
        drop_page_cache(path)
        shutil.rmtree(path)


def run_rounds(x: np.ndarray, y: np.ndarray, workdir: Path, rounds: int, label: str = "round") -> list[Result]:
    """Time every contender once per round, rotating the order so none always goes first."""
    contenders: list[tuple[str, Callable[[Path], dict[str, Result]]]] = [
        ("np.save", lambda out: time_np_save(x, y, out)),
        ("npy", lambda out: time_build(x, y, out, "npy")),
        ("hdf5", lambda out: time_build(x, y, out, "hdf5")),
    ]
    results = []
    for number in range(rounds):
        order = rotated(contenders, number)
        result: Result = {"order": [name for name, _ in order]}
        for name, run in order:
            out = workdir / f"throughput-{name}"
            _evict_and_remove(out)  # left over by an interrupted run
            result.update(run(out))
            _evict_and_remove(out)
        log(f"{label} {number + 1}/{rounds}: " + ", ".join(
            f"{key} {value['mb_per_s']:.0f} MB/s" for key, value in result.items() if key != "order"))
        results.append(result)
    return results


def summarize_rounds(rounds: list[Result]) -> Result:
    """Median MB/s per contender, its spread, and each streamload format's ratio to both baselines."""
    names = [key for key in rounds[0] if key != "order"]
    rates = {name: [result[name]["mb_per_s"] for result in rounds] for name in names}
    median = {name: statistics.median(values) for name, values in rates.items()}
    ours = [name for name in names if name.startswith("streamload")]
    ratios = {name: {base: median[name] / median[base] for base in (BASELINE, BASELINE_FSYNC)} for name in ours}
    paired = {name: {base: statistics.median(a / b for a, b in zip(rates[name], rates[base]))
                     for base in (BASELINE, BASELINE_FSYNC)} for name in ours}
    goal = {name: {baseline: ratio >= GOAL_RATIO for baseline, ratio in by_baseline.items()}
            for name, by_baseline in ratios.items()}
    spread = {name: [min(values), max(values)] for name, values in rates.items()}
    return {"median_mb_per_s": median, "min_max_mb_per_s": spread, "ratios": ratios,
            "paired_ratio_median": paired, "goal_min_ratio": GOAL_RATIO, "goal_met": goal}


def throughput_benchmark(source: str | os.PathLike | None, mb: float, workdir: Path, rounds: int,
                         warmup: int = 1) -> Result:
    """Part 1: build MB/s of both formats next to np.save of the same arrays on the same disk.

    ``warmup`` rounds run first and are left out of the medians: on this project's VMs the first
    half GB written after the source arrays were allocated ran at half speed or less, every time.
    """
    x, y, description = tiled_mnist(source, mb)
    nbytes = x.nbytes + y.nbytes
    check_free_space(workdir, nbytes, "pass a smaller --mb or another --workdir")
    log(f"throughput: {len(x):,} samples ({nbytes / MB:,.0f} MB) from {description}, {rounds} rounds")
    discarded = run_rounds(x, y, workdir, warmup, label="warm-up (discarded)")
    results = run_rounds(x, y, workdir, rounds)
    return {"source": description, "samples": len(x), "source_bytes": nbytes, "warmup_rounds": discarded,
            "rounds": results, **summarize_rounds(results)}


def _peaks(sampler: PeakMemorySampler | None, interval: float) -> Result:
    """The sampled peaks in bytes; empty when the child was gone before the first poll."""
    if sampler is None:
        return {}
    peak = sampler.peak
    return {"rss_anon": peak.rss_anon, "rss_file": peak.rss_file, "rss_shmem": peak.rss_shmem,
            "vm_hwm": peak.vm_hwm, "polls": sampler.samples, "poll_interval_s": interval}


def _run_build(command: list[str], interval: float) -> tuple[int, float, Result, str]:
    """Run ``command``, polling its memory; returns exit status, seconds, peaks (bytes) and output."""
    with tempfile.TemporaryFile() as output:
        status, seconds, sampler = run_sampled(command, interval, output)
        output.seek(0)
        return status, seconds, _peaks(sampler, interval), output.read().decode(errors="replace")


def augmented_build_benchmark(workdir: Path, total: int, fmt: str, source: str | os.PathLike | None,
                              interval: float = 0.02) -> Result:
    """Part 2: peak memory, wall time and rate of the real CLI building ``total`` deformed digits."""
    out = workdir / "mnist8m"
    check_free_space(workdir, (total + MNIST_TEST_SAMPLES) * 785, "pass a smaller --augment-to or another --workdir")
    command = build_command(fmt, out, "--augment-to", str(total), "--quiet", "--overwrite", source=source)
    log(f"augmented build: {' '.join(command)}")
    status, seconds, peaks, output = _run_build(command, interval)
    if status != 0 or "rss_anon" not in peaks:
        raise RuntimeError(f"{' '.join(command)} exited with status {status}:\n{output[-4000:]}")
    manifest = read_manifest(out)
    train = manifest.split("train").num_samples
    log(f"augmented build: {train:,} samples in {seconds:.1f} s")
    return {"command": command, "out": str(out), "format": fmt, "augment_to": total, "train_samples": train,
            "all_samples": sum(split.num_samples for split in manifest.splits.values()),
            "dataset_bytes": shard_bytes(manifest), "seconds": seconds, "train_samples_per_s": train / seconds,
            "peak": peaks, "goal_rss_anon_below": GOAL_RSS_ANON, "goal_met": peaks["rss_anon"] < GOAL_RSS_ANON}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="MNIST folder or mnist.npz (default: $STREAMLOAD_MNIST_DIR)")
    parser.add_argument("--workdir", type=Path, default=Path("data/bench-build"),
                        help="where outputs are written: the disk under test (default: data/bench-build)")
    parser.add_argument("--mb", type=float, default=512, help="MB of tiled MNIST written per run (default: 512)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the throughput part (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them (default: 1)")
    parser.add_argument("--skip-throughput", action="store_true", help="skip part 1 (write throughput)")
    parser.add_argument("--augment-to", type=int, default=8_100_000, metavar="N",
                        help="deformed digits built by the memory part (default: 8100000)")
    parser.add_argument("--format", choices=("npy", "hdf5"), default="npy", help="format of the memory part")
    parser.add_argument("--skip-augment", action="store_true", help="skip part 2 (memory of an augmented build)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if not args.mb > 0 or args.rounds < 1 or args.augment_to < 1 or args.warmup < 0:
        parser.error("--mb, --rounds and --augment-to must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    options = {"source": None if args.source is None else str(args.source), "mb": args.mb, "rounds": args.rounds,
               "warmup": args.warmup, "augment_to": None if args.skip_augment else args.augment_to,
               "format": args.format}
    results: Result = {"machine": machine_info(workdir), "options": options}
    try:
        if not args.skip_throughput:
            results["throughput"] = throughput_benchmark(args.source, args.mb, workdir, args.rounds, args.warmup)
        if not args.skip_augment:
            results["augmented_build"] = augmented_build_benchmark(workdir, args.augment_to, args.format, args.source)
    except (StreamloadError, RuntimeError) as exc:
        return fail("benchmark_build.py", exc)
    emit(results, markdown(results), args.json)
    return 0
