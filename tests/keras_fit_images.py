"""``model.fit`` of a tiny CNN on an encoded image store, on one Keras backend, recording what it trained on.

Run as ``KERAS_BACKEND=jax python keras_fit_images.py DATA OUT.json``. An identity layer hashes the input of
every batch the model trains on (the model runs eagerly, so it sees concrete arrays); a callback cuts the log
per Keras epoch. Three runs, two epochs each, with random-resized-crop and flip: one worker, two worker
threads, two worker processes. The test compares the hashes with ``BatchLoader.load(epoch, batch)``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamload import EpochSync, StreamingGenerator

OPTIONS = {"batch_size": 4, "seed": 11, "image_size": (24, 20), "random_resized_crop": True, "horizontal_flip": True}


class BatchLog:
    """The hashes of the batches trained on (a plain object: Keras would copy a list assigned to a layer)."""

    def __init__(self) -> None:
        self.batches: list[str] = []


class Recorder(keras.layers.Layer):
    """Passes its input through; in training, appends the SHA-256 of the batch to ``log``."""

    def __init__(self, log: BatchLog) -> None:
        super().__init__()
        self.log = log

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training and not isinstance(x, keras.KerasTensor):
            pixels = np.ascontiguousarray(keras.ops.convert_to_numpy(x), np.float32)
            self.log.batches.append(hashlib.sha256(pixels.tobytes()).hexdigest())
        return x


class PerEpoch(keras.callbacks.Callback):
    def __init__(self, log: BatchLog) -> None:
        super().__init__()
        self.log, self.epochs = log, []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.log.batches = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(self.log.batches)


def run(data: Path, **workers: Any) -> dict[str, Any]:
    log = BatchLog()
    per_epoch = PerEpoch(log)
    model = keras.Sequential([keras.Input((24, 20, 3)), Recorder(log), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    generator = StreamingGenerator(data, **OPTIONS, **workers)
    # three batches an epoch: worker prefetch can complete a pass during Keras' model-building probe, so Keras'
    # epoch is reported by a callback (docs/training.md, streamload.read.epochs)
    history = model.fit(generator, epochs=2, verbose=0, shuffle=False, callbacks=[per_epoch, EpochSync(generator)])
    return {"epochs": per_epoch.epochs, "loss": history.history["loss"]}


def main(argv: list[str]) -> None:
    data, out = Path(argv[0]), Path(argv[1])
    results = {"one": run(data), "threads": run(data, workers=2),
               "processes": run(data, workers=2, use_multiprocessing=True)}
    out.write_text(json.dumps({"backend": keras.backend.backend(), **results}))


if __name__ == "__main__":
    main(sys.argv[1:])
