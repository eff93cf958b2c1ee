"""Faithful port of the much-copied "Keras custom data generators, example with the MNIST dataset".

This is the baseline streamload's benchmarks beat, so its flaws are kept on purpose, because the
benchmarks measure them. Each flaw is marked ``FLAW n`` in the code:

1. The whole split lives in RAM before training starts. ``load_whole_split`` is that cost, as the
   tutorial's users pay it: every pixel as float32, ``n * 28 * 28 * 4`` = 3136 bytes per image
   (188 MB for MNIST's 60k training images, and it scales with the dataset, not the batch).
2. Batches are assembled by a per-sample Python loop (``X[i,] = self.X_data[ID]``), and the loop
   body also normalises the *whole batch* (``X = (X/255).astype('float32')``) after storing each
   sample: O(batch_size**2) work per batch instead of one vectorised gather. It is wrong as well as
   slow: sample ``i`` of a batch of ``B`` is divided by 255 ``B - i`` times, so only the last sample
   comes out as ``x / 255``; in float32 the first ``B - 19`` or so underflow to all-zero images.
3. Each batch is allocated with ``np.empty((batch_size, *dim, n_channels))``, whose default dtype is
   float64, and the first normalisation runs in float64 before ``astype`` makes it float32: a
   needless float64 pass. Labels are one-hot encoded per batch with ``keras.utils.to_categorical``
   (float64).
4. ``__len__`` is ``int(np.floor(len(list_IDs) / batch_size))``: the last partial batch is dropped,
   so ``n % batch_size`` samples are never seen in an epoch (the same ones, while unshuffled).
5. This variant defines ``on_epoch_end`` but its ``__init__`` forgets to call it (the canonical
   Stanford version calls it), so the first epoch runs in file order, unshuffled.
6. ``on_epoch_end`` shuffles with the global ``np.random.shuffle``: no seed of its own, so runs are
   not reproducible unless the caller seeds NumPy's global state, and workers share that state.

Keras is imported at module level: this module is only imported by the benchmarks, never by
``import streamload``.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from streamload.errors import InvalidOptionError, SourceMismatchError
from streamload.sources.idx import read_idx


def load_whole_split(
    source: str | os.PathLike | np.ndarray, *, dim: tuple[int, int] = (28, 28), n_channels: int = 1
) -> np.ndarray:
    """Load every image of a split as float32 ``(n, *dim, n_channels)``: the tutorial's RAM cost.

    Pixels keep their 0..255 range because the generator normalises in its loop (FLAW 2); the result
    can be passed straight to ``TutorialGenerator``. ``source`` is an IDX file (raw or gzip) or an
    array of images already in memory.
    """
    images = read_idx(source) if isinstance(source, (str, os.PathLike)) else np.asarray(source)
    return _as_image_batch(images, dim, n_channels).astype(np.float32)


def _as_image_batch(images: np.ndarray, dim: tuple[int, ...], n_channels: int) -> np.ndarray:
    """Reshape ``images`` to ``(n, *dim, n_channels)``, refusing a row size that does not fit."""
    row = math.prod(images.shape[1:])
    if images.ndim < 2 or row != math.prod(dim) * n_channels:
        raise InvalidOptionError(
            f"images of shape {images.shape} do not hold {dim} x {n_channels} channel(s) per sample"
        )
    return images.reshape((images.shape[0], *dim, n_channels))


class TutorialGenerator(keras.utils.PyDataset):
    """The tutorial's ``DataGenerator``, ported to Keras 3's ``PyDataset`` with its flaws intact.

    ``images`` are the whole split in memory (uint8 as decoded, or float32 from ``load_whole_split``);
    they are kept as given, not copied, and normalised inside the per-sample loop like in the tutorial.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int = 32,
        dim: tuple[int, int] = (28, 28),
        n_channels: int = 1,
        n_classes: int = 10,
        shuffle: bool = True,
        to_fit: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # workers, use_multiprocessing, max_queue_size
        if batch_size <= 0:
            raise InvalidOptionError(f"batch_size must be positive, got {batch_size}")
        if len(images) != len(labels):
            raise SourceMismatchError(f"{len(images)} images but {len(labels)} labels")
        self.images = _as_image_batch(np.asarray(images), dim, n_channels)  # FLAW 1: whole split
        self.labels = np.asarray(labels)
        self.list_IDs = np.arange(len(self.images))
        self.batch_size = batch_size
        self.dim = dim
        self.n_channels = n_channels
        self.n_classes = n_classes
        self.shuffle = shuffle
        self.to_fit = to_fit
        self.indexes = np.arange(len(self.list_IDs))  # FLAW 5: on_epoch_end() is not called here

    def __len__(self) -> int:
        """Denotes the number of batches per epoch."""
        return int(np.floor(len(self.list_IDs) / self.batch_size))  # FLAW 4: remainder dropped

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Generate one batch of data."""
        indexes = self.indexes[index * self.batch_size : (index + 1) * self.batch_size]
        list_IDs_temp = [self.list_IDs[k] for k in indexes]
        X = self._generate_X(list_IDs_temp)
        if self.to_fit:
            y = self._generate_y(list_IDs_temp)
            return X, y
        return X

    def on_epoch_end(self) -> None:
        """Updates indexes after each epoch."""
        self.indexes = np.arange(len(self.list_IDs))
        if self.shuffle:
            np.random.shuffle(self.indexes)  # FLAW 6: global, unseeded RNG

    def _generate_X(self, list_IDs_temp: list[int]) -> np.ndarray:  # noqa: N802 - the tutorial's name
        """Generates data containing batch_size images."""
        X = np.empty((self.batch_size, *self.dim, self.n_channels))  # FLAW 3: float64
        with np.errstate(all="ignore"):  # not in the tutorial: unfilled np.empty rows may overflow float32
            for i, ID in enumerate(list_IDs_temp):  # FLAW 2: one Python iteration per sample
                X[i,] = self.images[ID]
                X = (X / 255).astype("float32")  # FLAW 2: the whole batch, again after every sample
        return X

    def _generate_y(self, list_IDs_temp: list[int]) -> np.ndarray:
        """Generates one-hot labels containing batch_size samples."""
        y = np.empty((self.batch_size), dtype=int)
        for i, ID in enumerate(list_IDs_temp):
            y[i] = self.labels[ID]
        return keras.utils.to_categorical(y, num_classes=self.n_classes)
