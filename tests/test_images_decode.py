"""Tests for streamload.images.decode: one record's bytes to pixels, by simplejpeg or Pillow, at a DCT scale."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_fixtures import smooth_pixels
from PIL import Image

from streamload.errors import ImageDecodeError
from streamload.images import decode as decode_module
from streamload.images.decode import dct_scale, decode, read_header


def _jpeg(height: int, width: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    pixels = smooth_pixels(height, width, 3, 0)
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_dct_scale_is_the_largest_power_of_two_that_keeps_the_target() -> None:
    assert dct_scale(375, 500, (224, 224)) == 1
    assert dct_scale(448, 500, (224, 224)) == 2
    assert dct_scale(447, 900, (224, 224)) == 1
    assert dct_scale(1000, 1000, (112, 112)) == 8 and dct_scale(890, 1000, (112, 112)) == 4


@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_jpegs_equal_tensorflows_default_decoder(color_mode: str) -> None:
    import tensorflow as tf

    data = _jpeg(57, 83)
    image = read_header(memoryview(data), 10**6)
    assert (image.height, image.width) == (57, 83) and image.simplejpeg is not None
    expected = tf.io.decode_jpeg(data, channels=1 if color_mode == "grayscale" else 3).numpy()
    np.testing.assert_array_equal(decode(image, color_mode, 1, 10**6), expected)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_reduced_jpegs_are_decoded_at_the_scale_asked(scale: int) -> None:
    import tensorflow as tf

    data = _jpeg(480, 640)
    pixels = decode(read_header(data, 10**6), "rgb", scale, 10**6)
    assert pixels.shape == (480 // scale, 640 // scale, 3)
    expected = tf.io.decode_jpeg(data, ratio=scale).numpy()  # libjpeg's own scaled decode
    assert np.abs(pixels.astype(int) - expected).max() <= 2


def test_without_simplejpeg_pillow_decodes_within_the_idct_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _jpeg(64, 48)
    exact = decode(read_header(data, 10**6), "rgb", 1, 10**6)
    monkeypatch.setattr(decode_module, "import_simplejpeg", lambda: None)
    image = read_header(data, 10**6)
    assert image.simplejpeg is None
    assert np.abs(decode(image, "rgb", 1, 10**6).astype(int) - exact).max() <= 6  # measured 5
    assert decode(image, "grayscale", 2, 10**6).shape == (32, 24, 1)


def test_cmyk_jpegs_go_to_pillow() -> None:
    data = _jpeg(16, 16, "CMYK")
    image = read_header(data, 10**6)
    assert image.simplejpeg is None and decode(image, "rgb", 1, 10**6).shape == (16, 16, 3)


def test_headers_are_checked_before_decoding() -> None:
    with pytest.raises(ImageDecodeError, match="83x57 is 4,731 pixels, over the limit of 4,730"):
        read_header(_jpeg(57, 83), 4730)
    assert read_header(_jpeg(57, 83), 4731).width == 83  # the limit is inclusive
    with pytest.raises(ImageDecodeError, match="not a BMP, GIF, JPEG or PNG image"):
        read_header(b"GIF87a? no", 10**6)
