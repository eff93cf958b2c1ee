"""How fast streamload delivers batches, next to what else could deliver them.

Warm part: one full epoch of the train split per loader and round, page cache warm (every loader
runs one untimed epoch first), in interleaved rounds whose order rotates so that the drift of a
shared machine hits every loader alike (:mod:`benchmarks.rounds`); medians are reported, and
every ratio divides two medians of the same run. The bound is an independent in-RAM loop, written
as anyone would without streamload (a permutation, a numpy gather, the same normalising and
one-hot); a second row serves streamload's very batches from RAM (its sampler, ``BatchLoader.reference``).
Adding a loader is one entry in ``LOADERS``: a name and a function that sets it up and returns
``epoch -> iterable of batches``.

Fit part (``model.fit`` epoch time): :mod:`benchmarks.loaders_fit`; cold part (``--cold``):
:mod:`benchmarks.loaders_cold`. The data every part reads is made by
:mod:`benchmarks.loaders_data`, the Markdown by :mod:`benchmarks.loaders_report`; this
module is the command line and re-exports their names, so ``loaders_bench`` is the whole benchmark.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamload.errors import StreamloadError
from streamload.options import DEFAULT_PREFETCH_BATCHES
from streamload.read.loader import BatchLoader
from streamload.write.sources.mnist import mnist_sources

from .cgroups import CgroupUnavailableError
from .common import MB, emit, fail, log, machine_info, options_of
from .loaders_cold import (
    COLD_CONTENDERS,
    SEQUENTIAL,
    capped_cold_benchmark,
    cold_benchmark,
    ensure_cold_dataset,
)
from .loaders_data import BenchData, SourcesFn, check_identical_batches, ensure_dataset, prepare_data
from .loaders_fit import FIT_GOAL, fit_benchmark
from .loaders_integrity import integrity_benchmark
from .loaders_peers import PEERS, check_same_samples, installed
from .loaders_report import (
    FIT_ARRAYS,
    FIT_GENERATOR,
    HDF5,
    IN_RAM,
    IN_RAM_SAME,
    LOADER,
    NPY,
    NPY_UNHINTED,
    TFDATA,
    TFRECORD,
    TUTORIAL,
    cold_table,
    fit_table,
    markdown,
    warm_table,
)
from .rounds import Goal, NullProgress, goal_summary, ratio_entries, run_rounds, summarize, warm_up

__all__ = ["COLD_CONTENDERS", "FIT_ARRAYS", "FIT_GENERATOR", "FIT_GOAL", "HDF5", "IN_RAM", "LOADERS", "NPY",
           "SEQUENTIAL", "TFDATA", "TFRECORD", "TUTORIAL", "BenchData", "NullProgress", "SourcesFn",
           "check_identical_batches", "cold_benchmark", "cold_table", "ensure_dataset", "fit_benchmark", "fit_table",
           "main", "parse_args", "prepare_data", "ratio_entries", "run_rounds", "summarize", "time_pass",
           "warm_benchmark", "warm_table"]

Result = dict[str, Any]
EpochBatches = Callable[[int], Iterable[Any]]  # epoch number -> the batches of one epoch
SHUFFLE_BUFFER = 10_000
WARM_GOALS: list[Goal] = [(NPY, IN_RAM, 0.9, "min"), (LOADER, IN_RAM, 1.0, "min"), (HDF5, NPY, 0.5, "min"),
                          (NPY, NPY_UNHINTED, 0.97, "min"), (NPY, IN_RAM_SAME, None, "min"),
                          (NPY, TUTORIAL, None, "min"), (NPY, TFRECORD, None, "min"), (TFDATA, NPY, None, "min"),
                          *((NPY, peer, None, "min") for peer in PEERS)]


def _in_ram_loop(data: BenchData) -> EpochBatches:
    """The independent bound: what anyone would write with the split in RAM, no streamload code at all.

    A fresh ``np.random.permutation`` per epoch, a numpy gather of each batch, and the same
    normalising and one-hot as streamload (``* float32(1/255)``, a channel axis, an identity-matrix row).
    """
    x, y = data.arrays["x"], data.arrays["y"]
    scale, eye, size = np.float32(1 / 255), np.eye(int(y.max()) + 1, dtype=np.float32), data.batch_size

    def epoch_batches(epoch: int) -> Iterator[Any]:
        order = np.random.default_rng((data.seed, epoch)).permutation(len(y))
        for start in range(0, len(y), size):
            rows = order[start:start + size]
            images = x[rows].astype(np.float32)
            images *= scale
            yield images[..., np.newaxis], eye[y[rows]]

    return epoch_batches


def _in_ram_same_batches(data: BenchData) -> EpochBatches:
    """streamload's very batches (its sampler and finishing) gathered from the arrays in RAM."""
    loader = BatchLoader(data.npy, "train", data.options(prefetch_batches=0))
    return lambda epoch: (loader.reference(data.arrays, epoch, b) for b in range(loader.num_batches))


