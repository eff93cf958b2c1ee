"""Tests for streamload.images.options: Keras' option names and values, refused in one line otherwise."""

from __future__ import annotations

import pytest

from streamload.errors import InvalidOptionError
from streamload.images import ImageDecodeOptions
from streamload.images.options import INCEPTION_RATIO, INCEPTION_SCALE


def test_defaults_are_keras_defaults() -> None:
    options = ImageDecodeOptions()
    assert (options.image_size, options.interpolation, options.color_mode) == ((256, 256), "bilinear", "rgb")
    assert not options.crop_to_aspect_ratio and not options.decodes_reduced and options.crop_ranges is None
    assert options.channels == 3 and ImageDecodeOptions(color_mode="rgba").channels == 4


def test_random_resized_crop_ranges() -> None:
    assert ImageDecodeOptions(random_resized_crop=True).crop_ranges == (INCEPTION_SCALE, INCEPTION_RATIO)
    assert INCEPTION_SCALE == (0.08, 1.0) and INCEPTION_RATIO == pytest.approx((0.75, 4 / 3))
    chosen = ImageDecodeOptions(random_resized_crop=((0.5, 1), [1, 2])).crop_ranges
    assert chosen == ((0.5, 1.0), (1.0, 2.0))
    assert ImageDecodeOptions(image_size=[3, 4]).image_size == (3, 4)


@pytest.mark.parametrize(("options", "message"), [
    ({"image_size": (0, 4)}, "image_size needs two positive integers"),
    ({"image_size": (4,)}, "image_size needs two positive integers"),
    ({"image_size": (4.0, 4)}, "image_size needs two positive integers"),
    ({"interpolation": "bicubic"}, "interpolation 'bicubic' is not supported; choose 'bilinear' or 'nearest'"),
    ({"color_mode": "cmyk"}, "color_mode 'cmyk': choose one of grayscale, rgb, rgba"),
    ({"horizontal_flip": 1}, "horizontal_flip must be True or False"),
    ({"crop_to_aspect_ratio": "yes"}, "crop_to_aspect_ratio must be True or False"),
    ({"reduced_decode": 1}, "reduced_decode must be True, False or None"),
    ({"random_resized_crop": ((0.5, 1.5), (1, 2))}, "random_resized_crop takes True, False or"),
    ({"random_resized_crop": ((0.9, 0.5), (1, 2))}, "random_resized_crop takes True, False or"),
    ({"random_resized_crop": ((0.5, 1), (0, 2))}, "random_resized_crop takes True, False or"),
    ({"random_resized_crop": ((0.5, 1), (1, float("nan")))}, "random_resized_crop takes True, False or"),
    ({"random_resized_crop": (0.5, 1)}, "random_resized_crop takes True, False or"),
    ({"random_resized_crop": True, "crop_to_aspect_ratio": True}, "both choose the crop; pass one"),
    ({"random_resized_crop": ((0.5, 1), (1, 2)), "crop_to_aspect_ratio": True}, "both choose the crop"),
    ({"max_pixels": 0}, "max_pixels must be a positive integer"),
])
def test_bad_options_are_refused_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message.replace("(", r"\(")) as caught:
        ImageDecodeOptions(**options)
    assert "\n" not in str(caught.value)


def test_reduced_decoding_is_on_for_random_crops_unless_asked_otherwise() -> None:
    """Random crops have no Keras pixels to match, so they decode at a DCT scale by default; the rest do not."""
    assert ImageDecodeOptions(random_resized_crop=True).decodes_reduced
    assert ImageDecodeOptions(random_resized_crop=((0.5, 1), (1, 2))).decodes_reduced
    assert not ImageDecodeOptions(random_resized_crop=True, reduced_decode=False).decodes_reduced
    assert not ImageDecodeOptions(crop_to_aspect_ratio=True, horizontal_flip=True).decodes_reduced
    assert ImageDecodeOptions(reduced_decode=True).decodes_reduced


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ImageDecodeOptions().image_size = (1, 1)  # type: ignore[misc]
