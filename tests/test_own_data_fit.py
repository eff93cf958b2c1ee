"""Your own data, end to end through model.fit: an image folder built by the CLI trains a small CNN
well above chance, and a dict-of-arrays iterable trains a two-input model from dict batches."""

import subprocess

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, subprocess_env

keras = pytest.importorskip("keras")
Image = pytest.importorskip("PIL.Image")

from streamload import IterableSource, StreamingGenerator, build_dataset, split_validation  # noqa: E402

CLASSES = ("checks", "horizontal", "vertical")


def pattern(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A noisy 24x24 RGB picture of one of three stripe patterns, at a random phase and colour."""
    rows, cols = np.mgrid[0:24, 0:24]
    period, phase = rng.integers(3, 7), rng.integers(0, 6)
    wave = {"horizontal": rows, "vertical": cols, "checks": rows + cols}[kind]
    on = ((wave + phase) // period) % 2 if kind != "checks" else ((rows + phase) // period + (cols // period)) % 2
    colour = rng.integers(120, 256, 3)
    image = on[..., None] * colour + rng.normal(0, 25, (24, 24, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_a_cnn_trained_from_an_image_folder_beats_chance(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (tmp_path / "photos" / kind).mkdir(parents=True)
        for number in range(120):
            Image.fromarray(pattern(kind, rng)).save(tmp_path / "photos" / kind / f"{number:03d}.png")
    built = subprocess.run([*BUILD_SCRIPT, "--source", str(tmp_path / "photos"), "--out", str(tmp_path / "ds"),
                            "--image-size", "24", "24", "--validation-split", "0.25", "--seed", "3", "--jobs", "2",
                            "--quiet"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    keras.utils.set_random_seed(0)
    train = StreamingGenerator(tmp_path / "ds", "train", batch_size=30, seed=1)
    validation = StreamingGenerator(tmp_path / "ds", "validation", batch_size=90, shuffle=False)
    assert train.class_names == CLASSES and len(train) == 9  # 270 training images, 90 for validation
    x, y = train[0]
    assert x.shape == (30, 24, 24, 3) and x.dtype == np.float32 and y.shape == (30, 3)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=validation, epochs=15, shuffle=False, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.8  # chance is 1/3


@pytest.mark.slow
def test_a_two_input_model_trains_from_dict_batches(tmp_path) -> None:
    def samples():
        rng = np.random.default_rng(0)
        for _ in range(3000):
            meta = rng.standard_normal(4).astype(np.float32)
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            yield {"image": image, "meta": meta, "label": int(meta[0] + meta[1] > 0)}

    build_dataset(split_validation({"train": IterableSource(samples(), target="label")}, 0.2, seed=0),
                  tmp_path / "multi")
    train = StreamingGenerator(tmp_path / "multi", "train", batch_size=64, seed=2)
    x, y = train[0]
    assert set(x) == {"image", "meta"} and x["image"].dtype == np.float32 and x["image"].max() <= 1.0
    assert x["meta"].dtype == np.float32 and y.shape == (64, 2)
    image, meta = keras.Input((8, 8, 3), name="image"), keras.Input((4,), name="meta")
    hidden = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    model = keras.Model([image, meta], keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy", metrics=["accuracy"])
    validation = StreamingGenerator(tmp_path / "multi", "validation", batch_size=200, shuffle=False)
    history = model.fit(train, validation_data=validation, epochs=4, shuffle=False, verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.85  # the label is a linear function of meta