def _loader(data: BenchData) -> EpochBatches:
    """The Keras-free BatchLoader with its defaults."""
    loader = BatchLoader(data.npy, "train", data.options())
    return lambda epoch: (loader.load(epoch, b) for b in range(loader.num_batches))


def _generator(fmt: str, **overrides: Any) -> Callable[[BenchData], EpochBatches]:
    def setup(data: BenchData) -> EpochBatches:
        from streamload.adapters.generator import StreamingGenerator

        generator = StreamingGenerator(getattr(data, fmt), "train", options=data.options(**overrides))

        def epoch_batches(epoch: int) -> Iterator[Any]:
            generator.set_epoch(epoch)
            return (generator[i] for i in range(len(generator)))

        return epoch_batches

    return setup


def _tutorial(data: BenchData) -> EpochBatches:
    from .tutorial import TutorialGenerator

    # fed the uint8 split, as the tutorial feeds ``mnist.load_data()``'s arrays
    x, y = data.arrays["x"], data.arrays["y"]
    generator = TutorialGenerator(x, y, data.batch_size, x.shape[1:], n_classes=10, to_fit=True)

    def epoch_batches(epoch: int) -> Iterator[Any]:
        np.random.seed(data.seed + epoch)  # the tutorial shuffles with the global RNG
        generator.on_epoch_end()  # what Keras calls between epochs
        return (generator[i] for i in range(len(generator)))

    return epoch_batches


def _tfrecord(data: BenchData) -> EpochBatches:
    from .tfrecord import tfrecord_dataset

    dataset = tfrecord_dataset(data.tfrecords, batch_size=data.batch_size, shuffle_buffer=SHUFFLE_BUFFER,
                               seed=data.seed)
    return lambda epoch: dataset


def _streamload_tfdata(data: BenchData) -> EpochBatches:
    """``as_tf_dataset``'s pipeline over one loader made once, as ``fit(epochs=E)`` would use it."""
    from streamload.adapters.tfdata import loader_dataset

    loader = BatchLoader(data.npy, "train", data.options())
    return lambda epoch: loader_dataset(loader, epochs=1, first_epoch=epoch)


