"""Per-sample augmentation draws that are a pure function of ``(seed, epoch, sample index)``.

Each sample gets its own counter-based generator, numpy's Philox keyed by the seed with the counter
set from the epoch and the sample index, as Grain draws its per-record randomness. Nothing is shared
between samples, so a batch's crops and flips are the same whatever the thread or worker count, the
order the samples are decoded in, or where a resumed run starts; FFCV and DALI draw from a generator
shared by their decode threads, and are not reproducible (ffcv#392).

The crop is Inception's random-resized crop as torchvision draws it (area fraction uniform in
``scale``, aspect ratio log-uniform in ``ratio``, ten tries, then a centred crop of the nearest allowed
ratio); the flip is drawn first, and drawn whether or not flips are on, so neither the crop's tries nor
the flip option move the other's draws.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .options import Range

_STREAM = 0x5EED_DEC0DE  # the second key word: these draws are their own stream, apart from other uses of seed


class Box(NamedTuple):
    """A region of an image: top row, left column, height, width."""

    top: int
    left: int
    height: int
    width: int


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's draws: Philox keyed by ``seed``, counter ``(epoch, index, 0, 0)``."""
    key = np.array([seed % 2**64, _STREAM], dtype=np.uint64)
    counter = np.array([epoch % 2**64, index % 2**64, 0, 0], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(counter=counter, key=key))


def random_resized_box(rng: np.random.Generator, height: int, width: int, scale: Range, ratio: Range) -> Box:
    """Inception's random crop of a ``height`` x ``width`` image (torchvision's algorithm)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return Box(top, left, crop_height, crop_width)
    return _central_box(height, width, ratio)


def _central_box(height: int, width: int, ratio: Range) -> Box:
    """The fallback: the whole image, cut to the nearest aspect ratio in ``ratio``, centred."""
    crop_height, crop_width = height, width
    if width / height < ratio[0]:
        crop_height = max(1, min(height, int(round(width / ratio[0]))))
    elif width / height > ratio[1]:
        crop_width = max(1, min(width, int(round(height * ratio[1]))))
    return Box((height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width)


class Draws(NamedTuple):
    """What augmentation decided for one sample: its crop (None: the whole image) and whether it is mirrored."""

    box: Box | None
    flip: bool


def draw(seed: int, epoch: int, index: int, height: int, width: int,
         crop: tuple[Range, Range] | None, horizontal_flip: bool) -> Draws:
    """The crop and flip of sample ``index`` in ``epoch``, for an image of ``height`` x ``width`` at full size."""
    if crop is None and not horizontal_flip:
        return Draws(None, False)
    rng = sample_generator(seed, epoch, index)
    flip = bool(rng.random() < 0.5) and horizontal_flip  # drawn either way: the crop is the same with or without flips
    box = random_resized_box(rng, height, width, *crop) if crop is not None else None
    return Draws(box, flip)
