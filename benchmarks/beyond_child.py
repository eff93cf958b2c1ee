"""One measured process of the bigger-than-RAM benchmark: ``python -m benchmarks.beyond_child train|tutorial``.

``train``: one epoch (or ``--max-seconds`` of one) of ``model.fit`` on a ``StreamingGenerator``,
a softmax regression that takes the stored uint8 images and rescales them itself, so the data path
hands Keras the bytes as stored. Each batch served adds its samples to an 8-byte counter file that
the parent reads every second (samples/s over the epoch), and marks its batch number, so the
samples trained are counted, not computed. ``read_bytes`` of this process (every thread, Keras'
data thread and the hinting thread included) is taken just before and after ``fit``.

``load``: the data path alone (``BatchLoader``, no Keras), with the same counter: what the loader
can deliver here. ``fit-ram``: the model's own speed: the same ``fit`` on the first samples held in
RAM (uint8 arrays). The three say whether a pass is bound by storage, the loader or the model.

``tutorial``: the tutorial's design on the same data: RLIMIT_DATA is set first thing (nothing of
this process can then grow past it, so the machine never meets the OOM killer), then the whole
uint8 train split is allocated and filled as ``mnist.load_data()`` hands it to the tutorial's
generator. On a dataset larger than the limit that allocation raises MemoryError, reported with
exit status 3; where it fits, the tutorial's generator trains for ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import read_io, read_memory, read_vm_data

MEMORY_ERROR_STATUS = 3
COUNTER_BYTES = 8
RAM_CHUNK = 65_536  # samples copied at a time into the in-RAM arrays of fit-ram
Result = dict[str, Any]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="beyond_child", description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("train", "load", "fit-ram", "tutorial"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True, help="JSON file this process writes")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shuffle", choices=("exact", "block"), default="block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefetch-batches", type=int, help="streamload's read hints (default: its default)")
    parser.add_argument("--max-seconds", type=float, help="stop training after this many seconds (a bounded pass)")
    parser.add_argument("--counter", type=Path, help="8-byte file: samples served so far (train)")
    parser.add_argument("--cap-bytes", type=int, help="RLIMIT_DATA, set first thing (tutorial)")
    parser.add_argument("--workers", type=int, default=1, help="PyDataset workers (threads) feeding fit")
    parser.add_argument("--ram-samples", type=int, default=1_000_000, help="samples held in RAM (fit-ram)")
    return parser.parse_args(argv)


def snapshot() -> Result:
    memory = read_memory()
    return {"rss_anon": memory.rss_anon, "rss_file": memory.rss_file, "vm_hwm": memory.vm_hwm,
            "vm_data": read_vm_data()}


def softmax_regression(num_classes: int) -> Any:
    """uint8 28x28 images in, Rescaling(1/255) in the graph, one dense softmax layer, sparse labels."""
    import keras

    model = keras.Sequential([keras.Input((28, 28), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")],
                             name="softmax_regression_uint8")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


SETTLE_STEPS = 10  # steps left out of the steady rate: tracing and compiling happen in the first ones


def stop_after(seconds: float | None, steps: list[int], marks: list[float] | None = None) -> Any:
    """A callback that counts the steps trained, notes when step ``SETTLE_STEPS`` and the last one ended
    (``marks``) and, given ``seconds``, stops ``fit`` once they are spent."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            steps[0] += 1
            now = time.perf_counter()
            if marks is not None:
                marks[:] = [marks[0] if steps[0] > SETTLE_STEPS else now, now] if marks else [now, now]
            if seconds is not None and now - self.started >= seconds:
                self.model.stop_training = True

    return StopAfter()


def steady_rate(marks: list[float], steps: int, batch_size: int) -> float | None:
    """Samples/s between the end of step SETTLE_STEPS and the end of the last full step."""
    if len(marks) < 2 or steps <= SETTLE_STEPS + 1 or marks[1] <= marks[0]:
        return None
    return (steps - SETTLE_STEPS - 1) * batch_size / (marks[1] - marks[0])


def counting_generator(args: argparse.Namespace, counter: np.ndarray) -> Any:
    """A StreamingGenerator that counts what it serves: the live counter, and each batch number's size."""
    from streamload.adapters.generator import StreamingGenerator

    options = {} if args.prefetch_batches is None else {"prefetch_batches": args.prefetch_batches}

    class Counting(StreamingGenerator):
        def __getitem__(self, index: int) -> Any:
            batch = super().__getitem__(index)
            served = len(batch[0])
            self.served[index] = served
            counter[0] += served
            return batch

    generator = Counting(args.data, batch_size=args.batch_size, shuffle=args.shuffle, seed=args.seed,
                         normalize=False, one_hot=False, channel_axis=False, workers=args.workers, **options)
    generator.served = np.zeros(len(generator), dtype=np.int64)
    return generator


