"""Issues 3, 5 and 6: how fast streamload delivers batches, next to what else could deliver them.

Warm part: one full epoch of the train split per loader and round, page cache warm (every loader
runs one untimed epoch first), in interleaved rounds whose order rotates so that the drift of a
shared machine hits every loader alike; medians are reported, and every ratio divides two medians
of the same run. The in-RAM bound serves the *same* batches as the generator (same sampler indices,
normalisation and one-hot, ``BatchLoader.reference_batch``) gathered from numpy arrays in RAM, so
npy / in-RAM is exactly the cost of reading from the shards. Adding a loader is one entry in
``LOADERS``: a name and a function that sets it up and returns ``epoch -> iterable of batches``.

Fit part: ``model.fit`` epoch time of the tutorial CNN on the generator against in-RAM arrays, over
the first ``fit_samples`` samples, one untimed warm-up epoch per model (tracing), interleaved.

Cold part (``--cold``): measured by :mod:`streamload.bench.cold` (shared with issue 6): each
contender's files are evicted from the page cache before its pass, which reads a fixed number of
batches; ``read_bytes`` of ``/proc/self/io`` says what came from storage, per byte delivered (the
samples' stored bytes, uint8 image + label, not the float32 output).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..batching import BatchOptions, finish_batch
from ..build import BuildOptions, build_dataset
from ..dataset import ShardedDataset
from ..errors import StreamloadError
from ..loader import BatchLoader
from ..manifest import read_manifest
from ..mnist import mnist_sources
from ..sampler import SamplerOptions
from ..sources import ArraySource, SplitSource
from .build_bench import BUILD_SCRIPT, machine_info
from .cold import ColdResult, PlainGatherLoader, cold_pass, sequential_pass

MB = 2**20
Result = dict[str, Any]
EpochBatches = Callable[[int], Iterable[Any]]  # epoch number -> the batches of one epoch
SourcesFn = Callable[[], Mapping[str, SplitSource]]
IN_RAM, NPY, HDF5 = "in-RAM bound", "streamload npy", "streamload hdf5"
TUTORIAL, TFRECORD, TFDATA = "tutorial generator", "tf.data TFRecord", "streamload tf.data"
FIT_GENERATOR, FIT_ARRAYS = "generator", "in-RAM arrays"
SHUFFLE_BUFFER = 10_000
TFRECORD_SAMPLES_PER_FILE = 10_000
# (numerator, denominator, goal, "min" if the ratio must reach the goal, "max" if it must stay under it)
WARM_GOALS = [(NPY, IN_RAM, 0.9, "min"), (HDF5, NPY, 0.5, "min"), (NPY, TUTORIAL, 30.0, "min"),
              (HDF5, TUTORIAL, 30.0, "min"), (NPY, TFRECORD, 30.0, "min"), (HDF5, TFRECORD, 30.0, "min"),
              (TFDATA, NPY, 0.8, "min"), (TFDATA, IN_RAM, None, "min")]
FIT_GOAL = 1.03


class NullProgress:
    """Stands in for a tqdm bar when none is wanted (tests, --no-progress)."""

    def update(self, count: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...


@dataclass
class BenchData:
    """The datasets every loader reads (same samples, in the same order) and the in-RAM copy."""

    npy: Path
    hdf5: Path
    tfrecords: list[Path]
    arrays: dict[str, np.ndarray]  # the train split as stored: x uint8 images, y labels
    batch_size: int = 64
    seed: int = 0

    def sampling(self, shuffle: str = "exact") -> SamplerOptions:
        return SamplerOptions(batch_size=self.batch_size, shuffle=shuffle, seed=self.seed)


# ---------------------------------------------------------------- loaders (the registry)

def _in_ram(data: BenchData) -> EpochBatches:
    loader = BatchLoader(data.npy, "train", data.sampling(), prefetch_batches=0)  # only its sampler is used
    return lambda epoch: (loader.reference_batch(data.arrays, epoch, b) for b in range(loader.num_batches))


def _generator(fmt: str) -> Callable[[BenchData], EpochBatches]:
    def setup(data: BenchData) -> EpochBatches:
        from ..generator import StreamingGenerator

        generator = StreamingGenerator(getattr(data, fmt), "train", data.batch_size, shuffle="exact", seed=data.seed)

        def epoch_batches(epoch: int) -> Iterator[Any]:
            generator.set_epoch(epoch)
            return (generator[i] for i in range(len(generator)))

        return epoch_batches

    return setup


def _tutorial(data: BenchData) -> EpochBatches:
    from .tutorial import TutorialGenerator

    # fed the uint8 split, as the tutorial feeds ``mnist.load_data()``'s arrays
    generator = TutorialGenerator(data.arrays["x"], data.arrays["y"], batch_size=data.batch_size)

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
    from ..tfdata import loader_dataset

    loader = BatchLoader(data.npy, "train", data.sampling())
    return lambda epoch: loader_dataset(loader, epochs=1, first_epoch=epoch)


LOADERS: dict[str, Callable[[BenchData], EpochBatches]] = {
    IN_RAM: _in_ram, NPY: _generator("npy"), HDF5: _generator("hdf5"), TUTORIAL: _tutorial, TFRECORD: _tfrecord,
}
if importlib.util.find_spec("streamload.tfdata") is not None:
    LOADERS[TFDATA] = _streamload_tfdata


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


# ---------------------------------------------------------------- data

def ensure_dataset(directory: Path, fmt: str, sources: SourcesFn) -> Path:
    """Build ``directory`` in ``fmt`` from ``sources()`` unless a dataset is already there."""
    if not (directory / "manifest.json").is_file():
        build_dataset(sources(), directory, BuildOptions(format=fmt, progress=False))
    return directory


def ensure_tfrecords(folder: Path, arrays: Mapping[str, np.ndarray]) -> list[Path]:
    """TFRecord copies of ``arrays``, rewritten unless a marker says they hold exactly these samples."""
    marker = folder / "complete.json"
    expected = {"samples": int(len(arrays["y"])), "samples_per_file": TFRECORD_SAMPLES_PER_FILE}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        return sorted(folder.glob("part-*.tfrecord"))
    from .tfrecord import write_tfrecords

    chunks = ({"x": arrays["x"][i:i + 8192], "y": arrays["y"][i:i + 8192]} for i in range(0, len(arrays["y"]), 8192))
    files = write_tfrecords(chunks, folder, samples_per_file=TFRECORD_SAMPLES_PER_FILE, overwrite=True)
    marker.write_text(json.dumps(expected))
    return files


def prepare_data(root: Path, sources: SourcesFn, batch_size: int = 64, seed: int = 0) -> BenchData:
    """npy, HDF5 and TFRecord copies of the same train split under ``root`` (built once), and it in RAM."""
    npy = ensure_dataset(root / "npy", "npy", sources)
    hdf5 = ensure_dataset(root / "hdf5", "hdf5", sources)
    dataset = ShardedDataset(npy, "train")
    arrays = dataset.gather(np.arange(len(dataset)))
    hdf5_dataset = ShardedDataset(hdf5, "train")
    if len(hdf5_dataset) != len(dataset):
        raise StreamloadError(f"{hdf5} holds {len(hdf5_dataset)} train samples, {npy} holds {len(dataset)}")
    return BenchData(npy, hdf5, ensure_tfrecords(root / "tfrecord", arrays), arrays, batch_size, seed)


def check_identical_batches(data: BenchData, batches: int = 3, epoch: int = 0) -> int:
    """Refuse to time loaders that disagree: npy, HDF5 and in-RAM batches must be equal."""
    npy, hdf5 = (BatchLoader(path, "train", data.sampling()) for path in (data.npy, data.hdf5))
    count = min(batches, npy.num_batches)
    for number in range(count):
        reference = npy.reference_batch(data.arrays, epoch, number)
        for loader in (npy, hdf5):
            for got, want in zip(loader.load(epoch, number), reference):
                if not np.array_equal(got, want):
                    raise StreamloadError(f"{loader.dataset!r}: batch {number} differs from the in-RAM batch")
    return count


# ---------------------------------------------------------------- summaries

def ratio_entries(medians: Mapping[str, float], goals: Iterable[tuple[str, str, float | None, str]]) -> list[Result]:
    """Each goal's ratio of two medians of this run; goals whose loaders did not run are left out."""
    entries = []
    for numerator, denominator, goal, kind in goals:
        if numerator in medians and denominator in medians:
            value = medians[numerator] / medians[denominator]
            met = None if goal is None else (value >= goal if kind == "min" else value <= goal)
            entries.append({"numerator": numerator, "denominator": denominator, "value": value,
                            "goal": goal, "goal_kind": kind, "met": met})
    return entries


