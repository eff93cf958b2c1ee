"""``model.fit`` scenarios on one Keras backend, recording which samples the model really trained on.

Run as ``KERAS_BACKEND=jax python keras_fit_scenarios.py DATA OUT.json [SCENARIO ...]``. The data's
``x`` holds each sample's id; an identity layer logs the ids of every batch it is called on in
training (the model runs eagerly, so the layer sees concrete arrays), and a callback cuts the log
per Keras epoch. So the result is what ``fit`` trained on, not what the generator was asked for:
Keras' signature and model-building probes, and batches prefetched but never trained, are not in it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamload import ArraySource, BuildOptions, EpochSync, StreamingGenerator, build_dataset

BATCH = 50


class BatchLog:
    """The ids of every batch trained on (a plain object: Keras would copy a list assigned to a layer)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []


class IdLog(keras.layers.Layer):
    """Passes its input through; in training, appends the ids of the batch to ``log``."""

    def __init__(self, log: BatchLog) -> None:
        super().__init__()
        self.log = log

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training and not isinstance(x, keras.KerasTensor):
            self.log.batches.append(np.asarray(keras.ops.convert_to_numpy(x))[:, 0].astype(np.int64).tolist())
        return x


class PerEpoch(keras.callbacks.Callback):
    def __init__(self, log: BatchLog) -> None:
        super().__init__()
        self.log, self.epochs = log, []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.log.batches = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append({"keras_epoch": epoch, "batches": self.log.batches})


def fit(gen: StreamingGenerator, callbacks: list[Any] = (), **fit_args: Any) -> list[dict]:
    log = BatchLog()
    per_epoch = PerEpoch(log)
    model = keras.Sequential([keras.Input((1,)), IdLog(log), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    model.fit(gen, verbose=0, callbacks=[per_epoch, *callbacks], **{"shuffle": False, **fit_args})
    return per_epoch.epochs


def scenarios(data: Path, tiny: Path) -> dict[str, Callable[[], Any]]:
    def generator(directory: Path = data, **options: Any) -> StreamingGenerator:
        return StreamingGenerator(directory, batch_size=options.pop("batch_size", BATCH), seed=7, **options)

    def resume() -> Any:
        saved = generator()
        saved.set_epoch(1)
        state = saved.state_dict(batches_done=12)
        gen = generator()
        gen.load_state_dict(json.loads(json.dumps(state)))
        return {"state": state, "epochs": fit(gen, epochs=3, initial_epoch=1)}

    def initial_epoch_synced() -> Any:
        gen = generator()
        return fit(gen, epochs=4, initial_epoch=2, callbacks=[EpochSync(gen)])

    def rebuilt_mid_fit() -> Any:
        """Worker processes (a new pool every epoch) across a rebuild after epoch 0: still the old data."""
        folder = Path(tempfile.mkdtemp()) / "ids"
        shutil.copytree(data, folder)
        ids = np.arange(1000, dtype=np.float32)[:, None]

        class Rebuild(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if epoch == 0:  # the new data's ids start at 5000
                    build_dataset({"train": ArraySource(x=ids + 5000, y=np.zeros(1000, np.float32))}, folder,
                                  BuildOptions(overwrite=True, progress=False))

        epochs = fit(generator(folder, workers=2, use_multiprocessing=True), epochs=3, callbacks=[Rebuild()])
        fresh = StreamingGenerator(folder, batch_size=BATCH, shuffle=False)[0][0][:, 0]
        return {"epochs": epochs, "fresh": fresh.astype(int).tolist()}

    def tiny_synced() -> Any:
        gen = generator(tiny, batch_size=60)
        return fit(gen, epochs=3, callbacks=[EpochSync(gen)])

    return {
        "epochs": lambda: fit(generator(), epochs=3),
        "keras_shuffle": lambda: fit(generator(), epochs=2, shuffle=True),
        "steps_per_epoch": lambda: fit(generator(), epochs=4, steps_per_epoch=8),
        "resume": resume,
        "initial_epoch_synced": initial_epoch_synced,
        "tiny_synced": tiny_synced,
        "threads": lambda: fit(generator(workers=2), epochs=3),
        "processes": lambda: fit(generator(workers=2, use_multiprocessing=True), epochs=3),
        "rebuilt_mid_fit": rebuilt_mid_fit,
    }


def main(argv: list[str]) -> None:
    data, tiny, out, *wanted = argv
    available = scenarios(Path(data), Path(tiny))
    results = {name: available[name]() for name in (wanted or available)}
    Path(out).write_text(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
