"""The loader benchmark's cold part (issue 6, ``--cold``): every reader against cold storage.

Measured by :mod:`benchmarks.cold` (shared with the tests of the harness): each contender's
files are evicted from the page cache before its pass, which reads a fixed number of batches;
``read_bytes`` of ``/proc/self/io`` says what came from storage, per byte delivered (the samples'
stored bytes, uint8 image + label, not the float32 output). A plain front-to-back read of the same
shards is the ceiling every reader is compared with.

``full_epochs`` makes streamload's passes and the ceiling read whole epochs; that says something
about a dataset larger than RAM only if the page cache cannot hold the file, so it goes with
``--cold-cap-mb`` (the whole part runs in a child whose memory cgroup is capped below the file's
size: :func:`capped_cold_benchmark`) or with a dataset larger than the machine's RAM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamload.format.manifest import read_manifest
from streamload.options import DEFAULT_PREFETCH_BATCHES, LoaderOptions
from streamload.places.generations import shard_root
from streamload.read.loader import BatchLoader

from .cgroups import CgroupUnavailableError, MemoryCgroup, find_parent
from .cold import ColdResult, PlainGatherLoader, cold_pass, sequential_pass
from .common import MB, REPO_ROOT, build_command, log
from .rounds import NullProgress, run_rounds, summarize

Result = dict[str, Any]
MakeLoader = Callable[[Path, LoaderOptions], Any]
SEQUENTIAL = "sequential read / -"
COLD_FIGURES = ("samples_per_s", "read_per_delivered", "delivered_mb_per_s", "read_mb_per_s", "read_bytes", "seconds")
COLD_CONTENDERS = 7  # four streamload passes, two plain gathers, one sequential read (default options)
FORMATS = ("npy", "hdf5")


def _cold_figures(result: ColdResult) -> Result:
    return {"samples": result.samples, "seconds": result.seconds, "samples_per_s": result.samples_per_s,
            "delivered_bytes": result.delivered_bytes, "read_bytes": result.read_bytes,
            "read_per_delivered": result.amplification,
            "delivered_mb_per_s": result.delivered_bytes / MB / result.seconds,
            "read_mb_per_s": result.read_bytes / MB / result.seconds}


def shard_files(directory: Path) -> list[Path]:
    """Every train shard file of a dataset, in shard order."""
    manifest = read_manifest(directory)
    root = shard_root(directory, manifest)
    return [root / file.name for shard in manifest.split("train").shards for file in shard.files.values()]


def streamload_name(fmt: str, shuffle: str, prefetch: int) -> str:
    """``streamload npy / exact`` with the default read hints, ``..., hints off`` without, else the depth."""
    if prefetch == DEFAULT_PREFETCH_BATCHES:
        return f"streamload {fmt} / {shuffle}"
    return f"streamload {fmt} / {shuffle}, " + ("hints off" if prefetch == 0 else f"prefetch {prefetch}")


def _streamload(directory: Path, sampling: LoaderOptions) -> BatchLoader:
    return BatchLoader(directory, "train", sampling)


def _plain(directory: Path, sampling: LoaderOptions) -> PlainGatherLoader:
    return PlainGatherLoader(directory, "train", sampling)


def cold_contenders(npy: Path, hdf5: Path | None, batches: int, batch_size: int, seed: int,
                    exact_batches: int | None = None, prefetch: Sequence[int] = (DEFAULT_PREFETCH_BATCHES,),
                    full_epochs: bool = False) -> dict[str, Callable[[int], Result]]:
    """Name (``reader / shuffle``) -> one cold pass (``bench.cold``) of round ``number``, the epoch it reads.

    Exact-order passes read ``exact_batches`` (default ``batches``): kept short next to the file, they
    see what a dataset larger than RAM sees, where pages read ahead are evicted before a later batch
    could use them. A long pass over a file that fits in the page cache lets kernel readahead pull in
    the whole file and then serve later batches from it, which no out-of-RAM epoch can count on.
    ``full_epochs``: streamload's passes read whole epochs and the ceiling whole files (for a page
    cache capped below the files' size); the plain gathers keep ``exact_batches``. ``hdf5`` None: npy only.
    """
    def loader_pass(directory: Path, make: MakeLoader, shuffle: str, count: int,
                    hints: int = DEFAULT_PREFETCH_BATCHES) -> Callable[[int], Result]:
        sampling = LoaderOptions(batch_size=batch_size, shuffle=shuffle, seed=seed, prefetch_batches=hints)
        return lambda number: _cold_figures(cold_pass(lambda: make(directory, sampling), directory,
                                                      [(number, batch) for batch in range(count)]))

    exact_count = batches if exact_batches is None else exact_batches
    epoch = -(-read_manifest(npy).split("train").num_samples // batch_size)
    counts = {"exact": epoch if full_epochs else exact_count, "block": epoch if full_epochs else batches}
    folders = {"npy": npy} if hdf5 is None else {"npy": npy, "hdf5": hdf5}
    contenders = {streamload_name(fmt, order, depth): loader_pass(folder, _streamload, order, counts[order], depth)
                  for fmt, folder in folders.items() for order in ("exact", "block") for depth in prefetch}
    contenders["np.load mmap gather / exact"] = loader_pass(npy, _plain, "exact", exact_count)
    if hdf5 is not None:
        contenders["h5py gather / exact"] = loader_pass(hdf5, _plain, "exact", exact_count)
    sample_bytes = sum(spec.sample_bytes for spec in read_manifest(npy).split("train").arrays.values())
    contenders[SEQUENTIAL] = lambda number: _cold_figures(sequential_pass(shard_files(npy), sample_bytes))
    return contenders


def cold_benchmark(npy: Path, hdf5: Path | None, batches: int, batch_size: int = 64, seed: int = 0, rounds: int = 1,
                   progress: Any = NullProgress(), exact_batches: int | None = None,
                   prefetch: Sequence[int] = (DEFAULT_PREFETCH_BATCHES,), full_epochs: bool = False) -> Result:
    """Samples/s and storage bytes read per delivered byte of each reader, cold, in one run.

    Pass lengths are cut to one epoch of the dataset (small datasets in tests, or many batches asked).
    """
    train = read_manifest(npy).split("train")
    epoch_batches = -(-train.num_samples // batch_size)
    batches = min(batches, epoch_batches)
    exact_batches = batches if exact_batches is None else min(exact_batches, epoch_batches)
    contenders = cold_contenders(npy, hdf5, batches, batch_size, seed, exact_batches, prefetch, full_epochs)
    results = run_rounds(contenders, rounds, progress)
    medians = {figure: summarize(results, figure)["median"] for figure in COLD_FIGURES}
    ceiling = medians["samples_per_s"][SEQUENTIAL]
    return {"npy": str(npy), "hdf5": None if hdf5 is None else str(hdf5), "samples": train.num_samples,
            "batches": epoch_batches if full_epochs else batches, "exact_batches": exact_batches,
            "full_epochs": full_epochs, "prefetch": list(prefetch), "batch_size": batch_size,
            "dataset_bytes": sum(path.stat().st_size for path in shard_files(npy)),
            "rounds": results, "median": medians,
            "vs_sequential": {name: value / ceiling for name, value in medians["samples_per_s"].items()}}


def capped_cold_benchmark(inner_argv: list[str], cap_bytes: int) -> Result:
    """The cold part run by ``benchmark_loaders.py`` in a child inside a memory cgroup capped at ``cap_bytes``.

    The cap holds the child's heap and the page cache it reads into, so a dataset of a few GB
    behaves as one larger than RAM: full epochs show no page cache reuse a bigger set would not see.
    ``inner_argv`` are the child's cold options (no cap). Raises CgroupUnavailableError where no group can be made.
    """
    parent, reason = find_parent()
    if parent is None:
        raise CgroupUnavailableError(f"--cold-cap-mb needs a writable memory cgroup, and there is none here: {reason}; "
                                     "run the cold part on a dataset larger than this machine's RAM instead")
    with tempfile.TemporaryDirectory() as scratch, MemoryCgroup(parent, "streamload-cold", cap_bytes) as group:
        out = Path(scratch, "cold.json")
        command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_loaders.py"), *inner_argv, "--json", str(out)]
        subprocess.run(group.command(command), check=True, stdout=subprocess.DEVNULL)
        part = json.loads(out.read_text())["cold"]
        part["cgroup"] = group.describe()
    return part


def ensure_cold_dataset(directory: Path, fmt: str, samples: int, source: Path | None, *options: str) -> Path:
    """The augmented cold dataset, built by the real CLI (more ``options`` of it) unless it is already there."""
    if not (directory / "manifest.json").is_file():
        command = build_command(fmt, directory, "--augment-to", str(samples), "--quiet", "--no-download", *options,
                                source=source)
        log(f"building {directory}: {' '.join(command)}")
        subprocess.run(command, check=True)
    return directory