def summarize(rounds: list[Result], key: str) -> Result:
    """Median and min-max of ``key`` per contender over rounds of ``{"results": {name: figures}}``."""
    names = list(rounds[0]["results"])
    values = {name: [one["results"][name][key] for one in rounds] for name in names}
    return {"median": {name: statistics.median(v) for name, v in values.items()},
            "min_max": {name: [min(v), max(v)] for name, v in values.items()}}


def run_rounds(contenders: Mapping[str, Callable[[int], Result]], rounds: int, progress: Any) -> list[Result]:
    """Every contender once per round, the order rotating so that none always runs first."""
    names, results = list(contenders), []
    for number in range(rounds):
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        result: Result = {"order": order, "results": {}}
        for name in order:
            progress.set_postfix_str(name)
            result["results"][name] = contenders[name](number)
            progress.update()
        results.append(result)
    return results


# ---------------------------------------------------------------- warm loaders (issues 3, 5)

def warm_benchmark(data: BenchData, rounds: int, loaders: Iterable[str] | None = None,
                   progress: Any = NullProgress()) -> Result:
    """Samples/s of every loader over whole epochs, warm cache, after one untimed epoch each."""
    names = list(LOADERS) if loaders is None else list(loaders)
    checked = check_identical_batches(data)
    epochs: dict[str, EpochBatches] = {}
    for name in names:
        progress.set_postfix_str(f"{name} (warm-up)")
        epochs[name] = LOADERS[name](data)
        time_pass(epochs[name](rounds))  # epoch number outside the timed ones: warms cache, traces, maps
        progress.update()
    contenders = {name: (lambda number, name=name: time_pass(epochs[name](number))) for name in names}
    results = run_rounds(contenders, rounds, progress)
    summary, cpu = summarize(results, "samples_per_s"), summarize(results, "samples_per_cpu_s")
    return {"samples": len(data.arrays["y"]), "batch_size": data.batch_size, "identical_batches_checked": checked,
            "rounds": results, "median_samples_per_s": summary["median"], "min_max_samples_per_s": summary["min_max"],
            "median_samples_per_cpu_s": cpu["median"], "ratios": ratio_entries(summary["median"], WARM_GOALS),
            "cpu_ratios": ratio_entries(cpu["median"], WARM_GOALS)}


