"""``model.fit`` on a target of varying length (a tag per token) on one Keras backend:
``KERAS_BACKEND=jax python keras_fit_tagging.py DATA OUT``.

DATA holds ragged ``x`` (token ids) and ragged ``y`` (each token's tag, ``token % 4``). A functional model tags
every step (Embedding, then a per-step Dense); the loader adds the weights that keep the padded steps out of the
loss. Batches 0 and 1 share one padded length and later batches are longer, so on TensorFlow a signature fixed
from the first two batches would refuse the third unless every padded output (the targets and weights too)
alternates its length's parity. OUT holds the losses and the accuracy on real steps after training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamload import BatchLoader, StreamingGenerator


def model() -> keras.Model:
    tokens, mask = keras.Input((None,), dtype="int32", name="x"), keras.Input((None,), dtype="bool", name="x_mask")
    embedded = keras.layers.Embedding(500, 16)(tokens)
    tags = keras.layers.Dense(4, activation="softmax")(embedded)
    net = keras.Model({"x": tokens, "x_mask": mask}, tags)
    net.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    return net


def real_step_accuracy(net: keras.Model, data: Path) -> float:
    """The share of real (unpadded) steps tagged right, over one unshuffled pass."""
    loader = BatchLoader(data, batch_size=16, shuffle=False)
    right = total = 0
    for batch in range(loader.num_batches):
        x, y, weights = loader.load(0, batch)
        predicted = np.argmax(np.asarray(net.predict(x, verbose=0)), axis=-1)
        right += int(((predicted == y) * weights).sum())
        total += int(weights.sum())
    return right / total


def fit(data: Path, batches: Any, **fit_args: Any) -> dict[str, Any]:
    """Train a fresh model on ``batches`` (read from ``data``): its losses, and its accuracy on real steps."""
    net = model()
    history = net.fit(batches, verbose=0, **fit_args)
    return {"loss": [float(v) for v in history.history["loss"]], "accuracy": real_step_accuracy(net, data)}


def main(data: Path, out: Path) -> None:
    results = {"backend": keras.backend.backend(),
               "generator": fit(data, StreamingGenerator(data, batch_size=16, shuffle=False), epochs=8)}
    if keras.backend.backend() == "tensorflow":
        from streamload import as_tf_dataset, batches_per_epoch

        steps = batches_per_epoch(data, batch_size=16)
        results["tfdata"] = fit(data, as_tf_dataset(data, batch_size=16, shuffle=False, epochs=8), epochs=8,
                                steps_per_epoch=steps)
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