def train(args: argparse.Namespace, result: Result) -> None:
    counter = _counter(args.counter)
    generator = counting_generator(args, counter)
    model = softmax_regression(generator.loader.finish.num_classes or 10)
    result["memory"]["ready"] = snapshot()
    result.update(batches_per_epoch=len(generator), options=repr(generator.options), phase="fit")
    steps, marks = [0], []
    before, started = read_io().read_bytes, time.perf_counter()
    history = model.fit(generator, epochs=1, shuffle=False, verbose=0,
                        callbacks=[stop_after(args.max_seconds, steps, marks)])
    seconds, read_bytes = time.perf_counter() - started, read_io().read_bytes - before
    served = generator.served
    result.update(fit_seconds=seconds, read_bytes=read_bytes, steps=steps[0],
                  steady_samples_per_s=steady_rate(marks, steps[0], args.batch_size),
                  samples_trained=int(served[:steps[0]].sum()), batches_unserved=int((served[:steps[0]] == 0).sum()),
                  samples_served_distinct=int(served.sum()), samples_served=int(counter[0]),
                  loss=float(history.history["loss"][-1]), accuracy=float(history.history["accuracy"][-1]))
    generator.loader.close()


def load(args: argparse.Namespace, result: Result) -> None:
    """The data path alone: BatchLoader batches as fast as they come, no Keras, the same counter."""
    from streamload.read.loader import BatchLoader

    counter = _counter(args.counter)
    options = {} if args.prefetch_batches is None else {"prefetch_batches": args.prefetch_batches}
    loader = BatchLoader(args.data, batch_size=args.batch_size, shuffle=args.shuffle, seed=args.seed,
                         normalize=False, one_hot=False, channel_axis=False, **options)
    result.update(batches_per_epoch=loader.num_batches, options=repr(loader.options), phase="load")
    before, started, steps = read_io().read_bytes, time.perf_counter(), 0
    while steps < loader.num_batches and (args.max_seconds is None or time.perf_counter() - started < args.max_seconds):
        counter[0] += len(loader.load(0, steps)[0])
        steps += 1
    seconds = time.perf_counter() - started
    served = int(counter[0])
    result.update(fit_seconds=seconds, read_bytes=read_io().read_bytes - before, steps=steps, samples_trained=served,
                  samples_served_distinct=served, samples_served=served, steady_samples_per_s=None)
    loader.close()


def fit_ram(args: argparse.Namespace, result: Result) -> None:
    """The model's own speed: the same fit on the first ``--ram-samples`` samples held in RAM as uint8 arrays."""
    from streamload.read.dataset import ShardedDataset

    dataset = ShardedDataset(args.data)
    count = min(args.ram_samples, len(dataset))
    x, y = np.empty((count, 28, 28), dtype=np.uint8), np.empty(count, dtype=np.int32)
    for start in range(0, count, RAM_CHUNK):
        chunk = dataset.gather(np.arange(start, min(start + RAM_CHUNK, count)))
        x[start:start + len(chunk["x"])], y[start:start + len(chunk["y"])] = chunk["x"], chunk["y"]
    model = softmax_regression(10)
    result["memory"]["ready"] = snapshot()
    result.update(phase="fit", samples_in_ram=count)
    steps, marks = [0], []
    started = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0,
              callbacks=[stop_after(args.max_seconds, steps, marks)])
    seconds = time.perf_counter() - started
    result.update(fit_seconds=seconds, steps=steps[0], samples_trained=min(count, steps[0] * args.batch_size),
                  steady_samples_per_s=steady_rate(marks, steps[0], args.batch_size))


def _counter(path: Path) -> np.ndarray:
    with open(path, "r+b") as stream:
        shared = mmap.mmap(stream.fileno(), COUNTER_BYTES)
    return np.frombuffer(shared, dtype=np.int64, count=1)


def tutorial(args: argparse.Namespace, result: Result) -> None:
    """The tutorial's data in RAM: the whole uint8 split (FLAW 1 of benchmarks/tutorial.py), then its generator."""
    from streamload.read.loader import BatchLoader

    from .memory_child import whole_split

    loader = BatchLoader(args.data, "train", batch_size=args.batch_size)
    info = loader.dataset.info
    result["needs_bytes"] = info.num_samples * sum(spec.sample_bytes for spec in info.arrays.values())
    result["phase"] = "load"
    arrays = whole_split(loader)
    result["memory"]["loaded"] = snapshot()
    result["phase"] = "fit"
    import keras

    from .tutorial import TutorialGenerator

    generator = TutorialGenerator(arrays["x"], arrays["y"], args.batch_size, arrays["x"].shape[1:], n_classes=10,
                                  to_fit=True)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    steps = [0]
    model.fit(generator, epochs=1, verbose=0, callbacks=[stop_after(args.max_seconds, steps)])
    result["steps"] = steps[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cap_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (args.cap_bytes, args.cap_bytes))
    result: Result = {"role": args.role, "data": str(args.data), "batch_size": args.batch_size,
                      "rlimit_data": list(resource.getrlimit(resource.RLIMIT_DATA)), "error": None,
                      "phase": "start", "memory": {"baseline": snapshot()}}
    status = 0
    try:
        {"train": train, "load": load, "fit-ram": fit_ram, "tutorial": tutorial}[args.role](args, result)
        result["phase"] = "done"
    except MemoryError as exc:
        result["error"] = {"phase": result["phase"], "type": type(exc).__name__, "message": str(exc)}
        status = MEMORY_ERROR_STATUS
    result["memory"]["end"] = snapshot()
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return status


def leave(status: int) -> None:
    """Exit without finalisers: after a ``fit`` stopped mid-epoch, TensorFlow's teardown of the tf.data
    iterator over a PyDataset can wait forever for its prefetch thread (seen here: both blocked on locks)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    leave(main())