# ---------------------------------------------------------------- model.fit (issue 3)

def ensure_subset(folder: Path, arrays: Mapping[str, np.ndarray], samples: int) -> Path:
    """A npy dataset of the first ``samples`` samples of ``arrays`` (built once)."""
    subset = {key: np.asarray(value[:samples]) for key, value in arrays.items()}
    return ensure_dataset(folder, "npy", lambda: {"train": ArraySource(f"first {samples} samples", **subset)})


def fit_benchmark(data: BenchData, root: Path, samples: int, rounds: int, progress: Any = NullProgress()) -> Result:
    """Epoch seconds of ``model.fit`` on the generator vs on in-RAM arrays of the same samples."""
    import keras

    from ..generator import StreamingGenerator
    from ..training import compile_tutorial_cnn

    samples = min(samples, len(data.arrays["y"]))
    subset = ensure_subset(root / f"fit-npy-{samples}", data.arrays, samples)
    generator = StreamingGenerator(subset, "train", data.batch_size, shuffle="exact", seed=data.seed)
    x, y = finish_batch({key: value[:samples] for key, value in data.arrays.items()}, BatchOptions())
    clock: dict[str, float] = {}  # wall and CPU seconds at the last epoch's start, then its duration
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(wall=time.perf_counter(), cpu=time.process_time()),
        on_epoch_end=lambda epoch, logs: clock.update(wall=time.perf_counter() - clock["wall"],
                                                      cpu=time.process_time() - clock["cpu"]))
    fits = {FIT_GENERATOR: lambda model: model.fit(generator, epochs=1, shuffle=False, verbose=0, callbacks=[timer]),
            FIT_ARRAYS: lambda model: model.fit(x, y, batch_size=data.batch_size, epochs=1, shuffle=True, verbose=0,
                                                callbacks=[timer])}
    keras.utils.set_random_seed(data.seed)
    models = {name: compile_tutorial_cnn() for name in fits}

    def timed_fit(name: str) -> Result:
        started = time.perf_counter()
        history = fits[name](models[name])
        return {"epoch_seconds": clock["wall"], "epoch_cpu_seconds": clock["cpu"],
                "fit_call_seconds": time.perf_counter() - started, "loss": float(history.history["loss"][-1])}

    warmup = {}
    for name in fits:
        progress.set_postfix_str(f"fit {name} (warm-up)")
        warmup[name] = timed_fit(name)
        progress.update()
    results = run_rounds({name: (lambda number, name=name: timed_fit(name)) for name in fits}, rounds, progress)
    summary, cpu = summarize(results, "epoch_seconds"), summarize(results, "epoch_cpu_seconds")
    goals = [(FIT_GENERATOR, FIT_ARRAYS, FIT_GOAL, "max")]
    return {"samples": samples, "batch_size": data.batch_size, "steps_per_epoch": len(generator), "warmup": warmup,
            "rounds": results, "median_epoch_seconds": summary["median"], "min_max_epoch_seconds": summary["min_max"],
            "median_epoch_cpu_seconds": cpu["median"],
            "median_fit_call_seconds": summarize(results, "fit_call_seconds")["median"],
            "ratios": ratio_entries(summary["median"], goals), "cpu_ratios": ratio_entries(cpu["median"], goals)}


