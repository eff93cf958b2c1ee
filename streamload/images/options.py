"""What a reader makes of stored image files: Keras' names for the output, plus training augmentation.

The output options carry ``keras.utils.image_dataset_from_directory``'s names and meanings
(``image_size=(height, width)``, ``crop_to_aspect_ratio``, ``interpolation``, ``color_mode``), so a model
trained on Keras' pipeline sees the same pixels from streamload's. ``random_resized_crop`` and
``horizontal_flip`` are the Inception-style training augmentation (torchvision's ``RandomResizedCrop``
ranges), drawn per sample from ``(seed, epoch, sample index)`` (:mod:`streamload.images.randomness`).

``reduced_decode`` lets a JPEG be decoded at 1/2, 1/4 or 1/8 scale (its DCT scaling) when the region
to resize is at least that many times the target: less to decode and to resize, but the pixels are no
longer Keras' (which decodes at full size and resizes without antialias). Left as None it is on for
random-resized crops, which have no Keras pixels to match, and off otherwise; :mod:`streamload.images`
documents the measured difference. Either way a sample's pixels depend only on ``(seed, epoch, index)``:
the scale follows from its crop box and its header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidOptionError
from .pixels import COLOR_MODES, DEFAULT_MAX_IMAGE_PIXELS
from .resize import RESIZERS

Range = tuple[float, float]
INCEPTION_SCALE: Range = (0.08, 1.0)  # fraction of the image's area a random crop covers
INCEPTION_RATIO: Range = (3 / 4, 4 / 3)  # its width / height
CropOption = bool | tuple[Range, Range]


def _is_range(value: object, low: float, high: float) -> bool:
    """A pair of finite numbers with low <= first <= second <= high."""
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and low <= value[0] <= value[1] <= high)


@dataclass(frozen=True)
class ImageDecodeOptions:
    """How stored images become a float32 (B, H, W, C) batch in Keras' value range (0..255)."""

    image_size: tuple[int, int] = (256, 256)  # Keras' default
    crop_to_aspect_ratio: bool = False
    interpolation: str = "bilinear"
    color_mode: str = "rgb"
    random_resized_crop: CropOption = False  # True: Inception's ranges; or ((scale_lo, hi), (ratio_lo, hi))
    horizontal_flip: bool = False
    reduced_decode: bool | None = None  # None: on for random-resized crops, off otherwise
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        size = self.image_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2
                and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)):
            raise InvalidOptionError(f"image_size needs two positive integers (height, width), got {size!r}")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.interpolation not in RESIZERS:
            raise InvalidOptionError(f"interpolation {self.interpolation!r} is not supported; "
                                     f"choose {' or '.join(map(repr, RESIZERS))} (Keras' own)")
        if self.color_mode not in COLOR_MODES:
            raise InvalidOptionError(f"color_mode {self.color_mode!r}: choose one of {', '.join(COLOR_MODES)}")
        for name in ("crop_to_aspect_ratio", "horizontal_flip"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidOptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.reduced_decode is not None and not isinstance(self.reduced_decode, bool):
            raise InvalidOptionError(f"reduced_decode must be True, False or None, got {self.reduced_decode!r}")
        self._check_crop()
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise InvalidOptionError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")

    def _check_crop(self) -> None:
        crop = self.random_resized_crop
        if isinstance(crop, bool):
            if crop and self.crop_to_aspect_ratio:
                raise InvalidOptionError("random_resized_crop and crop_to_aspect_ratio both choose the crop; "
                                         "pass one")
            return
        if not (isinstance(crop, (tuple, list)) and len(crop) == 2 and _is_range(crop[0], 1e-6, 1.0)
                and _is_range(crop[1], 1e-6, math.inf)):
            raise InvalidOptionError("random_resized_crop takes True, False or ((scale_min, scale_max), "
                                     "(ratio_min, ratio_max)) with 0 < scale <= 1 and 0 < ratio, got "
                                     f"{crop!r}")
        if self.crop_to_aspect_ratio:
            raise InvalidOptionError("random_resized_crop and crop_to_aspect_ratio both choose the crop; pass one")

    @property
    def crop_ranges(self) -> tuple[Range, Range] | None:
        """The (scale, ratio) ranges of the random crop, or None when there is none."""
        crop = self.random_resized_crop
        if crop is False:
            return None
        if crop is True:
            return INCEPTION_SCALE, INCEPTION_RATIO
        return (float(crop[0][0]), float(crop[0][1])), (float(crop[1][0]), float(crop[1][1]))

    @property
    def decodes_reduced(self) -> bool:
        """Whether JPEGs may be decoded at a DCT scale: ``reduced_decode``, or when None, for random crops only."""
        return self.crop_ranges is not None if self.reduced_decode is None else self.reduced_decode

    @property
    def channels(self) -> int:
        """C of the output: 1 for grayscale, 3 for rgb, 4 for rgba."""
        return COLOR_MODES[self.color_mode][1]
