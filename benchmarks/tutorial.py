"""Faithful port of the article streamload answers: "Keras custom data generators, example with the MNIST dataset".

It is the baseline the benchmarks measure, so it keeps the article's code as written, flaws and all.
Keras 3 forced two changes only: the base class is ``keras.utils.PyDataset`` (``Sequence`` is now an
alias of it), whose ``__init__`` must be called with ``**kwargs``; and ``fit_generator`` is gone, so the
article's ``model.fit_generator(train_generator, ...)`` is ``model.fit(train_generator, ...)`` here.
``tutorial_model`` is the article's CNN, compiled as the article compiled it. Each flaw is marked
``FLAW n`` in the code:

1. The whole split lives in RAM before training: ``X_data`` is ``mnist.load_data()``'s uint8 array,
   kept as given (784 bytes per digit, one more per label). It scales with the dataset, not the batch.
2. Batches are assembled by a per-sample Python loop (``X[i,] = self.X_data[ID]``), and the loop body
   also normalises the *whole batch* (``X = (X/255).astype('float32')``) after storing each sample:
   O(batch_size**2) work per batch instead of one gather. It is wrong as well as slow: sample ``i`` of
   a batch of ``B`` is divided by 255 ``B - i`` times, so only the last sample comes out as ``x / 255``;
   in float32 the first ``B - 19`` or so underflow to all-zero images.
3. The batch buffer is ``np.empty((batch_size, *dim))``, float64 by default, so the first normalisation
   runs in float64 before ``astype`` makes it float32; the labels go through ``np.empty(batch_size)``
   (float64) into ``keras.utils.to_categorical`` (float64 one-hot).
4. ``__len__`` is ``math.ceil(len(indexes) / batch_size)``: the last partial batch is kept, but its
   buffers are still ``batch_size`` rows of ``np.empty``, of which only ``n % batch_size`` are filled.
   The other ``batch_size - n % batch_size`` rows, images and labels, are uninitialised memory, fed
   to the model as training samples every epoch (a garbage label outside ``0..n_classes-1`` makes
   ``to_categorical`` raise IndexError instead).
5. ``__init__`` ends with ``self.on_epoch_end()``, which shuffles with the global ``np.random.shuffle``:
   epoch 0 is shuffled, but with no seed of its own, so runs are not reproducible unless the caller
   seeds NumPy's global state, and worker processes share whatever that state is.
6. ``__next__`` serves batches with ``self.n`` and, at the end of an epoch, writes ``self.on_epoch_end``
   without calling it: iterating with ``next()`` serves every epoch in epoch 0's order.

Keras is imported at module level: only benchmarks import this module, never ``import streamload``.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from streamload.errors import InvalidOptionError, SourceMismatchError

ARTICLE_INPUT_SHAPE = (28, 28)  # the article's ``input_shape``, passed as ``dim``


class TutorialGenerator(keras.utils.PyDataset):
    """The article's ``DataGenerator`` as the article wrote it, on Keras 3's ``PyDataset``."""

    def __init__(
        self,
        X_data: np.ndarray,
        y_data: np.ndarray,
        batch_size: int,
        dim: tuple[int, ...],
        n_classes: int,
        to_fit: bool,
        shuffle: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # Keras 3: workers, use_multiprocessing, max_queue_size
        _refuse_bad_input(X_data, y_data, batch_size, dim)
        self.batch_size = batch_size
        self.X_data = X_data  # FLAW 1: the whole split in RAM, kept as given (uint8 from mnist.load_data())
        self.labels = y_data
        self.y_data = y_data
        self.to_fit = to_fit
        self.n_classes = n_classes
        self.dim = dim
        self.shuffle = shuffle
        self.n = 0
        self.list_IDs = np.arange(len(self.X_data))
        self.on_epoch_end()  # FLAW 5: epoch 0 shuffled by the global, unseeded RNG

    def __next__(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Get one batch of data, moving on through the epoch."""
        data = self.__getitem__(self.n)
        self.n += 1
        if self.n >= self.__len__():
            self.on_epoch_end  # noqa: B018 - FLAW 6: the article names the method without calling it
            self.n = 0
        return data

    def __len__(self) -> int:
        """The number of batches of the dataset."""
        return math.ceil(len(self.indexes) / self.batch_size)  # FLAW 4: the last batch kept, padded by np.empty

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Generate one batch of data."""
        indexes = self.indexes[index * self.batch_size : (index + 1) * self.batch_size]
        list_IDs_temp = [self.list_IDs[k] for k in indexes]
        X = self._generate_x(list_IDs_temp)
        if self.to_fit:
            y = self._generate_y(list_IDs_temp)
            return X, y
        return X

    def on_epoch_end(self) -> None:
        """Update the indexes after each epoch (and, FLAW 5, from ``__init__``)."""
        self.indexes = np.arange(len(self.X_data))
        if self.shuffle:
            np.random.shuffle(self.indexes)  # FLAW 5: global, unseeded RNG

    def _generate_x(self, list_IDs_temp: list[int]) -> np.ndarray:
        """Generate the images of a batch: ``(batch_size, *dim, 1)`` float32."""
        X = np.empty((self.batch_size, *self.dim))  # FLAW 3: float64; FLAW 4: unfilled rows stay garbage
        with np.errstate(all="ignore"):  # not in the article: garbage rows may overflow float32 and warn
            for i, ID in enumerate(list_IDs_temp):  # FLAW 2: one Python iteration per sample
                X[i,] = self.X_data[ID]
                X = (X / 255).astype("float32")  # FLAW 2: the whole batch, again after every sample
        return X[:, :, :, np.newaxis]

    def _generate_y(self, list_IDs_temp: list[int]) -> np.ndarray:
        """Generate the one-hot labels of a batch."""
        y = np.empty(self.batch_size)  # FLAW 3: float64; FLAW 4: unfilled entries stay garbage
        for i, ID in enumerate(list_IDs_temp):
            y[i] = self.y_data[ID]
        return keras.utils.to_categorical(y, num_classes=self.n_classes)


def _refuse_bad_input(X_data: np.ndarray, y_data: np.ndarray, batch_size: int, dim: tuple[int, ...]) -> None:
    """Not in the article: refuse at construction what its code would fail on later, less clearly."""
    if batch_size <= 0:
        raise InvalidOptionError(f"batch_size must be positive, got {batch_size}")
    if len(X_data) != len(y_data):
        raise SourceMismatchError(f"{len(X_data)} images but {len(y_data)} labels")
    if tuple(np.shape(X_data)[1:]) != tuple(dim):
        raise InvalidOptionError(f"images of shape {np.shape(X_data)} do not have dim {tuple(dim)} per sample")


def tutorial_model(num_classes: int = 10) -> keras.Model:
    """The article's CNN compiled as it was: categorical cross-entropy, ``Adadelta()``, accuracy.

    ``Adadelta()`` keeps its default learning rate, 0.001 in Keras 3 (1.0 before Keras 2.3), because a
    baseline is ported as its source wrote it: at 0.001 it barely learns in one epoch.
    """
    from apps.training import tutorial_cnn  # the same layers; lazy, so loading this module stays light

    model = tutorial_cnn((*ARTICLE_INPUT_SHAPE, 1), num_classes)
    model.compile(loss=keras.losses.categorical_crossentropy, optimizer=keras.optimizers.Adadelta(),
                  metrics=["accuracy"])
    return model
