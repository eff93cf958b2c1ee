"""Issue 13: a dataset larger than the machine's RAM, built, verified and trained on end to end, measured.

The run sizes the dataset from the machine (``--ram-ratio`` x MemTotal of augmented MNIST, checking
free disk first), builds it with the real CLI (``build_shards.py --augment-to``, its peak RssAnon
polled) and verifies it (``--verify``), then measures in the same run what the storage can do (a
sequential read of the shards, cold; 4 KiB random reads at depth 1 and 64) and, each in a fresh
process polled every second (:mod:`benchmarks.timeline`): one full epoch of ``model.fit`` in block
order, a bounded pass in exact order (:mod:`benchmarks.beyond_child`), and the tutorial's design
(the whole uint8 split in RAM) under RLIMIT_DATA = MemTotal, which fails with MemoryError instead
of pushing the machine into the OOM killer. Optionally, the cold loader benchmark with its page
cache capped by a memory cgroup (``--cold``). The figures, the goals, a Markdown report and a plot
come from :mod:`benchmarks.beyond_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from streamload.base.procstats import drop_page_cache, read_meminfo
from streamload.errors import StreamloadError
from streamload.format.manifest import read_manifest
from streamload.read.dataset import ShardedDataset

from .beyond_child import COUNTER_BYTES, MEMORY_ERROR_STATUS
from .beyond_report import evaluate_goals, markdown, write_plot
from .cgroups import CgroupUnavailableError, MemoryCgroup, find_parent
from .cold import resident_fraction, sequential_pass
from .common import BUILD_SCRIPT, MB, build_command, check_free_space, emit, fail, machine_info, options_of
from .device_limits import pages_per_sample, random_read_limits
from .memory_child import child_env
from .timeline import run_watched

Result = dict[str, Any]
TEST_SPLIT_SAMPLES = 10_000  # the build writes MNIST's real test split beside the augmented train split
BUILD_OVERHEAD_BYTES = 64 * MB  # manifest, headers, the test split's rounding


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_beyond_ram.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/beyond-ram"), help="datasets and plot go here")
    parser.add_argument("--data", type=Path, help="use this dataset (its manifest is checked) instead of building one")
    parser.add_argument("--samples", type=int, help="train samples to build (default: --ram-ratio x MemTotal)")
    parser.add_argument("--ram-ratio", type=float, default=1.3, help="dataset size / MemTotal (default: 1.3)")
    parser.add_argument("--ram-bytes", type=int, help="the RAM the run plays against: default MemTotal; the tutorial's "
                                                      "RLIMIT_DATA and the base of the default size")
    parser.add_argument("--source", type=Path, help="MNIST folder (default: $STREAMLOAD_MNIST_DIR)")
    parser.add_argument("--batch-size", type=int, default=4096, help="samples per batch (default: 4096)")
    parser.add_argument("--workers", type=int, default=2,
                        help="PyDataset worker threads feeding model.fit (default: 2: loading overlaps training)")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                        help="Keras backend of the training processes (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--exact-seconds", type=float, default=120.0,
                        help="length of the exact-order training pass; the loader alone gets half (default: 120)")
    parser.add_argument("--block-seconds", type=float, help="cut the block-order epoch short (checks only)")
    parser.add_argument("--ram-samples", type=int, default=1_000_000,
                        help="samples in RAM for the model's own speed (model.fit on arrays; default: 1000000)")
    parser.add_argument("--sequential-gb", type=float, default=8.0, help="GB read for the sequential ceiling")
    parser.add_argument("--random-seconds", type=float, default=8.0, help="seconds per random-read depth")
    parser.add_argument("--random-engine", choices=("auto", "fio", "python"), default="auto")
    parser.add_argument("--cgroup-cap-mb", type=int, help="also cap the training processes' memory (heap + page "
                                                          "cache) with a cgroup: for datasets smaller than RAM")
    parser.add_argument("--skip-verify", action="store_true", help="do not run build_shards.py --verify")
    parser.add_argument("--cold", action="store_true", help="add the cold loader benchmark, page cache capped")
    parser.add_argument("--cold-samples", type=int, default=2_000_000, help="size of the cold part's datasets")
    parser.add_argument("--cold-cap-mb", type=int, default=384, help="the cold part's cgroup cap (default: 384)")
    parser.add_argument("--delete-built", action="store_true", help="delete the dataset this run built at the end")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plot", type=Path, help="PNG of throughput and memory over the passes "
                                                  "(default: WORKDIR/bigger-than-ram.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    positive = [args.batch_size, args.workers, args.exact_seconds, args.sequential_gb, args.random_seconds,
                args.ram_ratio, args.cold_samples, args.cold_cap_mb, args.ram_samples]
    if min(positive) <= 0 or any(value is not None and value <= 0 for value in
                                 (args.samples, args.ram_bytes, args.block_seconds, args.cgroup_cap_mb)):
        parser.error("sizes, counts, seconds and ratios must be positive")
    args.workdir = args.workdir.absolute()
    return args


class Progress:
    """tqdm bars for the long steps, or nothing (``--no-progress``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, total: float | None, desc: str, unit: str = "it", scale: bool = True) -> Any:
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, disable=not self.enabled, file=sys.stderr,
                    dynamic_ncols=True)

    def note(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)