LOADERS: dict[str, Callable[[BenchData], EpochBatches]] = {
    IN_RAM: _in_ram_loop, IN_RAM_SAME: _in_ram_same_batches, LOADER: _loader, NPY: _generator("npy"),
    NPY_UNHINTED: _generator("npy", prefetch_batches=0), HDF5: _generator("hdf5"), TUTORIAL: _tutorial,
    TFRECORD: _tfrecord, TFDATA: _streamload_tfdata,
    # the peers (issue 19 §4), each through its own API (benchmarks/loaders_peers.py), where installed
    **{name: setup for name, setup in PEERS.items() if installed(name)},
}


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: ``x`` or ``(x, y)``, numpy arrays or tensors."""
    x = batch[0] if isinstance(batch, tuple) else batch
    return int(x.shape[0])


def _count_in_graph(dataset: Any) -> int:
    """Samples of a tf.data pipeline, consumed inside TensorFlow as ``fit`` consumes it.

    Iterating in eager Python adds about 100 us per batch that ``fit`` never pays, which would make
    a tf.data pipeline look several times slower than it is.
    """
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def add(count: Any, batch: Any) -> Any:
        x = batch[0] if isinstance(batch, tuple) else batch
        return count + tf.cast(tf.shape(x)[0], tf.int64)

    return int(dataset.reduce(np.int64(0), add))


def time_pass(batches: Iterable[Any]) -> Result:
    """Consume one pass of batches; samples/s counts what was delivered, setup excluded by the caller.

    Python iterables are consumed by a Python loop (as Keras consumes a PyDataset), tf.data datasets
    inside TensorFlow (as ``fit`` consumes them). CPU seconds (all threads of this process) do not
    grow when other processes compete for the cores, so samples per CPU second stays comparable on
    a busy machine; it measures efficiency, not the parallel throughput of tf.data's threads.
    """
    in_graph = hasattr(batches, "reduce") and hasattr(batches, "element_spec")
    started, started_cpu = time.perf_counter(), time.process_time()
    if in_graph:
        samples = _count_in_graph(batches)
    else:
        samples = sum(batch_size_of(batch) for batch in batches)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds, "cpu_seconds": cpu_seconds,
            "samples_per_cpu_s": samples / cpu_seconds, "consumer": "tf.data reduce" if in_graph else "python loop"}


# ---------------------------------------------------------------- warm loaders (issues 3, 5)

def warm_benchmark(data: BenchData, rounds: int, loaders: Iterable[str] | None = None,
                   progress: Any = NullProgress()) -> Result:
    """Samples/s of every loader over whole epochs, warm cache, after one untimed epoch each."""
    names = list(LOADERS) if loaders is None else list(loaders)
    checked = check_identical_batches(data)
    epochs: dict[str, EpochBatches] = {}

    def set_up(name: str) -> Result:
        epochs[name] = LOADERS[name](data)
        if name in PEERS:  # a peer's untimed epoch is its check: every sample of the split once, as stored
            return {"samples": check_same_samples(name, data, epochs[name](rounds))}
        return time_pass(epochs[name](rounds))  # epoch number outside the timed ones: warms cache, traces, maps

    warm_up({name: (lambda name=name: set_up(name)) for name in names}, progress)
    contenders = {name: (lambda number, name=name: time_pass(epochs[name](number))) for name in names}
    results = run_rounds(contenders, rounds, progress)
    return {"samples": len(data.arrays["y"]), "batch_size": data.batch_size, "identical_batches_checked": checked,
            "peers_checked_same_samples": [name for name in names if name in PEERS], "rounds": results,
            **goal_summary(results, "samples_per_s", "samples_per_cpu_s", WARM_GOALS)}


# ---------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_loaders.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/bench-loaders"),
                        help="folder of the npy/, hdf5/ and tfrecord/ copies of MNIST, built if missing "
                             "(default: data/bench-loaders)")
    parser.add_argument("--source", type=Path, help="MNIST folder or mnist.npz (default: $STREAMLOAD_MNIST_DIR)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the warm part (default: 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default: 0)")
    parser.add_argument("--skip-warm", action="store_true", help="skip the warm samples/s part")
    parser.add_argument("--skip-fit", action="store_true", help="skip the model.fit part")
    parser.add_argument("--fit-samples", type=int, default=12_800, help="samples per fit epoch (default: 12800)")
    parser.add_argument("--fit-rounds", type=int, default=3, help="timed fit epochs per data source (default: 3)")
    parser.add_argument("--cold", action="store_true", help="add the cold page cache part (issue 6)")
    parser.add_argument("--cold-npy", type=Path, default=Path("data/cold-npy"),
                        help="npy dataset of the cold part, built with --cold-samples if missing")
    parser.add_argument("--cold-hdf5", type=Path, default=Path("data/cold-hdf5"), help="its HDF5 twin")
    parser.add_argument("--cold-samples", type=int, default=2_000_000,
                        help="--augment-to of a cold dataset that has to be built (default: 2000000)")
    parser.add_argument("--cold-batches", type=int, default=16000,
                        help="batches per cold pass in block order: half an epoch of the 2M set (default: 16000)")
    parser.add_argument("--cold-exact-batches", type=int, default=250,
                        help="batches per cold pass in exact order: short, as out of RAM (default: 250)")
    parser.add_argument("--cold-rounds", type=int, default=3, help="cold passes per reader (default: 3)")
    parser.add_argument("--cold-prefetch", type=int, nargs="+", default=[DEFAULT_PREFETCH_BATCHES], metavar="N",
                        help="streamload's prefetch_batches in the cold part, one row each; 0 = hints off "
                             f"(default: {DEFAULT_PREFETCH_BATCHES})")
    parser.add_argument("--cold-full-epochs", action="store_true",
                        help="streamload's cold passes read whole epochs, the ceiling whole files (use with "
                             "--cold-cap-mb, or a dataset larger than RAM)")
    parser.add_argument("--cold-cap-mb", type=int, metavar="MB",
                        help="run the cold part in a child whose memory cgroup (heap + page cache) is capped at MB, "
                             "below the files' size; needs a writable cgroup")
    parser.add_argument("--cold-formats", nargs="+", choices=("npy", "hdf5"), default=["npy", "hdf5"],
                        help="shard formats of the cold part (default: npy hdf5)")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    counts = ("rounds", "batch_size", "fit_samples", "fit_rounds", "cold_samples", "cold_batches", "cold_exact_batches",
              "cold_rounds")
    if any(getattr(args, name) < 1 for name in counts) or (args.cold_cap_mb is not None and args.cold_cap_mb < 1):
        parser.error("--rounds, --batch-size, --fit-*, --cold-samples, --cold-batches, --cold-rounds, --cold-cap-mb "
                     "must be positive")
    if min(args.cold_prefetch) < 0:
        parser.error("--cold-prefetch takes batch counts of 0 or more")
    if "npy" not in args.cold_formats:
        parser.error("--cold-formats must include npy (the plain gather and the ceiling read it)")
    return args


def cold_contender_count(args: argparse.Namespace) -> int:
    """Passes of one cold round: streamload per format, order and depth, the plain gathers, the ceiling."""
    formats = len(set(args.cold_formats))
    return formats * 2 * len(set(args.cold_prefetch)) + formats + 1


def _inner_cold_argv(args: argparse.Namespace, npy: Path, hdf5: Path) -> list[str]:
    """This command's cold options for the child that runs them in a capped cgroup."""
    argv = ["--cold", "--skip-warm", "--skip-fit", "--data", str(args.data.absolute()), "--cold-npy", str(npy),
            "--cold-hdf5", str(hdf5), "--cold-formats", *args.cold_formats, "--batch-size", str(args.batch_size),
            "--seed", str(args.seed), "--cold-batches", str(args.cold_batches), "--cold-exact-batches",
            str(args.cold_exact_batches), "--cold-rounds", str(args.cold_rounds), "--cold-prefetch",
            *map(str, args.cold_prefetch)]
    return argv + ["--cold-full-epochs"] * args.cold_full_epochs + ["--no-progress"] * args.no_progress


