"""The tutorial baseline must behave as the article's code does, each flaw pinned where it is deterministic.

The oracles are written from the article's arithmetic, not from the port: a sample stored at row
``i`` of a batch of ``r`` real samples is divided by 255 ``r - i`` times (the first division of row 0
in float64, every other one in float32), and the global RNG's shuffle of ``arange(n)`` under a seed is
``RandomState(seed).permutation(n)``. Uninitialised memory is never asserted on, only its shape.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from benchmarks.tutorial import TutorialGenerator, tutorial_model  # noqa: E402
from streamload.errors import InvalidOptionError, SourceMismatchError  # noqa: E402

N, BATCH = 100, 32  # three full batches and one of N % BATCH = 4 real samples
REAL_IN_LAST = N % BATCH
ARTICLE_ARGS = {"dim": (28, 28), "n_classes": 10, "to_fit": True}


@pytest.fixture()
def split() -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and labels, as ``mnist.load_data()`` returns them."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(N, 28, 28), dtype=np.uint8)  # no all-zero image: zero rows mean underflow
    return images, rng.integers(0, 10, size=N).astype(np.uint8)


def article_batch(images: np.ndarray) -> np.ndarray:
    """The real rows of the article's batch of ``images``, computed row by row from its arithmetic."""
    rows = []
    for i, image in enumerate(images):
        row = (image.astype(np.float64) / 255).astype(np.float32) if i == 0 else image.astype(np.float32) / 255
        for _ in range(len(images) - i - 1):  # later iterations re-divide the whole batch, in float32
            row = (row / 255).astype(np.float32)
        rows.append(row)
    return np.stack(rows)[..., np.newaxis]


def _generator(split: tuple[np.ndarray, np.ndarray], seed: int = 0, **kwargs: object) -> TutorialGenerator:
    np.random.seed(seed)  # the article shuffles with NumPy's global RNG, from __init__ on
    return TutorialGenerator(*split, batch_size=BATCH, **{**ARTICLE_ARGS, **kwargs})


def test_epoch_zero_is_shuffled_by_the_global_rng_in_init(split: tuple[np.ndarray, np.ndarray]) -> None:
    """FLAW 5: __init__ calls on_epoch_end, so epoch 0 is np.random.shuffle(arange(n)) under the global seed."""
    images, labels = split
    gen = _generator(split, seed=7)
    order = np.random.RandomState(7).permutation(N)
    assert not np.array_equal(order, np.arange(N))
    np.testing.assert_array_equal(gen.indexes, order)
    x, y = gen[0]
    np.testing.assert_array_equal(x, article_batch(images[order[:BATCH]]))
    np.testing.assert_array_equal(y.argmax(axis=1), labels[order[:BATCH]])
    np.testing.assert_array_equal(_generator(split, seed=7, shuffle=False).indexes, np.arange(N))


def test_whole_batch_is_renormalised_after_every_sample(split: tuple[np.ndarray, np.ndarray]) -> None:
    """FLAWS 2 and 3: float32 out, each row divided by 255 once per later sample; early rows underflow to 0."""
    images, _ = split
    x, y = _generator(split, shuffle=False)[1]
    assert x.dtype == np.float32 and x.shape == (BATCH, 28, 28, 1)
    assert y.dtype == np.float64 and y.shape == (BATCH, 10)
    np.testing.assert_array_equal(x, article_batch(images[BATCH : 2 * BATCH]))
    np.testing.assert_array_equal(x[-1, ..., 0], images[2 * BATCH - 1].astype(np.float32) / np.float32(255))
    assert not x[: BATCH - 19].any(), "samples divided 20+ times must underflow to zero in float32"
    assert all(x[i].any() for i in range(BATCH - 16, BATCH))


def test_last_batch_is_kept_full_size_with_unfilled_rows(split: tuple[np.ndarray, np.ndarray]) -> None:
    """FLAW 4: ceil batches, the last one batch_size rows of which only n % batch_size hold samples."""
    images, labels = split
    gen = _generator(split, seed=3)
    assert len(gen) == math.ceil(N / BATCH) == 4
    x, y = gen[len(gen) - 1]
    assert x.shape == (BATCH, 28, 28, 1) and y.shape == (BATCH, 10)  # 28 rows of uninitialised memory
    last = gen.indexes[(len(gen) - 1) * BATCH :]
    assert len(last) == REAL_IN_LAST
    np.testing.assert_array_equal(x[:REAL_IN_LAST], article_batch(images[last]))
    np.testing.assert_array_equal(y[:REAL_IN_LAST].argmax(axis=1), labels[last])
    served = np.concatenate([gen.indexes[b * BATCH : (b + 1) * BATCH] for b in range(len(gen))])
    np.testing.assert_array_equal(np.sort(served), np.arange(N))  # no sample dropped