# ---------------------------------------------------------------- cold cache (issue 6)

def _cold_figures(result: ColdResult) -> Result:
    return {"samples": result.samples, "seconds": result.seconds, "samples_per_s": result.samples_per_s,
            "delivered_bytes": result.delivered_bytes, "read_bytes": result.read_bytes,
            "read_per_delivered": result.amplification,
            "delivered_mb_per_s": result.delivered_bytes / MB / result.seconds,
            "read_mb_per_s": result.read_bytes / MB / result.seconds}


def shard_files(directory: Path) -> list[Path]:
    """Every train shard file of a dataset, in shard order."""
    train = read_manifest(directory).split("train")
    return [directory / file.name for shard in train.shards for file in shard.files.values()]


SEQUENTIAL = "sequential read / -"


def cold_contenders(npy: Path, hdf5: Path, batches: int, batch_size: int, seed: int,
                    exact_batches: int | None = None) -> dict[str, Callable[[int], Result]]:
    """Name (``reader / shuffle``) -> one cold pass (``bench.cold``) of round ``number``, the epoch it reads.

    Exact-order passes read ``exact_batches`` (default ``batches``): kept short next to the file, they
    see what a dataset larger than RAM sees, where pages read ahead are evicted before a later batch
    could use them. A long pass over a file that fits in the page cache lets kernel readahead pull in
    the whole file and then serve later batches from it, which no out-of-RAM epoch can count on.
    """
    def loader_pass(directory: Path, make: Callable[[SamplerOptions], Any], shuffle: str) -> Callable[[int], Result]:
        sampling = SamplerOptions(batch_size=batch_size, shuffle=shuffle, seed=seed)
        count = batches if shuffle == "block" or exact_batches is None else exact_batches
        return lambda number: _cold_figures(cold_pass(lambda: make(directory, sampling), directory,
                                                      [(number, batch) for batch in range(count)]))

    def streamload(directory: Path, sampling: SamplerOptions) -> BatchLoader:
        return BatchLoader(directory, "train", sampling)

    def plain(directory: Path, sampling: SamplerOptions) -> PlainGatherLoader:
        return PlainGatherLoader(directory, "train", sampling)

    contenders = {f"streamload {fmt} / {shuffle}": loader_pass(directory, streamload, shuffle)
                  for fmt, directory in (("npy", npy), ("hdf5", hdf5)) for shuffle in ("exact", "block")}
    contenders["np.load mmap gather / exact"] = loader_pass(npy, plain, "exact")
    contenders["h5py gather / exact"] = loader_pass(hdf5, plain, "exact")
    sample_bytes = sum(spec.sample_bytes for spec in read_manifest(npy).split("train").arrays.values())
    contenders[SEQUENTIAL] = lambda number: _cold_figures(sequential_pass(shard_files(npy), sample_bytes))
    return contenders


COLD_FIGURES = ("samples_per_s", "read_per_delivered", "delivered_mb_per_s", "read_mb_per_s", "read_bytes", "seconds")


