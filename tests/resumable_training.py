"""A training run with TrainingCheckpoint that the tests kill with SIGKILL and start again.

``python resumable_training.py DATA CHECKPOINTS OUT.json EPOCHS SAVE_FREQ``. The model carries three
non-trainable totals over every sample it trains on (count, sum of ids, sum of a hash of the ids).
They are weights, so a checkpoint saves them and a resumed run restores them: at the end they equal
an uninterrupted run's totals exactly if and only if no sample was skipped and nothing but the
batches since the last checkpoint was trained twice.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
from keras import ops

from streamload import StreamingGenerator, TrainingCheckpoint


class Totals(keras.layers.Layer):
    def build(self, input_shape: tuple) -> None:
        self.totals = self.add_weight(shape=(3,), initializer="zeros", trainable=False, name="totals")

    def call(self, x, training=None):  # noqa: ANN001, ANN201 - backend tensors
        if training:
            ids = x[:, 0]
            hashed = ops.mod(ids * 7919.0, 1009.0)
            count = ops.cast(ops.shape(x)[0], "float32")
            self.totals.assign(self.totals + ops.stack([count, ops.sum(ids), ops.sum(hashed)]))
        return x


class Progress(keras.callbacks.Callback):
    """Prints every trained batch (the test kills the run mid-epoch) at a pace it can follow."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        print(f"trained {self.epoch} {batch}", flush=True)
        time.sleep(0.02)


def main(data: str, checkpoints: str, out: str, epochs: str, save_freq: str) -> None:
    gen = StreamingGenerator(data, batch_size=50, seed=11)
    totals = Totals()
    model = keras.Sequential([keras.Input((1,)), totals, keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.build((None, 1))
    model.fit(gen, epochs=int(epochs), verbose=0, shuffle=False,
              callbacks=[TrainingCheckpoint(checkpoints, gen, save_freq=int(save_freq)), Progress()])
    Path(out).write_text(json.dumps([float(v) for v in ops.convert_to_numpy(totals.totals)]))


if __name__ == "__main__":
    main(*sys.argv[1:])
