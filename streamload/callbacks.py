"""Keras callbacks: follow Keras' epoch exactly, and fault-tolerant training that resumes mid-epoch.

``TrainingCheckpoint`` saves the model's weights (optimizer state included) together with the
generator's position every ``save_freq`` batches, as one atomic checkpoint. A training process
killed at any moment and started again with the same command restores both and continues the
same sample sequence: batches trained since the last checkpoint are trained again (their weight
updates were lost with the process), nothing is skipped and nothing else repeats. Keras' own
``BackupAndRestore`` restarts an interrupted epoch from its first batch instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras

from .durable import fsync_path, replace_durably, write_durably
from .errors import InvalidOptionError
from .generator import StreamingGenerator

_POINTER = "latest.json"


class EpochSync(keras.callbacks.Callback):
    """Hands Keras' epoch number to generators: exact for any epoch length, ``initial_epoch`` included."""

    def __init__(self, *generators: StreamingGenerator) -> None:
        super().__init__()
        self.generators = generators

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for generator in self.generators:
            generator.sync_epoch(epoch)


class TrainingCheckpoint(EpochSync):
    """Saves and restores weights, optimizer and the generator's stream position together.

    Args:
        directory: where checkpoints live (``latest.json`` names the newest complete one).
        generator: the training generator whose position is saved.
        save_freq: save every this many batches, and at the end of every epoch.
        keep_on_success: keep the last checkpoint when ``fit`` finishes (default: remove it, as
            ``BackupAndRestore`` does, so the next run starts afresh).
    """

    def __init__(self, directory: str | os.PathLike, generator: StreamingGenerator, save_freq: int = 1000,
                 keep_on_success: bool = False) -> None:
        super().__init__(generator)
        if not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1:
            raise InvalidOptionError(f"save_freq must be a positive number of batches, got {save_freq!r}")
        self.directory, self.generator, self.save_freq = Path(directory), generator, save_freq
        self.keep_on_success = keep_on_success
        self._since_save = 0
        self._epoch = 0
        self._stop_after: int | None = None  # stream position where the last epoch's data ends

    def on_train_begin(self, logs: dict | None = None) -> None:
        saved = self._latest()
        if saved is not None:
            folder, meta = saved
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(folder / "model.weights.h5")
            self.generator.load_state_dict(meta["loader"])
            self.model._initial_epoch = meta["keras_epoch"]  # as BackupAndRestore does: fit resumes this epoch
        epochs = self.params.get("epochs")
        self._stop_after = None if epochs is None else self.generator.stream.batches_before(epochs)
        self._since_save = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch)
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._since_save += 1
        if self._since_save >= self.save_freq:
            self._save(self._epoch, batch + 1)
        position = self.generator.stream.served(self._epoch - self.generator.stream.start.epoch, batch + 1)
        if self._stop_after is not None and position >= self._stop_after:
            self.model.stop_training = True  # the last epoch's data is done (a resumed run ends mid-epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._save(epoch + 1, 0)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model._initial_epoch = None
        if not self.keep_on_success:  # only what this callback wrote: the folder may hold other files
            self._remove_checkpoints(keep=None)
            (self.directory / _POINTER).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def _save(self, keras_epoch: int, batches_done: int) -> None:
        """Write a complete checkpoint in its own folder, then switch ``latest.json`` to it atomically.

        ``batches_done`` batches of Keras epoch ``keras_epoch`` are trained (0: it has not begun).
        """
        self._since_save = 0
        meta = {"keras_epoch": keras_epoch, "loader": self.generator.state_dict(batches_done, keras_epoch)}
        name = f"checkpoint-{keras_epoch:06d}-{batches_done:09d}"
        folder = self.directory / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.model.save_weights(folder / "model.weights.h5")
        fsync_path(folder / "model.weights.h5")
        write_durably(folder / "meta.json", json.dumps(meta, indent=2))
        fsync_path(folder)
        replace_durably(self.directory / _POINTER, json.dumps({"checkpoint": name}))
        self._remove_checkpoints(keep=name)

    def _remove_checkpoints(self, keep: str | None) -> None:
        """Older checkpoints, and pointer files a killed save left half-written."""
        for old in [*self.directory.glob("checkpoint-*"), *self.directory.glob(f".{_POINTER}-*.tmp")]:
            if old.name == keep:
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    def _latest(self) -> tuple[Path, dict[str, Any]] | None:
        try:
            name = json.loads((self.directory / _POINTER).read_text())["checkpoint"]
            folder = self.directory / name
            return folder, json.loads((folder / "meta.json").read_text())
        except FileNotFoundError:
            return None