def cold_benchmark(npy: Path, hdf5: Path, batches: int, batch_size: int = 64, seed: int = 0, rounds: int = 1,
                   progress: Any = NullProgress(), exact_batches: int | None = None) -> Result:
    """Samples/s and storage bytes read per delivered byte of each reader, cold, in one run."""
    contenders = cold_contenders(npy, hdf5, batches, batch_size, seed, exact_batches)
    results = run_rounds(contenders, rounds, progress)
    medians = {figure: summarize(results, figure)["median"] for figure in COLD_FIGURES}
    ceiling = medians["samples_per_s"][SEQUENTIAL]
    train = read_manifest(npy).split("train")
    return {"npy": str(npy), "hdf5": str(hdf5), "samples": train.num_samples, "batches": batches,
            "exact_batches": batches if exact_batches is None else exact_batches, "batch_size": batch_size,
            "dataset_bytes": sum(path.stat().st_size for path in shard_files(npy)),
            "rounds": results, "median": medians,
            "vs_sequential": {name: value / ceiling for name, value in medians["samples_per_s"].items()}}


COLD_CONTENDERS = 7  # four streamload passes, two plain gathers, one sequential read


def ensure_cold_dataset(directory: Path, fmt: str, samples: int, source: Path | None) -> Path:
    """The augmented cold dataset, built by the real CLI unless it is already there."""
    if not (directory / "manifest.json").is_file():
        command = [sys.executable, str(BUILD_SCRIPT), "--format", fmt, "--out", str(directory),
                   "--augment-to", str(samples), "--quiet", "--no-download"]
        if source is not None:
            command += ["--source", str(source)]
        log(f"building {directory}: {' '.join(command)}")
        subprocess.run(command, check=True)
    return directory


# ---------------------------------------------------------------- report

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ratio_cell(medians: Mapping[str, float], name: str, baseline: str) -> str:
    return f"{medians[name] / medians[baseline]:.2f}x" if baseline in medians else ""


def _met(entry: Result) -> str:
    return "" if entry["met"] is None else ("yes" if entry["met"] else "**no**")


def goals_table(ratios: list[Result], cpu_ratios: list[Result]) -> list[str]:
    """Each goal by wall-clock figures (the goal) and by CPU-time figures (robust to a busy machine)."""
    lines = ["| ratio | wall clock | goal | met | by CPU time | met |", "|---|---:|---:|---|---:|---|"]
    for entry, cpu in zip(ratios, cpu_ratios):
        goal = "" if entry["goal"] is None else f"{'>=' if entry['goal_kind'] == 'min' else '<='} {entry['goal']:g}x"
        lines.append(f"| {entry['numerator']} / {entry['denominator']} | {entry['value']:.2f}x | {goal} "
                     f"| {_met(entry)} "
                     f"| {cpu['value']:.2f}x | {_met(cpu)} |")
    return lines


