"""Tests for streamload.images.resize_opencv: the read path's bilinear resize within tolerance of TensorFlow's
over odd sizes up and down, 1, 3 and 4 channels, crops, flips and threads; written into a batch's slot; and
the exact numpy resize when OpenCV is missing."""

from __future__ import annotations

import numpy as np
import pytest
from image_fixtures import RESIZE_SHAPES, odd_resize_shapes, random_pixels, resized_in_threads, tensorflow_resize

from streamload.images import resize_opencv
from streamload.images.resize_opencv import import_opencv, resize_bilinear_fast, tolerance

pytest.importorskip("cv2")


def _assert_close(ours: np.ndarray, expected: np.ndarray, in_shape: tuple[int, ...]) -> None:
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=tolerance(*in_shape[:2]))


@pytest.mark.parametrize(("in_shape", "size"), RESIZE_SHAPES + odd_resize_shapes(48))
def test_within_tolerance_of_tensorflow(in_shape: tuple[int, int, int], size: tuple[int, int]) -> None:
    image = random_pixels(*in_shape, seed=sum(in_shape) + sum(size))
    expected = tensorflow_resize(image, size)
    _assert_close(resize_bilinear_fast(image, size), expected, in_shape)
    _assert_close(resize_bilinear_fast(image, size, flip=True), expected[:, ::-1], in_shape)


@pytest.mark.parametrize(("in_shape", "size"), [((2000, 3000, 3), (224, 224)), ((224, 8000, 3), (224, 224))])
def test_large_images_within_their_tolerance(in_shape: tuple[int, int, int], size: tuple[int, int]) -> None:
    """Float32 source positions lose precision as sides grow; the bound grows with them."""
    image = random_pixels(*in_shape, seed=2)
    _assert_close(resize_bilinear_fast(image, size, flip=True), tensorflow_resize(image, size)[:, ::-1], in_shape)


def test_smooth_photo_sized_images_differ_by_last_bits_only() -> None:
    """Random pixels are the hard case; on photo-sized smooth ones the difference is far below the bound."""
    rng = np.random.default_rng(3)
    image = np.cumsum(rng.integers(0, 3, (375, 500, 3)), axis=1).clip(0, 255).astype(np.uint8)
    difference = np.abs(resize_bilinear_fast(image, (224, 224)) - tensorflow_resize(image, (224, 224)))
    assert 0 < difference.max() < tolerance(375, 500) / 4  # not TensorFlow's own bits: OpenCV really ran


def test_a_crop_and_floats() -> None:
    image = random_pixels(301, 403, 3, 5)
    crop = image[17:250, 31:390]  # a view: rows not contiguous with each other
    expected = tensorflow_resize(np.ascontiguousarray(crop), (111, 97))
    _assert_close(resize_bilinear_fast(crop, (111, 97)), expected, crop.shape)
    floats = np.random.default_rng(5).uniform(-3, 300, (45, 61, 4))  # float64: TensorFlow interpolates in float32
    _assert_close(resize_bilinear_fast(floats, (70, 29)), tensorflow_resize(floats, (70, 29)), floats.shape)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_writes_into_out(channels: int) -> None:
    image = random_pixels(333, 517, channels, 0)
    expected = tensorflow_resize(image, (97, 101))
    out = np.zeros((2, 97, 101, channels), np.float32)
    assert np.shares_memory(resize_bilinear_fast(image, (97, 101), out=out[1], flip=True), out)
    _assert_close(out[1], expected[:, ::-1], image.shape)
    assert not out[0].any()
    strided = np.zeros((97, 202, channels), np.float32)[:, ::2]  # not contiguous: written all the same
    resize_bilinear_fast(image, (97, 101), out=strided)
    _assert_close(strided, expected, image.shape)
    doubles = np.zeros((97, 101, channels), np.float64)  # OpenCV would write a new array, not this one
    resize_bilinear_fast(image, (97, 101), out=doubles)
    np.testing.assert_allclose(doubles, expected, rtol=0, atol=tolerance(*image.shape[:2]))


def test_threads_share_no_working_arrays() -> None:
    for ours, theirs, image in resized_in_threads(resize_bilinear_fast):
        _assert_close(ours, theirs, image.shape)


def test_opencv_runs_in_the_calling_thread() -> None:
    """OpenCV's own pool spun beside the decoding threads (resize_opencv's docstring): it is set to one thread."""
    resize_bilinear_fast(random_pixels(333, 517, 3, 1), (97, 101))
    assert import_opencv().getNumThreads() == 1


def test_without_opencv_the_exact_resize_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without OpenCV still gets TensorFlow's values, then bit for bit."""
    monkeypatch.setattr(resize_opencv, "import_opencv", lambda: None)
    image = random_pixels(333, 517, 3, 1)
    out = np.empty((97, 101, 3), np.float32)
    resize_bilinear_fast(image, (97, 101), out=out, flip=True)
    np.testing.assert_array_equal(out, tensorflow_resize(image, (97, 101))[:, ::-1])
    assert import_opencv() is not None  # the real import was not touched