def mem_total() -> int:
    return read_meminfo("MemTotal")["MemTotal"]


def stored_bytes(samples: int) -> int:
    """Bytes a build of ``samples`` augmented digits writes (x and y, 785 bytes a sample), test split included."""
    return (samples + TEST_SPLIT_SAMPLES) * (28 * 28 + 1) + BUILD_OVERHEAD_BYTES


def staging_left(dataset: Path) -> list[str]:
    """Temporary folders a build leaves next to its dataset if it did not clean up (``.NAME.building-PID``)."""
    return sorted(str(path) for path in dataset.parent.glob(f".{dataset.name}.*"))


def check_dataset(directory: Path) -> Result:
    """A dataset given with ``--data``: its manifest read and checked, its train split described."""
    manifest = read_manifest(directory)
    info = manifest.split("train")
    if "x" not in info.arrays or info.arrays["x"].shape != (28, 28):
        raise StreamloadError(f"{directory}: train split holds no 28x28 images 'x'; the benchmark trains on MNIST")
    return {"path": str(directory), "format": manifest.format, "samples": info.num_samples,
            "shards": len(info.shards), "bytes": info.file_bytes}


def build(args: argparse.Namespace, out: Path, samples: int, progress: Progress) -> Result:
    """``build_shards.py --augment-to``, its RssAnon polled; then no staging folder may be left."""
    command = build_command("npy", out, "--augment-to", str(samples), "--no-download",
                            *(["--quiet"] if not progress.enabled else []), source=args.source)
    progress.note(f"building {out}: {samples:,} samples, about {stored_bytes(samples) / 1e9:.1f} GB")
    with tempfile.TemporaryFile() as log:
        run = run_watched(command, 2 if progress.enabled else log, child_env())
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    if run["returncode"]:
        raise subprocess.CalledProcessError(run["returncode"], command, tail)
    return {"command": command, "seconds": run["wall_seconds"], "peak_rss_anon": run["peak_rss_anon"],
            "staging_left": staging_left(out)}


def verify(directory: Path, progress: Progress) -> Result:
    quiet = [] if progress.enabled else ["--quiet"]
    command = [sys.executable, str(BUILD_SCRIPT), "--verify", str(directory), *quiet]
    started = time.perf_counter()
    status = subprocess.run(command, stdout=2 if progress.enabled else subprocess.DEVNULL, env=child_env()).returncode
    return {"command": command, "seconds": time.perf_counter() - started, "returncode": status, "ok": status == 0}


def shard_paths(directory: Path) -> dict[str, list[Path]]:
    dataset = ShardedDataset(directory)
    return {key: [dataset.root / shard.files[key].name for shard in dataset.info.shards] for key in dataset.keys}


def sequential_ceiling(directory: Path, sample_bytes: int, limit: int, progress: Progress) -> Result:
    files = [path for shard in zip(*shard_paths(directory).values()) for path in shard]  # shard by shard, x then y
    total = min(limit, sum(path.stat().st_size for path in files))
    with progress.bar(total, "sequential read (cold)", "B") as bar:
        result = sequential_pass(files, sample_bytes, limit, on_bytes=bar.update)
    return {"bytes": result.delivered_bytes, "seconds": result.seconds, "read_bytes": result.read_bytes,
            "bytes_per_s": result.delivered_bytes / result.seconds, "samples_per_s": result.samples_per_s}


