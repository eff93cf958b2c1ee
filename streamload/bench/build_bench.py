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
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..build import BuildOptions, build_dataset
from ..errors import InvalidOptionError, StreamloadError
from ..manifest import Manifest, read_manifest
from ..mnist import mnist_sources
from ..procstats import PeakMemorySampler, drop_page_cache
from ..sources import ArraySource

MB = 2**20
GOAL_RATIO = 0.5  # streamload should write at least half as fast as np.save
GOAL_RSS_ANON = 10**9  # peak heap of an --augment-to 8100000 build
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_shards.py"
MNIST_TEST_SAMPLES = 10_000  # the CLI builds the test split too
DISK_MARGIN = 1.1
BASELINE, BASELINE_FSYNC = "np.save", "np.save+fsync"
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


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_free_space(folder: Path, needed: int, hint: str) -> None:
    """Fail before writing anything rather than filling a shared disk halfway through."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed * DISK_MARGIN:
        raise InvalidOptionError(
            f"{folder}: about {needed * DISK_MARGIN / MB:,.0f} MB of free disk needed, "
            f"{free / MB:,.0f} MB free; {hint}"
        )


def run_rounds(x: np.ndarray, y: np.ndarray, workdir: Path, rounds: int, label: str = "round") -> list[Result]:
    """Time every contender once per round, rotating the order so none always goes first."""
    contenders: list[tuple[str, Callable[[Path], dict[str, Result]]]] = [
        ("np.save", lambda out: time_np_save(x, y, out)),
        ("npy", lambda out: time_build(x, y, out, "npy")),
        ("hdf5", lambda out: time_build(x, y, out, "hdf5")),
    ]
    results = []
    for number in range(rounds):
        shift = number % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        result: Result = {"order": [name for name, _ in order]}
        for name, run in order:
            out = workdir / f"throughput-{name}"
            _evict_and_remove(out)  # left over by an interrupted run
            result.update(run(out))
            _evict_and_remove(out)
        _log(f"{label} {number + 1}/{rounds}: " + ", ".join(
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
    _log(f"throughput: {len(x):,} samples ({nbytes / MB:,.0f} MB) from {description}, {rounds} rounds")
    discarded = run_rounds(x, y, workdir, warmup, label="warm-up (discarded)")
    results = run_rounds(x, y, workdir, rounds)
    return {"source": description, "samples": len(x), "source_bytes": nbytes, "warmup_rounds": discarded,
            "rounds": results, **summarize_rounds(results)}


def _start_sampler(pid: int, interval: float) -> PeakMemorySampler | None:
    """Start polling ``pid``; None when it already exited (a failed build), reported by its status."""
    try:
        return PeakMemorySampler(pid, interval).start()
    except ProcessLookupError:
        return None


def _run_sampled(command: list[str], interval: float) -> tuple[int, float, Result, str]:
    """Run ``command``, polling its memory; returns exit status, seconds, peaks (bytes) and output.

    Not ``wait4``'s ru_maxrss: Linux carries the pre-exec peak of the forked (or vforked) parent
    into it, so it would report this benchmark's own arrays. VmHWM belongs to the exec'd image.
    """
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            sampler = _start_sampler(child.pid, interval)
            status = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        seconds = time.perf_counter() - started
        peaks: Result = {}
        if sampler is not None:
            peak = sampler.stop()
            peaks = {"rss_anon": peak.rss_anon, "rss_file": peak.rss_file, "rss_shmem": peak.rss_shmem,
                     "vm_hwm": peak.vm_hwm, "polls": sampler.samples, "poll_interval_s": interval}
        log.seek(0)
        return status, seconds, peaks, log.read().decode(errors="replace")


def augmented_build_benchmark(workdir: Path, total: int, fmt: str, source: str | os.PathLike | None,
                              interval: float = 0.02) -> Result:
    """Part 2: peak memory, wall time and rate of the real CLI building ``total`` deformed digits."""
    out = workdir / "mnist8m"
    check_free_space(workdir, (total + MNIST_TEST_SAMPLES) * 785, "pass a smaller --augment-to or another --workdir")
    command = [sys.executable, str(BUILD_SCRIPT), "--format", fmt, "--out", str(out),
               "--augment-to", str(total), "--quiet", "--overwrite"]
    if source is not None:
        command += ["--source", str(source)]
    _log(f"augmented build: {' '.join(command)}")
    status, seconds, peaks, output = _run_sampled(command, interval)
    if status != 0 or "rss_anon" not in peaks:
        raise RuntimeError(f"{' '.join(command)} exited with status {status}:\n{output[-4000:]}")
    manifest = read_manifest(out)
    train = manifest.split("train").num_samples
    _log(f"augmented build: {train:,} samples in {seconds:.1f} s")
    return {"command": command, "out": str(out), "format": fmt, "augment_to": total, "train_samples": train,
            "all_samples": sum(split.num_samples for split in manifest.splits.values()),
            "dataset_bytes": shard_bytes(manifest), "seconds": seconds, "train_samples_per_s": train / seconds,
            "peak": peaks, "goal_rss_anon_below": GOAL_RSS_ANON, "goal_met": peaks["rss_anon"] < GOAL_RSS_ANON}


def _meminfo_total() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def _mount_of(path: Path) -> Result:
    """Device and filesystem type of the mount holding ``path`` (its longest matching mount point)."""
    best = {"device": "?", "mount_point": "/", "fstype": "?"}
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, fstype = line.split()[:3]
            inside = path == Path(point) or Path(point) in path.parents
            if inside and len(point) >= len(best["mount_point"]):
                best = {"device": device, "mount_point": point, "fstype": fstype}
    return best


def machine_info(workdir: Path) -> Result:
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": _cpu_model(),
            "total_ram_bytes": _meminfo_total(), "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "streamload": __version__, "workdir": str(workdir), "workdir_mount": _mount_of(workdir),
            "workdir_free_bytes": shutil.disk_usage(workdir).free}


def _ratio_cell(ratios: Result, baseline: str) -> str:
    return f"{ratios[baseline]:.2f}x" if baseline in ratios else ""


def throughput_table(part: Result) -> list[str]:
    rounds = len(part["rounds"])
    lines = [f"### Build throughput: {part['source_bytes'] / MB:,.0f} MB ({part['samples']:,} tiled MNIST "
             f"samples), median of {rounds} interleaved rounds after {len(part['warmup_rounds'])} discarded", "",
             "| writer | MB/s | min-max | vs np.save | vs np.save+fsync |", "|---|---:|---:|---:|---:|"]
    for name, median in part["median_mb_per_s"].items():
        low, high = part["min_max_mb_per_s"][name]
        ratios = part["ratios"].get(name, {name: 1.0})
        lines.append(f"| {name} | {median:,.0f} | {low:,.0f}-{high:,.0f} | {_ratio_cell(ratios, BASELINE)} "
                     f"| {_ratio_cell(ratios, BASELINE_FSYNC)} |")
    return lines


def augment_table(part: Result) -> list[str]:
    peak = part["peak"]
    return [f"### `build_shards.py --format {part['format']} --augment-to {part['augment_to']}` (child process)", "",
            "| train samples | shard bytes | wall | samples/s | peak RssAnon | peak RssFile | VmHWM |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {part['train_samples']:,} | {part['dataset_bytes'] / MB:,.0f} MB | {part['seconds']:.0f} s "
            f"| {part['train_samples_per_s']:,.0f} | {peak['rss_anon'] / MB:,.0f} MB | {peak['rss_file'] / MB:,.0f} MB "
            f"| {peak['vm_hwm'] / MB:,.0f} MB |"]


def markdown(results: Result) -> str:
    machine = results["machine"]
    lines = [f"{machine['usable_cpus']} CPUs ({machine['cpu_model']}), {machine['total_ram_bytes'] / 2**30:.0f} GiB "
             f"RAM, {machine['workdir_mount']['fstype']} at {machine['workdir']}; numpy {machine['numpy']}, "
             f"h5py {machine['h5py']}; MB = 2^20 bytes", ""]
    if "throughput" in results:
        lines += throughput_table(results["throughput"]) + [""]
    if "augmented_build" in results:
        lines += augment_table(results["augmented_build"]) + [""]
    return "\n".join(lines)


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
        print(f"benchmark_build.py: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
