"""The tutorial baseline must keep the documented behaviour the benchmarks measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from benchmarks.tutorial import TutorialGenerator, load_whole_split  # noqa: E402
from streamload.errors import InvalidOptionError, SourceMismatchError  # noqa: E402
from streamload.sources.idx import write_idx  # noqa: E402

N, BATCH = 100, 32


@pytest.fixture()
def split() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255  # make sure both ends of the range occur
    return images, rng.integers(0, 10, size=N).astype(np.uint8)


def _normalised(image: np.ndarray) -> np.ndarray:
    """What the tutorial's last sample of a batch holds: divided by 255 once, in float32."""
    return image.astype(np.float32) / np.float32(255)


def test_batches_have_the_documented_dtypes_range_and_shapes(split: tuple[np.ndarray, np.ndarray]) -> None:
    gen = TutorialGenerator(*split, batch_size=BATCH)
    x, y = gen[1]
    assert x.dtype == np.float32 and x.shape == (BATCH, 28, 28, 1)  # float64 until astype in the loop
    assert y.dtype == np.float64 and y.shape == (BATCH, 10)
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    assert TutorialGenerator(*split, batch_size=BATCH, to_fit=False)[0].shape == (BATCH, 28, 28, 1)


def test_last_partial_batch_is_dropped(split: tuple[np.ndarray, np.ndarray]) -> None:
    gen = TutorialGenerator(*split, batch_size=BATCH)
    assert len(gen) == N // BATCH == 3
    seen = np.concatenate([gen[i][0] for i in range(len(gen))])
    assert len(seen) == 96  # the last N % BATCH = 4 samples are never served


def test_whole_batch_is_renormalised_after_every_sample(split: tuple[np.ndarray, np.ndarray]) -> None:
    """FLAW 2: sample i of a batch of B is divided by 255 B - i times, so early samples vanish."""
    images, labels = split
    x, _ = TutorialGenerator(images, labels, batch_size=BATCH, shuffle=False)[0]
    np.testing.assert_array_equal(x[-1, ..., 0], _normalised(images[BATCH - 1]))
    twice = images[BATCH - 2].astype(np.float64) / 255**2
    np.testing.assert_allclose(x[-2, ..., 0], twice, rtol=1e-6)
    assert not x[: BATCH - 19].any(), "samples divided 20+ times must underflow to zero in float32"
    assert all(x[i].max() > 0 for i in range(BATCH - 16, BATCH))


def test_first_epoch_is_unshuffled_later_epochs_are(split: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = split
    gen = TutorialGenerator(images, labels, batch_size=BATCH, shuffle=True)
    x, y = gen[0]
    np.testing.assert_array_equal(x[-1, ..., 0], _normalised(images[BATCH - 1]))
    np.testing.assert_array_equal(y.argmax(axis=1), labels[:BATCH])
    np.random.seed(1)
    gen.on_epoch_end()
    assert not np.array_equal(gen.indexes, np.arange(N))
    x, y = gen[0]
    np.testing.assert_array_equal(x[-1, ..., 0], _normalised(images[gen.indexes[BATCH - 1]]))
    np.testing.assert_array_equal(y.argmax(axis=1), labels[gen.indexes[:BATCH]])


def test_load_whole_split_costs_float32_per_pixel(tmp_path: Path, split: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = split
    whole = load_whole_split(write_idx(tmp_path / "images-idx3-ubyte.gz", images))
    assert whole.dtype == np.float32 and whole.shape == (N, 28, 28, 1)
    assert whole.nbytes == N * 3136
    np.testing.assert_array_equal(whole, load_whole_split(images))
    x, _ = TutorialGenerator(whole, labels, batch_size=BATCH)[0]
    np.testing.assert_array_equal(x, TutorialGenerator(images, labels, batch_size=BATCH)[0][0])
    np.testing.assert_array_equal(x[-1, ..., 0], _normalised(images[BATCH - 1]))


def test_rejects_mismatched_inputs(split: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = split
    with pytest.raises(SourceMismatchError):
        TutorialGenerator(images, labels[:-1])
    with pytest.raises(InvalidOptionError):
        TutorialGenerator(images, labels, dim=(32, 32))
    with pytest.raises(InvalidOptionError):
        TutorialGenerator(images, labels, batch_size=0)


def test_trains_a_keras_model_for_one_epoch(split: tuple[np.ndarray, np.ndarray]) -> None:
    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    history = model.fit(TutorialGenerator(*split, batch_size=BATCH), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