def watched_pass(args: argparse.Namespace, directory: Path, role: str, shuffle: str, seconds: float | None,
                 samples: int, progress: Progress, group: MemoryCgroup | None = None) -> Result:
    """One fresh process (``beyond_child ROLE``) on an evicted page cache, read every second."""
    drop_page_cache(directory)
    resident = resident_fraction(shard_paths(directory)["x"])  # ~0, unless another process holds the files mapped
    with tempfile.TemporaryDirectory() as scratch:
        counter, result_path = Path(scratch, "counter"), Path(scratch, "result.json")
        counter.write_bytes(bytes(COUNTER_BYTES))
        command = [sys.executable, "-m", "benchmarks.beyond_child", role, "--data", str(directory), "--result",
                   str(result_path), "--counter", str(counter), "--shuffle", shuffle, "--batch-size",
                   str(args.batch_size), "--ram-samples", str(args.ram_samples), "--workers", str(args.workers),
                   *(["--max-seconds", str(seconds)] if seconds else [])]
        command = group.command(command) if group is not None else command
        env = {**child_env(), "KERAS_BACKEND": args.backend}
        label = {"train": "model.fit", "load": "loader alone", "fit-ram": "model.fit, in-RAM arrays"}[role]
        with progress.bar(samples, f"{shuffle} order: {label}", "sample") as bar, \
                open(Path(scratch, "log"), "w+b") as log:
            def show(reading: Result) -> None:
                bar.update(reading["samples"] - bar.n)

            run = run_watched(command, log, env, counter, group, on_reading=show)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
        child = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if run["returncode"] or child.get("phase") != "done":
        raise RuntimeError(f"the {role} process ({shuffle} order) failed (status {run['returncode']}): {tail}")
    return {**run, "child": child, "role": role, "shuffle": shuffle, "max_seconds": seconds,
            "resident_before": resident}


def tutorial_pass(args: argparse.Namespace, directory: Path, cap: int, progress: Progress) -> Result:
    """The tutorial's in-RAM design under RLIMIT_DATA = ``cap``: a MemoryError, never the OOM killer."""
    progress.note(f"tutorial design: whole uint8 split in RAM, RLIMIT_DATA = {cap / 2**30:.2f} GiB")
    with tempfile.TemporaryDirectory() as scratch, open(Path(scratch, "log"), "w+b") as log:
        result_path = Path(scratch, "result.json")
        command = [sys.executable, "-m", "benchmarks.beyond_child", "tutorial", "--data", str(directory), "--result",
                   str(result_path), "--cap-bytes", str(cap), "--batch-size", str(args.batch_size),
                   "--max-seconds", "5"]
        run = run_watched(command, log, {**child_env(), "KERAS_BACKEND": args.backend})
        child = json.loads(result_path.read_text()) if result_path.is_file() else {}
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    status = ("memory_error" if run["returncode"] == MEMORY_ERROR_STATUS and child.get("error") else
              "ok" if run["returncode"] == 0 else "failed")
    return {"status": status, "cap_bytes": cap, "returncode": run["returncode"], "wall_seconds": run["wall_seconds"],
            "peak_rss_anon": run["peak_rss_anon"], "child": child, "output_tail": tail if status == "failed" else ""}


def cold_part(args: argparse.Namespace, dataset: Path, progress: Progress) -> Result:
    """``benchmark_loaders.py --cold``: full epochs with its page cache capped by a cgroup, else on this dataset."""
    parent, reason = find_parent()
    script = str(Path(BUILD_SCRIPT).with_name("benchmark_loaders.py"))
    common = ["--cold", "--skip-warm", "--skip-fit", "--cold-rounds", "1", "--cold-prefetch", "8", "0",
              "--data", str(args.workdir / "bench-loaders"), *(["--no-progress"] if not progress.enabled else [])]
    if parent is not None:
        options = ["--cold-npy", str(args.workdir / "cold-npy"), "--cold-hdf5", str(args.workdir / "cold-hdf5"),
                   "--cold-samples", str(args.cold_samples), "--cold-full-epochs", "--cold-cap-mb",
                   str(args.cold_cap_mb)]
        mode = {"capped": True, "cap_bytes": args.cold_cap_mb * MB}
    else:  # no cgroup here: the dataset larger than RAM is its own cap; exact passes stay bounded
        options = ["--cold-npy", str(dataset), "--cold-formats", "npy", "--cold-exact-batches", "2000"]
        mode = {"capped": False, "reason": reason}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch, "cold.json")
        subprocess.run([sys.executable, script, *common, *options, "--json", str(out)], check=True,
                       stdout=subprocess.DEVNULL, env=child_env())
        return {**mode, **json.loads(out.read_text())["cold"]}


