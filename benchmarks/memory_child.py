"""One configuration of the memory benchmark, run in its own process: ``python -m benchmarks.memory_child``.

A fresh process per configuration is the only way to read a loader's memory honestly: the heap of
an earlier run is never given back to the kernel in full, and Keras, once imported, stays. This
process records its own RssAnon right after its imports (the baseline the table subtracts), after
loading (the in-RAM loaders' data) and at the end; the parent samples the peaks from outside.

Loaders: ``tutorial`` (the article's ``TutorialGenerator`` over the whole split as uint8 arrays, as
``mnist.load_data()`` gives it), ``ram`` (the same uint8 arrays, batched by streamload's own sampler),
``npy``/``hdf5`` (streamload reading from disk) through ``StreamingGenerator`` (api ``keras``) or the
Keras-free ``BatchLoader`` (api ``plain``).
``--cap-bytes`` sets RLIMIT_DATA first thing (only numpy and streamload's core are loaded by then);
``--mode fit`` trains a tiny model for one epoch instead of iterating. A MemoryError is reported in
the result, with exit status 3.

``run_child`` is the parent's side: it starts this module and polls the peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamload.base.procstats import PeakMemorySampler, read_memory, read_vm_data

LOADERS = ("tutorial", "ram", "npy", "hdf5")
APIS = ("keras", "plain")
MEMORY_ERROR_STATUS = 3
LOAD_CHUNK = 8192  # samples copied at a time when an in-RAM loader fills its arrays (6.4 MB of MNIST)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the repository: benchmarks/ and streamload/
Result = dict[str, Any]
Feed = tuple[int, Callable[[int], Any]]  # number of batches, batch number -> (x, y)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="memory_child", description="one configuration of benchmark_memory.py")
    parser.add_argument("--loader", choices=LOADERS, required=True)
    parser.add_argument("--api", choices=APIS, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (manifest.json)")
    parser.add_argument("--result", type=Path, required=True, help="JSON file this process writes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int, help="stop the pass after this many batches")
    parser.add_argument("--mode", choices=("pass", "fit"), default="pass")
    parser.add_argument("--cap-bytes", type=int, help="RLIMIT_DATA for this process")
    args = parser.parse_args(argv)
    if args.mode == "fit" and args.loader in ("npy", "hdf5") and args.api == "plain":
        parser.error("--mode fit needs a Keras PyDataset: use --api keras for npy and hdf5")
    return args


def snapshot() -> Result:
    """This process's memory now (the sequences child takes the same readings)."""
    memory = read_memory()
    return {"rss_anon": memory.rss_anon, "rss_file": memory.rss_file, "vm_hwm": memory.vm_hwm,
            "vm_data": read_vm_data()}


def import_modules(loader: str, api: str) -> None:
    """What the configuration needs, and nothing else: Keras only for the tutorial and api keras."""
    import numpy  # noqa: F401

    import streamload.read.loader  # noqa: F401

    if loader == "tutorial":
        import benchmarks.tutorial  # noqa: F401
    elif api == "keras":
        import streamload.adapters.generator  # noqa: F401


def whole_split(loader: Any) -> dict[str, Any]:
    """The split copied into RAM from its shards as stored (uint8 for MNIST), chunk by chunk into
    preallocated arrays: what ``mnist.load_data()`` hands the tutorial, and no second copy beside it."""
    import numpy as np

    dataset = loader.dataset
    count = len(dataset)
    x_spec, y_spec = dataset.info.arrays["x"], dataset.info.arrays["y"]
    x = np.empty((count, *x_spec.shape), dtype=x_spec.dtype)
    y = np.empty(count, dtype=y_spec.dtype)
    for start in range(0, count, LOAD_CHUNK):
        chunk = dataset.gather(np.arange(start, min(start + LOAD_CHUNK, count)))
        x[start : start + len(chunk["x"])] = chunk["x"]
        y[start : start + len(chunk["y"])] = chunk["y"]
    return {"x": x, "y": y}


def make_feed(args: argparse.Namespace) -> tuple[Feed, Any]:
    """Batches of the configuration, and the object ``model.fit`` takes (a PyDataset) in fit mode."""
    from streamload.read.loader import BatchLoader

    loader = BatchLoader(args.data, "train", batch_size=args.batch_size)
    if args.loader == "tutorial":
        from benchmarks.tutorial import TutorialGenerator

        arrays = whole_split(loader)
        generator = TutorialGenerator(arrays["x"], arrays["y"], args.batch_size, arrays["x"].shape[1:],
                                      n_classes=10, to_fit=True)  # the article's arguments
        return (len(generator), generator.__getitem__), generator
    if args.loader == "ram":
        arrays = whole_split(loader)
        feed = (loader.num_batches, lambda batch: loader.reference(arrays, 0, batch))
        return feed, (_as_py_dataset(*feed) if args.mode == "fit" else None)
    if args.api == "keras":
        from streamload.adapters.generator import StreamingGenerator

        generator = StreamingGenerator(args.data, batch_size=args.batch_size)
        return (len(generator), generator.__getitem__), generator
    return (loader.num_batches, lambda batch: loader.load(0, batch)), None


