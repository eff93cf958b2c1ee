"""Tests for streamload.images.randomness: per-sample draws from (seed, epoch, index) alone."""

from __future__ import annotations

import numpy as np

from streamload.images.options import INCEPTION_RATIO, INCEPTION_SCALE
from streamload.images.randomness import Box, _central_box, draw, random_resized_box, sample_generator

CROP = (INCEPTION_SCALE, INCEPTION_RATIO)


def test_the_generator_is_philox_keyed_by_seed_counted_by_epoch_and_index() -> None:
    first = sample_generator(7, 2, 31).random(4)
    np.testing.assert_array_equal(first, sample_generator(7, 2, 31).random(4))
    for other in (sample_generator(8, 2, 31), sample_generator(7, 3, 31), sample_generator(7, 2, 32),
                  sample_generator(7, 31, 2)):
        assert not np.array_equal(first, other.random(4))
    assert isinstance(sample_generator(-1, 0, 0).bit_generator, np.random.Philox)  # any int seed


def test_draws_do_not_depend_on_what_was_drawn_before() -> None:
    expected = [draw(1, 0, index, 300, 400, CROP, True) for index in range(50)]
    assert [draw(1, 0, index, 300, 400, CROP, True) for index in reversed(range(50))][::-1] == expected
    flips = [draws.flip for draws in expected]
    assert 10 < sum(flips) < 40  # a fair coin
    assert draw(1, 0, 0, 300, 400, None, False) == (None, False)
    assert all(draw(1, 0, index, 300, 400, None, True).box is None for index in range(5))
    assert [draw(1, 0, index, 300, 400, CROP, False).box for index in range(50)] == [d.box for d in expected]


def test_random_boxes_lie_inside_and_follow_the_ranges() -> None:
    areas, ratios = [], []
    for index in range(400):
        box = random_resized_box(sample_generator(3, 0, index), 300, 400, *CROP)
        assert 0 <= box.top and box.top + box.height <= 300 and 0 <= box.left and box.left + box.width <= 400
        areas.append(box.height * box.width / (300 * 400))
        ratios.append(box.width / box.height)
    assert 0.07 <= min(areas) < 0.2 and max(areas) > 0.8
    assert 0.7 < min(ratios) < 0.85 and 1.2 < max(ratios) < 1.4


def test_a_crop_that_never_fits_falls_back_to_a_centred_one() -> None:
    box = random_resized_box(sample_generator(0, 0, 0), 10, 1000, (0.9, 1.0), (1.0, 1.0))  # square, 90% area
    assert box == _central_box(10, 1000, (1.0, 1.0)) == Box(0, 495, 10, 10)
    assert _central_box(1000, 10, (0.5, 2.0)) == Box(490, 0, 20, 10)
    assert _central_box(100, 120, (0.5, 2.0)) == Box(0, 0, 100, 120)
