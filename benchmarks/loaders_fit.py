"""The loader benchmark's fit part (issue 3): ``model.fit`` epoch time of the tutorial CNN on the
generator against in-RAM arrays of the same samples, one untimed warm-up epoch per model (tracing),
then interleaved epochs. A Keras callback times the epoch itself, apart from ``fit``'s set-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamload.read.loader import BatchLoader

from .loaders_data import BenchData, ensure_subset
from .loaders_report import FIT_ARRAYS, FIT_GENERATOR
from .rounds import Goal, NullProgress, goal_summary, run_rounds, warm_up

Result = dict[str, Any]
FIT_GOAL = 1.03  # an epoch on the generator may take at most 3% longer than on in-RAM arrays
FIT_GOALS: list[Goal] = [(FIT_GENERATOR, FIT_ARRAYS, FIT_GOAL, "max")]


def _epoch_timer() -> tuple[dict[str, float], Any]:
    """A Keras callback, and the dict where it leaves the wall and CPU seconds of the last epoch."""
    import keras

    clock: dict[str, float] = {}  # wall and CPU seconds at the last epoch's start, then its duration
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(wall=time.perf_counter(), cpu=time.process_time()),
        on_epoch_end=lambda epoch, logs: clock.update(wall=time.perf_counter() - clock["wall"],
                                                      cpu=time.process_time() - clock["cpu"]))
    return clock, timer


def _fit_calls(data: BenchData, subset: Path, samples: int, timer: Any) -> tuple[dict[str, Callable[[Any], Any]], int]:
    """One epoch of ``model.fit`` per data path over the same samples, and the generator's steps per epoch."""
    from streamload.adapters.generator import StreamingGenerator

    generator = StreamingGenerator(subset, "train", data.batch_size, shuffle="exact", seed=data.seed)
    finish = BatchLoader(subset, "train", data.options()).finish  # the generator's own normalising and one-hot
    x, y = finish({key: value[:samples] for key, value in data.arrays.items()})
    fits = {FIT_GENERATOR: lambda model: model.fit(generator, epochs=1, shuffle=False, verbose=0, callbacks=[timer]),
            FIT_ARRAYS: lambda model: model.fit(x, y, batch_size=data.batch_size, epochs=1, shuffle=True, verbose=0,
                                                callbacks=[timer])}
    return fits, len(generator)


def fit_benchmark(data: BenchData, root: Path, samples: int, rounds: int, progress: Any = NullProgress()) -> Result:
    """Epoch seconds of ``model.fit`` on the generator vs on in-RAM arrays of the same samples."""
    import keras

    from apps.training import compile_tutorial_cnn

    samples = min(samples, len(data.arrays["y"]))
    subset = ensure_subset(root / f"fit-npy-{samples}", data.arrays, samples)
    clock, timer = _epoch_timer()
    fits, steps = _fit_calls(data, subset, samples, timer)
    keras.utils.set_random_seed(data.seed)
    models = {name: compile_tutorial_cnn() for name in fits}

    def timed_fit(name: str) -> Result:
        started = time.perf_counter()
        history = fits[name](models[name])
        return {"epoch_seconds": clock["wall"], "epoch_cpu_seconds": clock["cpu"],
                "fit_call_seconds": time.perf_counter() - started, "loss": float(history.history["loss"][-1])}

    warmup = warm_up({name: (lambda name=name: timed_fit(name)) for name in fits}, progress, label="fit ")
    results = run_rounds({name: (lambda number, name=name: timed_fit(name)) for name in fits}, rounds, progress)
    return {"samples": samples, "batch_size": data.batch_size, "steps_per_epoch": steps, "warmup": warmup,
            "rounds": results, **goal_summary(results, "epoch_seconds", "epoch_cpu_seconds", FIT_GOALS,
                                              also=("fit_call_seconds",))}
