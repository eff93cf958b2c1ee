"""Tests for streamload.images.resize: TensorFlow's bilinear and nearest resizes, bit for bit, over many odd
sizes up and down, 1, 3 and 4 channels, crops (views), flips, and in threads sharing nothing."""

from __future__ import annotations

import numpy as np
import pytest
from image_fixtures import RESIZE_SHAPES, odd_resize_shapes, random_pixels, resized_in_threads, tensorflow_resize

from streamload.images.resize import resize_bilinear, resize_nearest


@pytest.mark.parametrize(("in_shape", "size"), RESIZE_SHAPES + odd_resize_shapes(48))
def test_resize_bilinear_equals_tensorflow(in_shape: tuple[int, int, int], size: tuple[int, int]) -> None:
    image = random_pixels(*in_shape, seed=sum(in_shape) + sum(size))
    expected = tensorflow_resize(image, size)
    ours = resize_bilinear(image, size)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(resize_bilinear(image, size, flip=True), expected[:, ::-1])


def test_resize_bilinear_of_a_crop_and_of_floats_equals_tensorflow() -> None:
    image = random_pixels(301, 403, 3, 5)
    crop = image[17:250, 31:390]  # a view: rows not contiguous with each other
    expected = tensorflow_resize(np.ascontiguousarray(crop), (111, 97))
    np.testing.assert_array_equal(resize_bilinear(crop, (111, 97)), expected)
    floats = np.random.default_rng(5).uniform(-3, 300, (45, 61, 4))  # float64: TensorFlow interpolates in float32
    np.testing.assert_array_equal(resize_bilinear(floats, (70, 29)), tensorflow_resize(floats, (70, 29)))


def test_resize_bilinear_writes_into_out() -> None:
    image = random_pixels(333, 517, 3, 0)
    expected = tensorflow_resize(image, (97, 101))
    out = np.zeros((2, 97, 101, 3), np.float32)
    assert np.shares_memory(resize_bilinear(image, (97, 101), out=out[1]), out)
    np.testing.assert_array_equal(out[1], expected)
    assert not out[0].any()
    strided = np.zeros((97, 202, 3), np.float32)[:, ::2]  # not contiguous: written all the same
    resize_bilinear(image, (97, 101), out=strided)
    np.testing.assert_array_equal(strided, expected)


def test_threads_share_no_working_arrays() -> None:
    """Each thread reuses its own buffers: images of different sizes resized at once equal TensorFlow's."""
    for ours, theirs, _ in resized_in_threads(resize_bilinear):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("in_shape", "size"), RESIZE_SHAPES + odd_resize_shapes(12))
def test_resize_nearest_equals_tensorflow(in_shape: tuple[int, int, int], size: tuple[int, int]) -> None:
    image = random_pixels(*in_shape, seed=sum(in_shape))
    expected = tensorflow_resize(image, size, "nearest")
    np.testing.assert_array_equal(resize_nearest(image, size), expected)
    np.testing.assert_array_equal(resize_nearest(image, size, flip=True), expected[:, ::-1])
