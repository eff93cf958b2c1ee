"""Issue 4: peak memory of one pass over the training split, per loader and dataset size.

Each configuration runs in a fresh child (``memory_child``) whose RssAnon (heap: what the process
owns), RssFile (mapped file pages: page cache the kernel can take back) and VmHWM this process
polls from ``/proc/<pid>/status``. The child reports its RssAnon right after its imports, so the
table can show what a loader adds on top of numpy, or of Keras/TensorFlow. In-RAM loaders whose
data cannot fit are skipped with an estimate ("needs N GB, have M GB") instead of being run into
the OOM killer. ``--cap-proof`` trains one epoch under a hard RLIMIT_DATA instead: streamload
finishes, the in-RAM loaders fail with MemoryError while loading.

Units: MB = 2**20 and GB = 2**30 bytes in tables and messages; the goals ("grows by less than
100 MB", "under 1 GB") are read strictly, as 10**8 and 10**9 bytes.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from streamload.base.procstats import drop_page_cache, read_meminfo
from streamload.errors import StreamloadError
from streamload.format.manifest import read_manifest

from .common import build_command, check_free_space, emit, fail, machine_info, options_of
from .memory_child import LOADERS, MEMORY_ERROR_STATUS, child_env, run_child
from .memory_report import evaluate_goals, markdown, rerender, write_plot

GB = 2**30
REAL_MNIST_SIZE = 60_000
IN_RAM = ("tutorial", "ram")
IMPORT_ALLOWANCE = {"keras": GB // 2, "plain": GB // 8}  # heap of the imports, on top of the data
WARM_BLOCK = 16 * 2**20
FLOAT32_BYTES = 4
Result = dict[str, Any]


def variants(loader: str, apis: Sequence[str]) -> list[str]:
    """The APIs a loader runs through: the tutorial is Keras-only, the in-RAM uint8 loader Keras-free."""
    if loader == "tutorial":
        return ["keras"]
    if loader == "ram":
        return ["plain"]
    return [api for api in ("plain", "keras") if api in apis]


def mem_available() -> int:
    """MemAvailable: what can be allocated without pushing anything out to make room."""
    available = read_meminfo("MemAvailable")
    if "MemAvailable" not in available:
        raise RuntimeError("/proc/meminfo has no MemAvailable line")
    return available["MemAvailable"]


def in_ram_bytes(directory: Path) -> int:
    """Bytes an in-RAM loader holds for the whole train split: its arrays as stored (uint8 for MNIST).

    The tutorial holds exactly this too: it keeps ``mnist.load_data()``'s uint8 arrays as given.
    """
    info = read_manifest(directory).split("train")
    return info.num_samples * sum(spec.sample_bytes for spec in info.arrays.values())


def article_float32_estimate(directory: Path) -> int:
    """The article's own estimate (float32): every pixel of the split as float32. Computed, never
    measured: the article's code does not hold this, it keeps the uint8 split (``in_ram_bytes``)."""
    info = read_manifest(directory).split("train")
    return info.num_samples * math.prod(info.arrays["x"].shape) * FLOAT32_BYTES


def memory_estimate(directory: Path, loader: str, api: str, headroom: int) -> Result | None:
    """None when the configuration fits (or streams); else why it is skipped, in figures."""
    if loader not in IN_RAM:
        return None
    need = in_ram_bytes(directory) + IMPORT_ALLOWANCE[api]
    have = mem_available()
    if need <= have - headroom:
        return None
    return {"need_bytes": need, "available_bytes": have, "headroom_bytes": headroom,
            "reason": f"needs {need / GB:.1f} GB, have {have / GB:.1f} GB (MemAvailable, "
                      f"{headroom / GB:.1f} GB kept free)"}


def _matches(directory: Path, size: int, fmt: str) -> bool:
    """Whether ``directory`` holds a complete dataset (its manifest is written last) of that size and format."""
    try:
        manifest = read_manifest(directory)
        return manifest.format == fmt and manifest.split("train").num_samples == size
    except (StreamloadError, OSError):
        return False