def _as_py_dataset(num_batches: int, get: Callable[[int], Any]) -> Any:
    """A Keras PyDataset over a batch function, so the in-RAM uint8 loader can feed ``fit`` too."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return num_batches

        def __getitem__(self, index: int) -> Any:
            return get(index)

    return Batches()


def run_pass(feed: Feed, max_batches: int | None) -> Result:
    """One pass; the checksums show that ram, npy and hdf5 hand out the very same batches."""
    import numpy as np

    num_batches, get = feed
    batches = num_batches if max_batches is None else min(num_batches, max_batches)
    samples, pixel_sum, label_sum = 0, 0.0, 0.0
    started = time.perf_counter()
    for batch in range(batches):
        x, y = get(batch)
        samples += len(x)
        pixel_sum += float(x.sum(dtype=np.float64))
        label_sum += float(y.argmax(axis=1).sum())
    seconds = time.perf_counter() - started
    return {"batches": batches, "samples": samples, "pass_seconds": seconds,
            "samples_per_s": samples / seconds if seconds > 0 else None,
            "checksum": {"pixels": pixel_sum, "labels": label_sum}}


def run_fit(dataset: Any, max_batches: int | None) -> Result:
    """One epoch of ``model.fit`` of a tiny softmax regression: small enough to finish, real Keras."""
    from apps.training import compile_softmax_regression

    model = compile_softmax_regression()
    steps = len(dataset) if max_batches is None else min(len(dataset), max_batches)
    started = time.perf_counter()
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    return {"batches": steps, "fit_seconds": seconds, "loss": float(history.history["loss"][-1]),
            "accuracy": float(history.history["accuracy"][-1])}


def measure(args: argparse.Namespace, result: Result) -> None:
    """Fill ``result`` phase by phase, so a MemoryError leaves everything measured before it."""
    started = time.perf_counter()
    result["phase"] = "import"
    import_modules(args.loader, args.api)
    result["import_seconds"] = time.perf_counter() - started
    result["memory"] = {"baseline": snapshot()}
    result["phase"] = "load"
    started = time.perf_counter()
    feed, dataset = make_feed(args)
    result["load_seconds"] = time.perf_counter() - started
    result["memory"]["loaded"] = snapshot()
    result["phase"] = args.mode
    if args.mode == "fit":
        result.update(run_fit(dataset, args.max_batches))
    else:
        result.update(run_pass(feed, args.max_batches))
    result["memory"]["end"] = snapshot()
    result["phase"] = "done"


def child_env() -> dict[str, str]:
    """This environment, with this checkout importable and TensorFlow's start-up chatter muted."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_child(options: list[str], interval: float, module: str = "benchmarks.memory_child") -> Result:
    """Run one configuration in a fresh process, polling its memory; the child's JSON plus the peaks.

    ``module`` is the child run with ``-m``: any that takes ``--result FILE`` and writes its readings under
    ``"memory"`` there (``benchmarks.sequences_child`` does).
    """
    from .common import run_sampled  # the parent's side only: the child keeps its imports to what it measures

    with tempfile.TemporaryDirectory() as scratch:
        result_path = Path(scratch, "result.json")
        command = [sys.executable, "-m", module, *options, "--result", str(result_path)]
        with open(Path(scratch, "log"), "w+b") as log:
            returncode, wall, sampler = run_sampled(command, interval, log, env=child_env())
            log.seek(0)
            output = log.read().decode(errors="replace")
        report = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {"returncode": returncode, "wall_seconds": wall, "child": report,
            "output_tail": output[-3000:] if returncode not in (0, MEMORY_ERROR_STATUS) else "",
            "peak": _peaks(sampler, interval, report)}


def _peaks(sampler: PeakMemorySampler | None, interval: float, report: Result) -> Result:
    """Sampled peaks, raised to any snapshot the child took itself (a spike between two polls)."""
    readings = list(report.get("memory", {}).values())
    if sampler is not None:
        peak = sampler.peak
        readings.append({"rss_anon": peak.rss_anon, "rss_file": peak.rss_file, "vm_hwm": peak.vm_hwm})
    peaks: Result = {key: max((reading[key] for reading in readings), default=0)
                     for key in ("rss_anon", "rss_file", "vm_hwm")}
    return {**peaks, "polls": 0 if sampler is None else sampler.samples, "poll_interval_s": interval}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cap_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (args.cap_bytes, args.cap_bytes))
    result: Result = {"loader": args.loader, "api": "keras" if args.loader == "tutorial" else args.api,
                      "mode": args.mode, "data": str(args.data), "batch_size": args.batch_size,
                      "rlimit_data": list(resource.getrlimit(resource.RLIMIT_DATA)), "error": None}
    status = 0
    try:
        measure(args, result)
    except MemoryError as exc:
        result["error"] = {"phase": result["phase"], "type": type(exc).__name__, "message": str(exc)}
        status = MEMORY_ERROR_STATUS
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
