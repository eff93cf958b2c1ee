"""The loader benchmark's cold part (issue 6, ``--cold``): every reader against cold storage.

Measured by :mod:`benchmarks.cold` (shared with the tests of the harness): each contender's
files are evicted from the page cache before its pass, which reads a fixed number of batches;
``read_bytes`` of ``/proc/self/io`` says what came from storage, per byte delivered (the samples'
stored bytes, uint8 image + label, not the float32 output). A plain front-to-back read of the same
shards is the ceiling every reader is compared with.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamload.generations import shard_root
from streamload.loader import BatchLoader
from streamload.manifest import read_manifest
from streamload.options import LoaderOptions

from .cold import ColdResult, PlainGatherLoader, cold_pass, sequential_pass
from .common import MB, build_command, log
from .rounds import NullProgress, run_rounds, summarize

Result = dict[str, Any]
MakeLoader = Callable[[Path, LoaderOptions], Any]
SEQUENTIAL = "sequential read / -"
COLD_FIGURES = ("samples_per_s", "read_per_delivered", "delivered_mb_per_s", "read_mb_per_s", "read_bytes", "seconds")
COLD_CONTENDERS = 7  # four streamload passes, two plain gathers, one sequential read


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


def _streamload(directory: Path, sampling: LoaderOptions) -> BatchLoader:
    return BatchLoader(directory, "train", sampling)


def _plain(directory: Path, sampling: LoaderOptions) -> PlainGatherLoader:
    return PlainGatherLoader(directory, "train", sampling)


def cold_contenders(npy: Path, hdf5: Path, batches: int, batch_size: int, seed: int,
                    exact_batches: int | None = None) -> dict[str, Callable[[int], Result]]:
    """Name (``reader / shuffle``) -> one cold pass (``bench.cold``) of round ``number``, the epoch it reads.

    Exact-order passes read ``exact_batches`` (default ``batches``): kept short next to the file, they
    see what a dataset larger than RAM sees, where pages read ahead are evicted before a later batch
    could use them. A long pass over a file that fits in the page cache lets kernel readahead pull in
    the whole file and then serve later batches from it, which no out-of-RAM epoch can count on.
    """
    def loader_pass(directory: Path, make: MakeLoader, shuffle: str) -> Callable[[int], Result]:
        sampling = LoaderOptions(batch_size=batch_size, shuffle=shuffle, seed=seed)
        count = batches if shuffle == "block" or exact_batches is None else exact_batches
        return lambda number: _cold_figures(cold_pass(lambda: make(directory, sampling), directory,
                                                      [(number, batch) for batch in range(count)]))

    contenders = {f"streamload {fmt} / {shuffle}": loader_pass(directory, _streamload, shuffle)
                  for fmt, directory in (("npy", npy), ("hdf5", hdf5)) for shuffle in ("exact", "block")}
    contenders["np.load mmap gather / exact"] = loader_pass(npy, _plain, "exact")
    contenders["h5py gather / exact"] = loader_pass(hdf5, _plain, "exact")
    sample_bytes = sum(spec.sample_bytes for spec in read_manifest(npy).split("train").arrays.values())
    contenders[SEQUENTIAL] = lambda number: _cold_figures(sequential_pass(shard_files(npy), sample_bytes))
    return contenders


def cold_benchmark(npy: Path, hdf5: Path, batches: int, batch_size: int = 64, seed: int = 0, rounds: int = 1,
                   progress: Any = NullProgress(), exact_batches: int | None = None) -> Result:
    """Samples/s and storage bytes read per delivered byte of each reader, cold, in one run.

    Pass lengths are cut to one epoch of the dataset (small datasets in tests, or many batches asked).
    """
    train = read_manifest(npy).split("train")
    epoch_batches = -(-train.num_samples // batch_size)
    batches = min(batches, epoch_batches)
    exact_batches = batches if exact_batches is None else min(exact_batches, epoch_batches)
    contenders = cold_contenders(npy, hdf5, batches, batch_size, seed, exact_batches)
    results = run_rounds(contenders, rounds, progress)
    medians = {figure: summarize(results, figure)["median"] for figure in COLD_FIGURES}
    ceiling = medians["samples_per_s"][SEQUENTIAL]
    return {"npy": str(npy), "hdf5": str(hdf5), "samples": train.num_samples, "batches": batches,
            "exact_batches": exact_batches, "batch_size": batch_size,
            "dataset_bytes": sum(path.stat().st_size for path in shard_files(npy)),
            "rounds": results, "median": medians,
            "vs_sequential": {name: value / ceiling for name, value in medians["samples_per_s"].items()}}


def ensure_cold_dataset(directory: Path, fmt: str, samples: int, source: Path | None) -> Path:
    """The augmented cold dataset, built by the real CLI unless it is already there."""
    if not (directory / "manifest.json").is_file():
        command = build_command(fmt, directory, "--augment-to", str(samples), "--quiet", "--no-download",
                                source=source)
        log(f"building {directory}: {' '.join(command)}")
        subprocess.run(command, check=True)
    return directory
