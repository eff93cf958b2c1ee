"""Issue 12's image-folder build benchmark: images/s and peak memory of ``build_shards.py`` on PNGs.

A folder of ``--count`` synthetic PNGs in ``--classes`` class subfolders is generated once (and
reused while its parameters match), then the real CLI builds it once per ``--jobs`` value, each in
a child process. Its wall time covers everything a user waits for: interpreter start, the check
pass, decoding, writing, fsync and hashing. Memory is polled from ``/proc``: the build process
with ``PeakMemorySampler`` (RssAnon, its heap, apart from RssFile, mapped shard pages), and its
decoding workers, which are its child processes, as the peak of their summed RssAnon. The PNGs are
in the page cache (just generated or read by the run before), so this times decoding, not the disk.

MB means 2**20 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import read_memory
from streamload.errors import StreamloadError
from streamload.format.manifest import read_manifest

from .common import (
    MB,
    build_command,
    check_free_space,
    cpus_and_ram,
    emit,
    fail,
    log,
    machine_info,
    options_of,
    run_sampled,
)

Result = dict[str, Any]
MARKER = "benchmark-images.json"


def _pixels(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """A gradient whose direction depends on the class, plus noise: PNGs of realistic, varied size."""
    rows, cols = np.mgrid[0:size, 0:size]
    angle = label * np.pi / 5
    ramp = (np.cos(angle) * cols + np.sin(angle) * rows) * (255 / (2 * size)) + 128
    return np.clip(ramp + rng.normal(0, 24, (size, size)), 0, 255).astype(np.uint8)


def generate_pngs(folder: Path, count: int, size: int, classes: int, seed: int = 0) -> bool:
    """Write ``count`` grayscale PNGs of ``size`` x ``size`` into class subfolders; False if already there."""
    from PIL import Image

    wanted = {"count": count, "size": size, "classes": classes, "seed": seed}
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return False
    rng = np.random.default_rng(seed)
    for label in range(classes):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    for number in range(count):
        label = number % classes
        Image.fromarray(_pixels(rng, size, label), "L").save(folder / f"class{label}" / f"{number:07d}.png")
    marker.write_text(json.dumps(wanted))
    return True


def _workers(pid: int) -> list[int]:
    """Children of ``pid`` running this Python (its decoding workers; not e.g. ldconfig, run by ctypes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    python = os.path.realpath(sys.executable)
    return [child for child in found if _exe(child) == python]


def _exe(pid: int) -> str | None:
    try:
        return os.path.realpath(f"/proc/{pid}/exe", strict=True)
    except OSError:
        return None


class WorkerMemorySampler:
    """Peak of the summed RssAnon of a process' decoding workers, polled in a thread while ``watching`` it."""

    def __init__(self, interval: float) -> None:
        self.pid, self.interval = -1, interval
        self.peak_rss_anon, self.most_workers = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watching(self, pid: int) -> WorkerMemorySampler:
        self.pid = pid
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            total, alive = 0, 0
            for child in _workers(self.pid):
                try:
                    total += read_memory(child).rss_anon
                    alive += 1
                except ProcessLookupError:
                    continue
            self.peak_rss_anon, self.most_workers = max(self.peak_rss_anon, total), max(self.most_workers, alive)

    def __enter__(self) -> WorkerMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _children_cpu() -> float:
    """User + system CPU seconds of every reaped child (a child's own reaped children included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_build(command: list[str], interval: float) -> Result:
    """Run the CLI, polling it and its workers: status, seconds, peaks in bytes, and its output."""
    workers = WorkerMemorySampler(interval)
    with tempfile.TemporaryFile() as output:
        cpu_before = _children_cpu()
        status, seconds, sampler = run_sampled(command, interval, output, watch=workers.watching)
        cpu_seconds = _children_cpu() - cpu_before  # the build and its reaped workers
        output.seek(0)
        text = output.read().decode(errors="replace")
    if sampler is None:
        raise RuntimeError(f"{' '.join(command)} exited before it could be polled (status {status}):\n{text}")
    peak = sampler.peak
    return {"status": status, "seconds": seconds, "cpu_seconds": cpu_seconds, "output": text[-4000:],
            "peak": {"rss_anon": peak.rss_anon, "rss_file": peak.rss_file, "vm_hwm": peak.vm_hwm},
            "workers": {"peak_rss_anon_sum": workers.peak_rss_anon, "most_alive": workers.most_workers}}


def build_images(folder: Path, out: Path, jobs: int, size: int, count: int, interval: float = 0.02) -> Result:
    """One CLI build of the folder with ``--jobs jobs``; the dataset is checked to hold every image."""
    command = build_command("npy", out, "--image-size", str(size), str(size), "--color-mode", "grayscale",
                            "--jobs", str(jobs), "--quiet", "--overwrite", source=folder)
    log(f"build: {' '.join(command)}")
    result = run_build(command, interval)
    if result["status"] != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {result['status']}:\n{result['output']}")
    train = read_manifest(out).split("train")
    if train.num_samples != count or train.skipped:
        raise RuntimeError(f"{out}: holds {train.num_samples} images ({train.skipped} skipped), expected {count}")
    result.update(command=command, jobs=jobs, images=count, images_per_s=count / result["seconds"])
    log(f"--jobs {jobs}: {count:,} images in {result['seconds']:.1f} s, {result['images_per_s']:,.0f} images/s, "
        f"peak RssAnon {result['peak']['rss_anon'] / MB:.0f} MB, "
        f"workers {result['workers']['peak_rss_anon_sum'] / MB:.0f} MB")
    return result


def markdown(results: Result) -> str:
    options, machine = results["options"], results["machine"]
    lines = [f"{cpus_and_ram(machine)}; {options['count']:,} grayscale PNGs of {options['size']}x{options['size']} "
             f"in {options['classes']} classes, page cache warm; MB = 2^20 bytes", "",
             "| --jobs | wall | CPU (build + workers) | images/s | peak RssAnon (build) | peak RssFile (build) "
             "| workers | peak RssAnon (workers, summed) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        lines.append(f"| {run['jobs']} | {run['seconds']:.1f} s | {run['cpu_seconds']:.1f} s "
                     f"| {run['images_per_s']:,.0f} "
                     f"| {run['peak']['rss_anon'] / MB:,.0f} MB | {run['peak']['rss_file'] / MB:,.0f} MB "
                     f"| {run['workers']['most_alive']} | {run['workers']['peak_rss_anon_sum'] / MB:,.0f} MB |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_build_images.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/bench-build-images"),
                        help="where the PNGs and the datasets go (default: data/bench-build-images)")
    parser.add_argument("--count", type=int, default=20_000, help="PNGs to generate (default: 20000)")
    parser.add_argument("--size", type=int, default=28, help="side of the square PNGs (default: 28)")
    parser.add_argument("--classes", type=int, default=10, help="class subfolders (default: 10)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to build with (1 2)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 1 or args.classes < 1 or min(args.jobs) < 1:
        parser.error("--count, --size, --classes and --jobs must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.absolute()
    try:
        check_free_space(workdir, 3 * args.count * (args.size * args.size + 200), "pass a smaller --count")
        folder = workdir / f"pngs-{args.count}-{args.size}-{args.classes}"
        started = time.perf_counter()
        if generate_pngs(folder, args.count, args.size, args.classes):
            log(f"generated {args.count:,} PNGs in {folder} in {time.perf_counter() - started:.1f} s")
        runs = [build_images(folder, workdir / f"dataset-jobs{jobs}", jobs, args.size, args.count)
                for jobs in args.jobs]
    except (StreamloadError, RuntimeError, OSError) as exc:
        return fail("benchmark_build_images.py", exc)
    png_bytes = sum(path.stat().st_size for path in folder.rglob("*.png"))
    results = {"machine": machine_info(workdir), "options": options_of(args), "png_bytes": png_bytes, "runs": runs}
    emit(results, markdown(results), args.json)
    return 0
