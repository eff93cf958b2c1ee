"""Keras callbacks: follow Keras' epoch exactly, and fault-tolerant training that resumes mid-epoch.

``TrainingCheckpoint`` saves the model's weights (optimizer state included) together with the
generator's position every ``save_freq`` batches, as one atomic checkpoint. A training process
killed at any moment and started again with the same command restores both and continues the
same sample sequence: batches trained since the last checkpoint are trained again (their weight
updates were lost with the process), nothing is skipped and nothing else repeats. Keras' own
``BackupAndRestore`` restarts an interrupted epoch from its first batch instead.

A checkpoint folder may hold the user's own files (``checkpoint-best/``, ``checkpoint-03.keras``):
the callback deletes only folders by its exact name pattern that hold nothing but the two files it
writes, and loads only from such a folder, by a name in ``latest.json`` that stays inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import keras

from ..base.durable import fsync_path, replace_durably, write_durably
from ..errors import CheckpointError, ForeignDataError
from ..options import check_int
from ..places.layout import is_real_folder, is_regular_file
from .generator import StreamingGenerator

_POINTER = "latest.json"
_WEIGHTS, _META = "model.weights.h5", "meta.json"
_CHECKPOINT = re.compile(r"checkpoint-\d{6}-\d{9}")  # the names _save gives, and no other
_POINTER_TEMPORARY = re.compile(re.escape(f".{_POINTER}-") + r"[0-9a-f]{8}\.tmp")  # replace_durably's


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
        self.directory, self.generator = Path(directory), generator
        self.save_freq = check_int("save_freq (batches between saves)", save_freq, 1)
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
            self.model.load_weights(folder / _WEIGHTS)
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
            if is_regular_file(self.directory / _POINTER):
                (self.directory / _POINTER).unlink()
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
        if os.path.lexists(folder):  # the same position saved by a run killed after it: only ours is replaced
            if not self._is_own_checkpoint(name):
                raise ForeignDataError(f"{folder}: not a checkpoint this callback wrote; it is left as it is "
                                       "(move it away, or choose another checkpoint folder)")
            shutil.rmtree(folder)
        self.directory.mkdir(parents=True, exist_ok=True)
        folder.mkdir()  # a new folder of ours: the files below are created inside it, never through a link
        self.model.save_weights(folder / _WEIGHTS)
        fsync_path(folder / _WEIGHTS)
        write_durably(folder / _META, json.dumps(meta, indent=2))
        fsync_path(folder)
        replace_durably(self.directory / _POINTER, json.dumps({"checkpoint": name}))
        self._remove_checkpoints(keep=name)

    def _is_own_checkpoint(self, name: str) -> bool:
        """A real folder by the exact name ``_save`` gives, holding nothing but the files it writes."""
        folder = self.directory / name
        return (_CHECKPOINT.fullmatch(name) is not None and is_real_folder(folder)
                and all(entry.name in (_WEIGHTS, _META) and is_regular_file(entry) for entry in folder.iterdir()))

    def _remove_checkpoints(self, keep: str | None) -> None:
        """Older checkpoints of this callback, and pointer files a killed save left half-written; nothing else."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name != keep and self._is_own_checkpoint(name):
                shutil.rmtree(self.directory / name, ignore_errors=True)
            elif _POINTER_TEMPORARY.fullmatch(name) and is_regular_file(self.directory / name):
                (self.directory / name).unlink(missing_ok=True)

    def _latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint (folder, meta), None when there is none; CheckpointError when it cannot be used."""
        pointer = self.directory / _POINTER
        if not os.path.lexists(pointer):
            return None
        name = _read_json(pointer).get("checkpoint") if is_regular_file(pointer) else None
        if not isinstance(name, str) or not self._is_own_checkpoint(name):
            raise CheckpointError(f"{pointer}: does not name a checkpoint folder of this callback inside "
                                  f"{self.directory} (checkpoint-NNNNNN-NNNNNNNNN holding {_WEIGHTS} and {_META}); "
                                  "remove it to start afresh")
        folder = self.directory / name
        if not (is_regular_file(folder / _WEIGHTS) and is_regular_file(folder / _META)):
            raise CheckpointError(f"{folder}: incomplete checkpoint (needs {_WEIGHTS} and {_META}); "
                                  f"remove {pointer} to start afresh")
        meta = _read_json(folder / _META)
        if not isinstance(meta.get("loader"), dict) or not isinstance(meta.get("keras_epoch"), int):
            raise CheckpointError(f"{folder / _META}: lacks the loader state or the Keras epoch it needs; "
                                  f"remove {pointer} to start afresh")
        return folder, meta


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from one of the callback's files; anything else is one CheckpointError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint file ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}); remove it to start afresh") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: checkpoint file holds {type(data).__name__}, not a JSON object")
    return data