def plan(args: argparse.Namespace, ram: int) -> tuple[Path, int]:
    """Where the dataset is and how many train samples it holds (to be built when it is not there)."""
    if args.data is not None:
        return args.data.absolute(), check_dataset(args.data.absolute())["samples"]
    samples = args.samples or int(args.ram_ratio * ram / (28 * 28 + 1))
    return args.workdir / f"mnist-{samples}", samples


def prepare(args: argparse.Namespace, results: Result, progress: Progress, ram: int) -> Path:
    """The dataset: checked (``--data``, or one this benchmark built before) or built and verified now."""
    directory, samples = plan(args, ram)
    reused = args.data is not None or (directory / "manifest.json").is_file()
    if not reused:
        cold = 2 * stored_bytes(args.cold_samples) if args.cold and find_parent()[0] is not None else 0
        check_free_space(args.workdir, stored_bytes(samples) + cold,
                         f"the dataset needs {stored_bytes(samples) / 1e9:.1f} GB ({samples:,} samples of 785 bytes), "
                         f"the cold part {cold / 1e9:.1f} GB: free some disk, pass --samples or --workdir")
        results["build"] = build(args, directory, samples, progress)
    results["dataset"] = {**check_dataset(directory), "reused": reused, "ram_bytes": ram}
    results["dataset"]["vs_ram"] = results["dataset"]["bytes"] / ram
    if not args.skip_verify:
        results["verify"] = verify(directory, progress)
    return directory


def measure(args: argparse.Namespace, directory: Path, results: Result, progress: Progress, ram: int) -> None:
    dataset = ShardedDataset(directory)
    info = dataset.info
    sample_bytes = sum(spec.sample_bytes for spec in info.arrays.values())
    results["device"] = {"sequential": sequential_ceiling(directory, sample_bytes, int(args.sequential_gb * 1e9),
                                                          progress),
                         "random": random_read_limits(shard_paths(directory)["x"], (1, 64), args.random_seconds,
                                                      args.random_engine, progress.note),
                         "pages_per_sample": pages_per_sample(dataset), "sample_bytes": sample_bytes}
    group = None
    if args.cgroup_cap_mb is not None:
        parent, reason = find_parent()
        if parent is None:
            raise CgroupUnavailableError(f"--cgroup-cap-mb: no writable memory cgroup here: {reason}")
        group = MemoryCgroup(parent, "streamload-beyond", args.cgroup_cap_mb * MB)
    passes = {"block": ("train", "block", args.block_seconds), "exact": ("train", "exact", args.exact_seconds),
              "block_loader": ("load", "block", args.block_seconds),
              "exact_loader": ("load", "exact", args.exact_seconds / 2)}
    try:
        for name, (role, shuffle, seconds) in passes.items():
            results[name] = watched_pass(args, directory, role, shuffle, seconds, info.num_samples, progress, group)
    finally:
        if group is not None:
            results["cgroup"] = group.describe()
            group.remove()
    del dataset  # its shard maps: closed before the passes evict the files
    results["fit_ram"] = watched_pass(args, directory, "fit-ram", "exact", args.block_seconds,
                                      min(args.ram_samples, info.num_samples), progress)
    results["tutorial"] = tutorial_pass(args, directory, args.ram_bytes or ram, progress)


def run(args: argparse.Namespace) -> Result:
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ram = args.ram_bytes or mem_total()
    results: Result = {"machine": {**machine_info(args.workdir), "loadavg_start": list(os.getloadavg())},
                       "options": options_of(args)}
    progress = Progress(not args.no_progress)
    directory = prepare(args, results, progress, ram)
    measure(args, directory, results, progress, ram)
    if args.cold:
        results["cold"] = cold_part(args, directory, progress)
    if args.delete_built and "build" in results:
        shutil.rmtree(directory)
        results["deleted"] = str(directory)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["total_seconds"] = time.perf_counter() - started
    results["goals"] = evaluate_goals(results)
    results["plot"] = str(write_plot(results, args.plot or args.workdir / "bigger-than-ram.png"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (StreamloadError, subprocess.CalledProcessError, CgroupUnavailableError, RuntimeError, OSError) as exc:
        return fail("benchmark_beyond_ram.py", exc)
    emit(results, markdown(results), args.json)
    return 0
