"""``model.fit`` from a bucket whose server stays down past the retry budget, then resumed by TrainingCheckpoint.

``python bucket_outage_training.py URL LOCAL CHECKPOINTS CACHE_BYTES OUT.json`` (the test drives it through
stdin and stdout). It trains on LOCAL without interruption (the reference), then from URL with a
TrainingCheckpoint saved after every batch, so no trained batch is lost with the error. After three batches
it prints ``stop`` and waits for a line on stdin: the test stops the server, and ``fit`` ends with the store's
error once the retries give up. It prints ``start`` and waits again: the test restarts the server, and a new
model and generator resume from the checkpoint. OUT.json gets what each run trained on (the batches per
Keras epoch, logged inside the model as in keras_fit_scenarios.py), the error's type and text, and the
final weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
from keras_fit_scenarios import BatchLog, IdLog, PerEpoch

from streamload import StreamingGenerator, TrainingCheckpoint

BATCH, SEED, EPOCHS = 50, 3, 2


class StopServerAfter(keras.callbacks.Callback):
    """After ``batches`` batches of the first epoch, has the test stop the server (and waits until it has)."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.batches = batches

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch + 1 == self.batches:
            handshake("stop")


def handshake(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


def fit(where: str, callbacks: list[Any], **options: Any) -> tuple[list[dict], list[Any], str | None]:
    """(batches per Keras epoch, final weights, the error fit ended with as ``Type: text``, or None)."""
    keras.utils.set_random_seed(SEED)  # the same initial weights in every run
    log = BatchLog()
    per_epoch = PerEpoch(log)
    gen = StreamingGenerator(where, batch_size=BATCH, shuffle="none", seed=SEED, **options)
    model = keras.Sequential([keras.Input((16,)), IdLog(log), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", run_eagerly=True)
    error = None
    try:
        model.fit(gen, epochs=EPOCHS, verbose=0, shuffle=False,
                  callbacks=[per_epoch, *(make(gen) for make in callbacks)])
    except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
        error = f"{type(exc).__name__}: {exc}"
    if error is not None and log.batches:
        per_epoch.epochs.append({"keras_epoch": "interrupted", "batches": log.batches})
    return per_epoch.epochs, [w.tolist() for w in model.get_weights()], error


def main(url: str, local: str, checkpoints: str, cache_bytes: str, out: str) -> None:
    cache = {"cache_dir": str(Path(checkpoints).parent / "cache"), "cache_bytes": int(cache_bytes)}
    reference = fit(local, [])

    def saved(gen: StreamingGenerator) -> TrainingCheckpoint:
        return TrainingCheckpoint(checkpoints, gen, save_freq=1)

    interrupted = fit(url, [saved, lambda _gen: StopServerAfter(3)], **cache)
    handshake("start")
    resumed = fit(url, [saved], **cache)
    Path(out).write_text(json.dumps({"backend": keras.backend.backend(), "reference": reference,
                                     "interrupted": interrupted, "resumed": resumed}))


if __name__ == "__main__":
    main(*sys.argv[1:])
