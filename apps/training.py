"""Training from shards: the model sized from the manifest (the tutorial's CNN on MNIST), the optimizer
that learns, and the loop.

The tutorial compiled with ``Adadelta()``, whose default learning rate became 0.001 in Keras 2.3+
(it was 1.0): one epoch then barely moves the weights. We default to Adam at 1e-3, and keep
Adadelta available with the learning rate it was written for.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from apps.models import build_model, loss_and_metrics, tutorial_cnn
from apps.plan import ModelPlan, plan_model
from streamload.adapters.callbacks import TrainingCheckpoint
from streamload.adapters.generator import StreamingGenerator
from streamload.errors import InvalidOptionError
from streamload.format.manifest import read_manifest

OPTIMIZERS = {"adam": 1e-3, "adadelta": 1.0, "sgd": 0.05}  # name -> learning rate that learns MNIST in one epoch


def make_optimizer(name: str, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    if name not in OPTIMIZERS:
        raise InvalidOptionError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    rate = OPTIMIZERS[name] if learning_rate is None else learning_rate
    return {"adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta,
            "sgd": keras.optimizers.SGD}[name](learning_rate=rate)


def compile_softmax_regression(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """One dense layer: trains in milliseconds a step, for checks where the data path is under test."""
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes, activation="softmax")], name="softmax_regression")
    model.compile(optimizer=make_optimizer("adam"), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def compile_tutorial_cnn(optimizer: str = "adam", learning_rate: float | None = None) -> keras.Model:
    model = tutorial_cnn()
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float | None = None
    shuffle: str = "exact"
    seed: int = 0
    workers: int = 1
    use_multiprocessing: bool = False
    steps_per_epoch: int | None = None
    model_out: Path | None = None
    checkpoint_dir: Path | None = None  # fault tolerance: resume mid-epoch after a crash (TrainingCheckpoint)
    save_freq: int = 500  # batches between checkpoints
    verbose: int | None = None  # None: Keras' progress bar on a terminal, one line per epoch in a log


def compile_model(plan: ModelPlan, optimizer: str = "adam", learning_rate: float | None = None) -> keras.Model:
    model = build_model(plan)
    loss, metrics = loss_and_metrics(plan)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics)
    return model


def progress_verbosity() -> int:
    """1 (a progress bar) on a terminal; 2 (one line per epoch) otherwise: the bar's thousands of \\r frames
    would fill a log file."""
    return 1 if sys.stdout.isatty() else 2


def train(config: TrainConfig, plan: ModelPlan | None = None) -> dict[str, float]:
    """Fit on the train split, evaluate on ``test`` (else ``validation``, else nothing), save; return the
    final metrics keyed ``<split>_<metric>`` (empty when there is no split to evaluate on).

    Keras is seeded from ``config.seed`` (weights, dropout), and the data order comes from the same
    seed, so a run's accuracy is reproducible on one machine.
    """
    plan = plan or plan_model(read_manifest(config.data), str(config.data))
    keras.utils.set_random_seed(config.seed)
    train_data = StreamingGenerator(config.data, "train", config.batch_size, shuffle=config.shuffle,
                                    seed=config.seed, workers=config.workers,
                                    use_multiprocessing=config.use_multiprocessing, **plan.reading.keywords(True))
    evaluation = (StreamingGenerator(config.data, plan.evaluate_on, 1000, shuffle=False,
                                     **plan.reading.keywords(False))
                  if plan.evaluate_on else None)
    model = compile_model(plan, config.optimizer, config.learning_rate)
    callbacks = []
    if config.checkpoint_dir is not None:
        callbacks.append(TrainingCheckpoint(config.checkpoint_dir, train_data, save_freq=config.save_freq))
    # shuffle=False: the generator already shuffles exactly; Keras shuffling batch order would only
    # scatter the reads (harmless for correctness, costly for block shuffling on cold storage).
    verbose = progress_verbosity() if config.verbose is None else config.verbose
    history = model.fit(train_data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                        validation_data=evaluation, shuffle=False, verbose=verbose, callbacks=callbacks)
    if config.model_out is not None:
        os.makedirs(config.model_out.parent, exist_ok=True)
        model.save(config.model_out)
    # validation runs on the whole evaluation split after the last epoch: those are the final metrics
    return {f"{plan.evaluate_on}_{name[4:]}": float(values[-1])
            for name, values in history.history.items() if name.startswith("val_")}