def run_cold(args: argparse.Namespace, progress: Any) -> Result:
    """The cold part here, or in a child inside a memory cgroup when ``--cold-cap-mb`` is given."""
    npy = ensure_cold_dataset(args.cold_npy.absolute(), "npy", args.cold_samples, args.source)
    hdf5 = ensure_cold_dataset(args.cold_hdf5.absolute(), "hdf5", args.cold_samples, args.source) \
        if "hdf5" in args.cold_formats else None
    if args.cold_cap_mb is not None:
        part = capped_cold_benchmark(_inner_cold_argv(args, npy, args.cold_hdf5.absolute()), args.cold_cap_mb * MB)
        progress.update(cold_contender_count(args) * args.cold_rounds)
        return part
    prefetch = list(dict.fromkeys(args.cold_prefetch))
    return cold_benchmark(npy, hdf5, args.cold_batches, args.batch_size, args.seed, args.cold_rounds, progress,
                          args.cold_exact_batches, prefetch, args.cold_full_epochs)


def machine(root: Path, with_keras: bool = True) -> Result:
    """The machine and versions; Keras' and TensorFlow's only when a part uses them (the cold part alone runs
    without them, so that a capped cgroup holds its page cache, not TensorFlow's ~300 MB of heap)."""
    found = {**machine_info(root), "loadavg_start": list(os.getloadavg())}
    if with_keras:
        import keras
        import tensorflow as tf

        found.update(tensorflow=tf.__version__, keras=keras.__version__)
    return found


def _passes(args: argparse.Namespace) -> int:
    """Passes the progress bar counts: warm-up and timed, of every part that runs."""
    return ((0 if args.skip_warm else (len(LOADERS) + 2) * (args.rounds + 1))
            + (0 if args.skip_fit else 2 * (args.fit_rounds + 1))
            + (cold_contender_count(args) * args.cold_rounds if args.cold else 0))


def run(args: argparse.Namespace) -> Result:
    root = args.data.absolute()
    root.mkdir(parents=True, exist_ok=True)
    results: Result = {"machine": machine(root, not (args.skip_warm and args.skip_fit)), "options": options_of(args)}
    if not (args.skip_warm and args.skip_fit):
        log(f"preparing {root} (built once)")
        data = prepare_data(root, lambda: mnist_sources(args.source, download=False), args.batch_size, args.seed)
    with tqdm(total=_passes(args), unit="pass", file=sys.stderr, disable=args.no_progress) as progress:
        if not args.skip_warm:
            results["warm"] = warm_benchmark(data, args.rounds, progress=progress)
            results["integrity"] = integrity_benchmark(data, args.rounds, progress=progress)
        if not args.skip_fit:
            results["fit"] = fit_benchmark(data, root, args.fit_samples, args.fit_rounds, progress)
        if args.cold:
            results["cold"] = run_cold(args, progress)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (StreamloadError, subprocess.CalledProcessError, CgroupUnavailableError) as exc:
        return fail("benchmark_loaders.py", exc)
    emit(results, markdown(results), args.json)
    return 0