def test_labels_go_to_to_categorical_as_a_float64_np_empty_buffer(
        split: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """FLAWS 3 and 4: ``to_categorical`` gets the whole float64 buffer, its unfilled tail included."""
    _, labels = split
    real = keras.utils.to_categorical
    received: list[np.ndarray] = []

    def recording(y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        received.append(np.array(y, copy=True))
        return real(y, num_classes=num_classes)

    monkeypatch.setattr(keras.utils, "to_categorical", recording)
    gen = _generator(split, seed=5)
    gen[len(gen) - 1]
    (buffer,) = received
    assert buffer.dtype == np.float64 and buffer.shape == (BATCH,)
    np.testing.assert_array_equal(buffer[:REAL_IN_LAST], labels[gen.indexes[-REAL_IN_LAST:]])


def test_next_never_reshuffles_but_on_epoch_end_does(split: tuple[np.ndarray, np.ndarray]) -> None:
    """FLAW 6: ``__next__`` names on_epoch_end without calling it; Keras' own call reshuffles."""
    images, labels = split
    gen = _generator(split, seed=11)
    first_order = gen.indexes.copy()
    epochs = [[next(gen) for _ in range(len(gen))] for _ in range(2)]
    np.testing.assert_array_equal(gen.indexes, first_order)
    for batch, (one, two) in enumerate(zip(*epochs)):
        real = len(first_order[batch * BATCH : (batch + 1) * BATCH])
        ids = first_order[batch * BATCH : batch * BATCH + real]
        for epoch in (one, two):  # both epochs serve epoch 0's order
            np.testing.assert_array_equal(epoch[0][:real], article_batch(images[ids]))
            np.testing.assert_array_equal(epoch[1][:real].argmax(axis=1), labels[ids])
    assert gen.n == 0
    np.random.seed(12)
    gen.on_epoch_end()
    np.testing.assert_array_equal(gen.indexes, np.random.RandomState(12).permutation(N))
    assert not np.array_equal(gen.indexes, first_order)


def test_to_fit_false_serves_images_only(split: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = split
    gen = _generator(split, shuffle=False, to_fit=False)
    np.testing.assert_array_equal(gen[0], article_batch(images[:BATCH]))


def test_rejects_mismatched_inputs(split: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = split
    with pytest.raises(SourceMismatchError, match="100 images but 99 labels"):
        TutorialGenerator(images, labels[:-1], BATCH, **ARTICLE_ARGS)
    with pytest.raises(InvalidOptionError, match=r"do not have dim \(32, 32\)"):
        TutorialGenerator(images, labels, BATCH, (32, 32), 10, True)
    with pytest.raises(InvalidOptionError, match="batch_size must be positive, got 0"):
        TutorialGenerator(images, labels, 0, **ARTICLE_ARGS)


def test_tutorial_model_is_the_articles_cnn_with_adadelta_at_its_keras3_default() -> None:
    model = tutorial_model()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert isinstance(model.optimizer, keras.optimizers.Adadelta)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)  # Keras 3's documented default
    assert model.loss is keras.losses.categorical_crossentropy


@pytest.mark.slow
def test_fit_runs_the_articles_training_on_the_generator(split: tuple[np.ndarray, np.ndarray]) -> None:
    """``fit`` (the port of ``fit_generator``) on 96 samples: no partial batch, so no garbage rows in the loss."""
    images, labels = split
    np.random.seed(0)
    keras.utils.set_random_seed(0)
    gen = TutorialGenerator(images[:96], labels[:96], BATCH, **ARTICLE_ARGS)
    epoch_zero = gen.indexes.copy()
    history = tutorial_model().fit(gen, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    assert not np.array_equal(gen.indexes, epoch_zero), "Keras calls on_epoch_end, which reshuffles"
