"""Pixel arithmetic shared by the build-time image source and the read-time decoder.

Both sides must give the pixels ``keras.utils.image_dataset_from_directory`` gives, so the pieces
that decide a pixel live here, once, below both (the read path may not import from ``sources/``):

* the resizes, TensorFlow's re-implemented bit for bit, are in :mod:`streamload.images.resize` (Pillow's
  own resize antialiases when it shrinks, which Keras does not).
* :func:`crop_box` is Keras' ``smart_resize`` crop (``crop_to_aspect_ratio``), computed in float32 as
  its TensorFlow graph does.
* :func:`open_image` offers Pillow only Keras' four decoders (BMP, GIF, JPEG, PNG), chosen by content,
  and refuses an image over ``max_pixels`` from its header, before a byte of it is decoded: a PNG of one
  colour is kilobytes on disk and gigabytes decoded.
* :func:`to_color_mode` converts a decoded Pillow image to Keras' ``color_mode`` (16-bit PNGs keep their
  high byte, as TensorFlow does).

Pillow is imported on first use, so that ``import streamload`` never needs it.
"""

from __future__ import annotations

import os
import warnings
from typing import IO, Any

import numpy as np

from ..errors import ImageDecodeError, MissingDependencyError

COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}  # Keras' color_mode: Pillow mode, C
IMAGE_FORMATS = {".bmp": "BMP", ".gif": "GIF", ".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}  # Pillow's names
IMAGE_EXTENSIONS = tuple(IMAGE_FORMATS)  # what Keras' image_dataset_from_directory lists
# 64 Mi pixels (8192x8192): above every camera photo up to 61 MP, below Pillow's own warning (89.5 M).
# Decoding costs 4 to 16 bytes per pixel (Pillow's 4-byte RGB, conversions, numpy's copy; measured:
# 11 for rgb, 16 for rgba), so at most about 1 GiB per decoding process.
DEFAULT_MAX_IMAGE_PIXELS = 2**26
PILLOW_HINT = "reading image folders needs Pillow: pip install streamload[images] (or pip install pillow)"
NOT_AN_IMAGE = "not a BMP, GIF, JPEG or PNG image (the formats Keras reads)"


def import_pillow() -> Any:
    """``PIL.Image``, or a clear error saying what to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(PILLOW_HINT) from exc
    return Image


def crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of Keras' ``smart_resize``: the largest centred crop of the
    target aspect ratio, computed in float32 as its TensorFlow graph does."""
    target_height, target_width = size
    crop_height = max(min(height, int(np.float32(width * target_height) / np.float32(target_width))), 1)
    crop_width = max(min(width, int(np.float32(height * target_width) / np.float32(target_height))), 1)
    top = int(np.float32(height - crop_height) / np.float32(2))
    left = int(np.float32(width - crop_width) / np.float32(2))
    return top, left, crop_height, crop_width


def decoders_for(name: str) -> list[str]:
    """The Pillow formats offered for a file called ``name``: Keras' four, the one its extension names first
    (a name without a known extension, such as a stored record's, just gets the four)."""
    own = IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    return sorted(set(IMAGE_FORMATS.values()), key=lambda fmt: (fmt != own, fmt))


def open_image(file: IO[bytes], name: str, max_pixels: int) -> Any:
    """Pillow's image of ``file`` with Keras' decoders only, refused from its header when too large.

    Pillow picks a decoder from the first bytes, not the name, so offering every plugin would let an EPS
    file named ``cat.png`` reach Ghostscript and a TIFF named ``.jpg`` decode though Keras refuses it.
    """
    image_module = import_pillow()
    with warnings.catch_warnings():  # Pillow's bomb warning names no file; the size check below does
        warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
        try:
            image = image_module.open(file, formats=decoders_for(name))
        except image_module.UnidentifiedImageError:
            raise ImageDecodeError(NOT_AN_IMAGE) from None
    check_pixel_count(image.size[0], image.size[1], max_pixels, image.close)
    return image


def check_pixel_count(width: int, height: int, max_pixels: int, cleanup: Any = None) -> None:
    """Refuse an image of more than ``max_pixels`` pixels (calling ``cleanup`` first, if given)."""
    if width * height > max_pixels:
        if cleanup is not None:
            cleanup()
        raise ImageDecodeError(f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
                               "(max_image_pixels, --max-image-pixels)")


# libpng's rgb_to_gray as TensorFlow's decode_png(channels=1) sets it (0.299, 0.587): 15-bit weights, truncated
PNG_GRAY_WEIGHTS = (9797, 19234, 3737)


def to_color_mode(image: Any, color_mode: str) -> Any:
    """A loaded Pillow image in Keras' ``color_mode`` (16-bit samples keep their high byte, as in TensorFlow).

    A colour PNG made grayscale gets libpng's luma, as in TensorFlow, not Pillow's rounded ITU-R 601
    one (a level apart in half the pixels); TensorFlow refuses grayscale BMPs and GIFs, Pillow's luma it is.
    """
    image_module = import_pillow()
    mode = COLOR_MODES[color_mode][0]
    if image.mode.startswith("I;16"):
        image = image_module.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    if mode == "L" and image.format == "PNG" and image.mode in ("RGB", "RGBA", "P", "PA"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)
        luma = (rgb @ np.array(PNG_GRAY_WEIGHTS, dtype=np.uint32)) >> 15
        return image_module.fromarray(luma.astype(np.uint8), "L")
    return image if image.mode == mode else image.convert(mode)


def as_array(image: Any, color_mode: str) -> np.ndarray:
    """A Pillow image already in ``color_mode`` as an (H, W, C) uint8 array (grayscale gets its C of 1)."""
    pixels = np.asarray(image)
    return pixels.reshape(*pixels.shape[:2], COLOR_MODES[color_mode][1])