def warm_table(part: Result) -> list[str]:
    medians, spread = part["median_samples_per_s"], part["min_max_samples_per_s"]
    lines = [f"### Loaders, warm page cache: {part['samples']:,} train samples, batch {part['batch_size']}, one "
             f"epoch per loader and round, median of {len(part['rounds'])} interleaved rounds", "",
             "| loader | consumed by | samples/s | min-max | vs in-RAM bound | vs streamload npy "
             "| samples per CPU s |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, median in medians.items():
        low, high = spread[name]
        consumer = part["rounds"][0]["results"][name]["consumer"]
        lines.append(f"| {name} | {consumer} | {_rate(median)} | {_rate(low)}-{_rate(high)} "
                     f"| {_ratio_cell(medians, name, IN_RAM)} | {_ratio_cell(medians, name, NPY)} "
                     f"| {_rate(part['median_samples_per_cpu_s'][name])} |")
    return lines + [""] + goals_table(part["ratios"], part["cpu_ratios"])


def fit_table(part: Result) -> list[str]:
    medians, spread = part["median_epoch_seconds"], part["min_max_epoch_seconds"]
    calls = part["median_fit_call_seconds"]
    lines = [f"### `model.fit`, tutorial CNN: first {part['samples']:,} samples, batch {part['batch_size']} "
             f"({part['steps_per_epoch']} steps), median of {len(part['rounds'])} interleaved epochs after one "
             "warm-up epoch each", "",
             "| data | epoch s | min-max | vs in-RAM arrays | epoch CPU s | whole fit() call s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, median in medians.items():
        low, high = spread[name]
        lines.append(f"| {name} | {median:.2f} | {low:.2f}-{high:.2f} | {_ratio_cell(medians, name, FIT_ARRAYS)} "
                     f"| {part['median_epoch_cpu_seconds'][name]:.2f} | {calls[name]:.2f} |")
    return lines + [""] + goals_table(part["ratios"], part["cpu_ratios"])


def cold_table(part: Result) -> list[str]:
    median = part["median"]
    lines = [f"### Cold page cache: batches of {part['batch_size']} from {part['samples']:,} samples "
             f"({part['dataset_bytes'] / MB:,.0f} MB), evicted before each pass; passes of "
             f"{part.get('exact_batches', part['batches']):,} batches in exact order, {part['batches']:,} in block "
             f"order; median of {len(part['rounds'])} round(s)", "",
             "| reader / shuffle | samples/s | delivered MB/s | storage MB read | read bytes per delivered byte "
             "| vs sequential |", "|---|---:|---:|---:|---:|---:|"]
    for name, rate in median["samples_per_s"].items():
        lines.append(f"| {name} | {_rate(rate)} | {median['delivered_mb_per_s'][name]:,.1f} "
                     f"| {median['read_bytes'][name] / MB:,.0f} | {median['read_per_delivered'][name]:.2f} "
                     f"| {part['vs_sequential'][name]:.3f}x |")
    return lines


def markdown(results: Result) -> str:
    machine = results["machine"]
    lines = [f"{machine['usable_cpus']} CPUs ({machine['cpu_model']}), {machine['total_ram_bytes'] / 2**30:.0f} GiB "
             f"RAM, {machine['workdir_mount']['fstype']} on {machine['workdir_mount']['device']}; load average "
             f"{machine['loadavg_start'][0]:.1f} at start, {machine['loadavg_end'][0]:.1f} at end (a shared machine: "
             "compare ratios within this run); MB = 2^20 bytes", ""]
    for key, table in (("warm", warm_table), ("fit", fit_table), ("cold", cold_table)):
        if key in results:
            lines += table(results[key]) + [""]
    return "\n".join(lines)


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
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    counts = ("rounds", "batch_size", "fit_samples", "fit_rounds", "cold_samples", "cold_batches", "cold_exact_batches",
              "cold_rounds")
    if any(getattr(args, name) < 1 for name in counts):
        parser.error("--rounds, --batch-size, --fit-*, --cold-samples, --cold-batches, --cold-rounds must be positive")
    return args


def machine(root: Path) -> Result:
    import keras
    import tensorflow as tf

    return {**machine_info(root), "tensorflow": tf.__version__, "keras": keras.__version__,
            "loadavg_start": list(os.getloadavg())}


def run(args: argparse.Namespace) -> Result:
    root = args.data.absolute()
    root.mkdir(parents=True, exist_ok=True)
    results: Result = {"machine": machine(root), "options": {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}}
    if not (args.skip_warm and args.skip_fit):
        log(f"preparing {root} (built once)")
        data = prepare_data(root, lambda: mnist_sources(args.source, download=False), args.batch_size, args.seed)
    total = ((0 if args.skip_warm else len(LOADERS) * (args.rounds + 1))
             + (0 if args.skip_fit else 2 * (args.fit_rounds + 1))
             + (COLD_CONTENDERS * args.cold_rounds if args.cold else 0))
    with tqdm(total=total, unit="pass", file=sys.stderr, disable=args.no_progress) as progress:
        if not args.skip_warm:
            results["warm"] = warm_benchmark(data, args.rounds, progress=progress)
        if not args.skip_fit:
            results["fit"] = fit_benchmark(data, root, args.fit_samples, args.fit_rounds, progress)
        if args.cold:
            npy = ensure_cold_dataset(args.cold_npy.absolute(), "npy", args.cold_samples, args.source)
            hdf5 = ensure_cold_dataset(args.cold_hdf5.absolute(), "hdf5", args.cold_samples, args.source)
            results["cold"] = cold_benchmark(npy, hdf5, args.cold_batches, args.batch_size, args.seed,
                                             args.cold_rounds, progress, args.cold_exact_batches)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (StreamloadError, subprocess.CalledProcessError) as exc:
        print(f"benchmark_loaders.py: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
