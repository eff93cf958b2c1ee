"""``model.fit`` on padded sequences on one Keras backend: ``KERAS_BACKEND=jax python keras_fit_sequences.py DATA OUT``.

DATA holds ragged ``x`` (record i starts with token i + 1, every record has at least one token) and labels ``y``.
A functional model takes ``x`` and ``x_mask`` (Embedding, then masked average pooling); an identity layer logs the
first token of every record trained on (eagerly), so OUT says which samples each Keras epoch really saw, and the
loss. On TensorFlow the same model also trains from ``as_tf_dataset``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamload import StreamingGenerator


class Log:
    """Sample ids trained on in the current epoch (a plain object: Keras would copy a list assigned to a layer)."""

    def __init__(self) -> None:
        self.ids: list[int] = []


class FirstTokens(keras.layers.Layer):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training and not isinstance(x, keras.KerasTensor):
            self.log.ids += (np.asarray(keras.ops.convert_to_numpy(x))[:, 0] - 1).tolist()
        return x


def model(log: Log) -> keras.Model:
    tokens, mask = keras.Input((None,), dtype="int32", name="x"), keras.Input((None,), dtype="bool", name="x_mask")
    embedded = keras.layers.Embedding(1001, 8)(FirstTokens(log)(tokens))
    pooled = keras.layers.GlobalAveragePooling1D()(embedded, mask=mask)
    net = keras.Model({"x": tokens, "x_mask": mask}, keras.layers.Dense(3, activation="softmax")(pooled))
    net.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    return net


def fit_epochs(data: Any, **fit_args: Any) -> dict[str, Any]:
    log, per_epoch = Log(), []
    marks = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: setattr(log, "ids", []),
                                           on_epoch_end=lambda epoch, logs: per_epoch.append(log.ids))
    history = model(log).fit(data, verbose=0, callbacks=[marks], shuffle=False, **fit_args)
    return {"epochs": per_epoch, "loss": [float(v) for v in history.history["loss"]]}


def main(data: Path, out: Path) -> None:
    results = {"backend": keras.backend.backend()}
    generator = StreamingGenerator(data, batch_size=16, seed=3, bucket_by_length=True)
    results["generator"] = fit_epochs(generator, epochs=2)
    state = generator.state_dict(batches_done=5, keras_epoch=1)
    resumed = StreamingGenerator(data, batch_size=16, seed=3, bucket_by_length=True)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    results["resumed"] = fit_epochs(resumed, epochs=1)
    if keras.backend.backend() == "tensorflow":
        from streamload import as_tf_dataset, batches_per_epoch

        dataset = as_tf_dataset(data, batch_size=16, seed=3, bucket_by_length=True, epochs=2)
        steps = batches_per_epoch(data, batch_size=16)
        results["tfdata"] = fit_epochs(dataset, epochs=2, steps_per_epoch=steps)
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