def dataset_dir(size: int, fmt: str, workdir: Path, reuse: Sequence[Path], source: Path | None) -> Path:
    """A complete dataset of ``size`` training samples in ``fmt``: reused when one exists, else built."""
    own = workdir / f"mnist-{size}-{fmt}"
    for candidate in [*reuse, own]:
        if _matches(candidate, size, fmt):
            return candidate
    check_free_space(workdir, size * 785 + 10_000 * 785, "free some disk or pass another --out")
    augment = [] if size == REAL_MNIST_SIZE else ["--augment-to", str(size)]
    command = build_command(fmt, own, "--quiet", "--overwrite", *augment, source=source)
    tqdm.write(f"building {own} ({size:,} samples, {fmt})", file=sys.stderr)
    subprocess.run(command, check=True, env=child_env())
    return own


def prepare_cache(directory: Path, cache: str) -> None:
    """Warm: every file read once so no run pays for the one before it; cold: evicted."""
    if cache == "cold":
        drop_page_cache(directory)
        return
    buffer = bytearray(WARM_BLOCK)
    for path in sorted(path for path in directory.rglob("*") if path.is_file()):  # the generation folder too
        with open(path, "rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass


def outcome(run: Result) -> tuple[str, str]:
    """ok / memory_error / failed, and a short reason."""
    error = run["child"].get("error")
    if run["returncode"] == 0 and run["child"].get("phase") == "done":
        return "ok", ""
    if run["returncode"] == MEMORY_ERROR_STATUS and error:
        return "memory_error", f"{error['type']} while {error['phase']}: {error['message']}"
    return "failed", f"exit status {run['returncode']}: {run['output_tail'][-300:]}"


def _format_of(loader: str) -> str:
    """The shards a loader reads: in-RAM loaders fill their arrays from the npy ones."""
    return "npy" if loader in IN_RAM else loader


def _measured_run(folder: Path, options: list[str], args: argparse.Namespace) -> Result:
    """One child run on a page cache prepared as ``--cache`` says: its figures, status and reason."""
    if args.max_batches is not None:
        options = [*options, "--max-batches", str(args.max_batches)]
    prepare_cache(folder, args.cache)
    run = run_child(options, args.interval)
    status, reason = outcome(run)
    return {"status": status, "reason": reason, **run}


def measure_config(size: int, loader: str, api: str, directory: Path, args: argparse.Namespace) -> Result:
    """One row of the table: skipped with its estimate, or run and measured."""
    row: Result = {"size": size, "loader": loader, "api": api, "dataset": str(directory)}
    skip = memory_estimate(directory, loader, api, int(args.headroom_gb * GB))
    if skip is not None:
        return {**row, "status": "skipped", "reason": skip["reason"], "estimate": skip}
    options = ["--loader", loader, "--api", api, "--data", str(directory), "--batch-size", str(args.batch_size)]
    row.update(_measured_run(directory, options, args))
    baseline = row["child"].get("memory", {}).get("baseline")
    if baseline is not None:
        row["baseline_rss_anon"] = baseline["rss_anon"]
        row["increment_rss_anon"] = row["peak"]["rss_anon"] - baseline["rss_anon"]
    return row


def datasets_for(size: int, loaders: Sequence[str], args: argparse.Namespace) -> dict[str, Path]:
    """Format -> folder for one size; in-RAM loaders read the npy shards, so every loader sees the same data."""
    formats = sorted({_format_of(loader) for loader in loaders})
    return {fmt: dataset_dir(size, fmt, args.out, args.reuse, args.source) for fmt in formats}


def run_matrix(args: argparse.Namespace) -> list[Result]:
    configs = [(size, loader, api) for size in args.sizes for loader in args.loaders
               for api in variants(loader, args.apis)]
    rows = []
    with tqdm(total=len(configs), desc="memory runs", unit="run", disable=args.quiet) as bar:
        for size in args.sizes:
            folders = datasets_for(size, args.loaders, args)
            for loader in args.loaders:
                for api in variants(loader, args.apis):
                    bar.set_postfix_str(f"{size:,} {loader}/{api}")
                    rows.append(measure_config(size, loader, api, folders[_format_of(loader)], args))
                    bar.update()
    return rows


def cap_proof(args: argparse.Namespace) -> Result:
    """One epoch of ``model.fit`` per loader under RLIMIT_DATA = ``--cap-gb``."""
    cap = int(args.cap_gb * GB)
    folders = datasets_for(args.cap_size, args.cap_loaders, args)
    runs = []
    for loader in tqdm(args.cap_loaders, desc="cap proof", unit="run", disable=args.quiet):
        folder = folders[_format_of(loader)]
        options = ["--loader", loader, "--api", "plain" if loader == "ram" else "keras", "--data", str(folder),
                   "--batch-size", str(args.cap_batch_size), "--mode", "fit", "--cap-bytes", str(cap)]
        runs.append({"loader": loader, "dataset": str(folder), **_measured_run(folder, options, args)})
    npy = folders.get("npy") or next(iter(folders.values()))
    sizes = {"in_ram_bytes": in_ram_bytes(npy), "article_float32_estimate_bytes": article_float32_estimate(npy)}
    proved = all((run["status"] == "memory_error" and run["child"]["error"]["phase"] == "load")
                 if run["loader"] in IN_RAM else run["status"] == "ok" for run in runs)
    return {"cap_bytes": cap, "size": args.cap_size, "batch_size": args.cap_batch_size, **sizes,
            "runs": runs, "proved": proved}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_memory.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 1_000_000, 8_100_000],
                        help="training samples; 60000 is real MNIST, others are built with --augment-to")
    parser.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    parser.add_argument("--apis", nargs="+", choices=("plain", "keras"), default=["plain", "keras"],
                        help="npy/hdf5 through BatchLoader (plain, Keras-free) and/or StreamingGenerator (keras)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int, help="cut every pass (and fit) short: for quick checks only")
    parser.add_argument("--out", type=Path, default=Path("data/bench-memory"), help="datasets and plot go here")
    parser.add_argument("--reuse", type=Path, nargs="*", default=[Path("data/bench-build/mnist8m")],
                        help="datasets to use where format and size match (default: data/bench-build/mnist8m)")
    parser.add_argument("--source", type=Path, help="MNIST folder for builds (default: $STREAMLOAD_MNIST_DIR)")
    parser.add_argument("--headroom-gb", type=float, default=2.0, help="RAM kept free when deciding to skip")
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm", help="page cache state before each run")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between memory polls")
    parser.add_argument("--cap-proof", action="store_true", help="run the RLIMIT_DATA proof instead of the table")
    parser.add_argument("--cap-gb", type=float, default=2.0, help="RLIMIT_DATA of the proof, GB (default: 2)")
    parser.add_argument("--cap-size", type=int, default=8_100_000, help="training samples of the proof")
    parser.add_argument("--cap-batch-size", type=int, default=1024, help="batch size of the proof's fit")
    parser.add_argument("--cap-loaders", nargs="+", choices=LOADERS, default=["npy", "hdf5", "tutorial", "ram"])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plot", type=Path, help="PNG of peak memory per size (default: OUT/memory-footprint.png)")
    parser.add_argument("--from-json", type=Path, help="re-render the table and plot of an earlier --json; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if min(args.sizes + [args.batch_size, args.cap_size, args.cap_batch_size]) < 1 or not args.cap_gb > 0:
        parser.error("sizes, batch sizes and --cap-gb must be positive")
    args.sizes = sorted(set(args.sizes))
    args.out = args.out.absolute()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        return rerender(args.from_json, args.plot)
    args.out.mkdir(parents=True, exist_ok=True)
    options = options_of(args)
    options["reuse"] = [str(path) for path in args.reuse]
    results: Result = {"machine": machine_info(args.out), "options": options}
    try:
        if args.cap_proof:
            results["cap_proof"] = cap_proof(args)
        else:
            results["runs"] = run_matrix(args)
            results["goals"] = evaluate_goals(results["runs"])
            plot = args.plot or args.out / "memory-footprint.png"
            results["plot"] = str(write_plot(results["runs"], plot, results["machine"]["total_ram_bytes"]))
    except (StreamloadError, subprocess.CalledProcessError) as exc:
        return fail("benchmark_memory.py", exc)
    emit(results, markdown(results), args.json)
    return 0
