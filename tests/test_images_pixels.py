"""Tests for streamload.images.pixels: Keras' crop box, TensorFlow's grayscale, and the format-restricted,
size-limited open (the resizes are tested in test_images_resize.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_fixtures import random_pixels
from PIL import Image

from streamload.errors import ImageDecodeError
from streamload.images.pixels import as_array, crop_box, open_image, to_color_mode
from streamload.images.resize import resize_nearest


@pytest.mark.parametrize(("height", "width", "size"), [(340, 500, (200, 200)), (17, 3, (5, 7)), (1, 9, (9, 1)),
                                                        (101, 77, (33, 65)), (64, 48, (48, 64))])
def test_crop_box_is_keras_smart_resize(height: int, width: int, size: tuple[int, int]) -> None:
    import keras

    image = np.random.default_rng(0).integers(0, 256, (height, width, 3)).astype(np.float32)
    top, left, crop_height, crop_width = crop_box(height, width, size)
    expected = keras.preprocessing.image.smart_resize(image, size, interpolation="nearest")
    ours = resize_nearest(image[top:top + crop_height, left:left + crop_width], size)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_pngs_become_grayscale_as_tensorflow_makes_them(mode: str) -> None:
    import tensorflow as tf

    buffer = io.BytesIO()
    Image.fromarray(random_pixels(64, 64, 4, 1)).convert(mode).save(buffer, "PNG")
    with open_image(io.BytesIO(buffer.getvalue()), "x.png", 10**6) as image:
        image.load()
        ours = as_array(to_color_mode(image, "grayscale"), "grayscale")
    np.testing.assert_array_equal(ours, tf.io.decode_png(buffer.getvalue(), channels=1).numpy())


def test_only_keras_formats_open_and_only_below_the_limit() -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(10, 20, 3, 0)).save(buffer, "TIFF")
    with pytest.raises(ImageDecodeError, match="not a BMP, GIF, JPEG or PNG image"):
        open_image(io.BytesIO(buffer.getvalue()), "x.jpg", 10**6)
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(10, 20, 3, 0)).save(buffer, "PNG")
    with pytest.raises(ImageDecodeError, match="20x10 is 200 pixels, over the limit of 199"):
        open_image(io.BytesIO(buffer.getvalue()), "", 199)
    assert open_image(io.BytesIO(buffer.getvalue()), "", 200).size == (20, 10)
