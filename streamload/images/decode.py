"""One stored image file (a record's bytes) to uint8 pixels, at full size or at a JPEG DCT scale.

JPEGs go to simplejpeg (libjpeg-turbo, GIL released while it decodes) with ``fastdct=True``: that is
TensorFlow's default IDCT, so its pixels equal ``tf.io.decode_jpeg``'s, and so Keras', bit for bit
(measured by ``benchmarks/decoders.py`` and checked by the tests; Pillow offers only the accurate IDCT,
a few levels away). Without simplejpeg installed, and for CMYK JPEGs, Pillow decodes them instead
(within that IDCT difference). PNG, BMP and GIF go to Pillow, offered only Keras' four decoders
(:func:`streamload.images.pixels.open_image`): anything else, a TIFF named ``.jpg`` say, is refused. Every
image's size is read from its header and refused over ``max_pixels`` before it is decoded.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size (:func:`dct_scale`); libjpeg-turbo's other
M/8 scales are slower than decoding at full size (``benchmarks/decoders.py`` notes), so they are never
used.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import numpy as np

from ..errors import ImageDecodeError
from .pixels import as_array, check_pixel_count, import_pillow, open_image, to_color_mode

JPEG_MAGIC = b"\xff\xd8\xff"
DCT_SCALES = (8, 4, 2)  # the reductions libjpeg-turbo decodes faster than full size
_SIMPLEJPEG_MODES = {"rgb": "RGB", "grayscale": "GRAY", "rgba": "RGBA"}
_SIMPLEJPEG_SOURCES = {"Gray", "YCbCr", "RGB"}  # header colour spaces it converts as TensorFlow does


def import_simplejpeg() -> Any:
    """The simplejpeg module, or None when it is not installed (Pillow decodes JPEGs then)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def dct_scale(height: int, width: int, size: tuple[int, int]) -> int:
    """The largest reduction (8, 4, 2, else 1) that keeps a ``height`` x ``width`` region at least ``size``."""
    return next((scale for scale in DCT_SCALES if height // scale >= size[0] and width // scale >= size[1]), 1)


class EncodedImage(NamedTuple):
    """A record whose header was read: its full size, and what decodes it."""

    data: Any  # bytes-like: the record
    height: int
    width: int
    simplejpeg: Any  # the module when it decodes this image, else None (Pillow does)


def read_header(data: Any, max_pixels: int) -> EncodedImage:
    """The image's full size from its header, refused when over ``max_pixels``; nothing is decoded yet."""
    module = import_simplejpeg() if bytes(data[:3]) == JPEG_MAGIC else None
    if module is not None:
        height, width, colorspace, _ = module.decode_jpeg_header(data)
        check_pixel_count(width, height, max_pixels)
        if colorspace in _SIMPLEJPEG_SOURCES:
            return EncodedImage(data, height, width, module)
    with open_image(io.BytesIO(data), "", max_pixels) as image:
        width, height = image.size
    return EncodedImage(data, height, width, None)


def decode(image: EncodedImage, color_mode: str, scale: int, max_pixels: int) -> np.ndarray:
    """The image's (H, W, C) uint8 pixels in ``color_mode``, reduced ``scale`` times when it is a JPEG."""
    if image.simplejpeg is not None:
        reduced = {"min_height": image.height // scale, "min_width": image.width // scale} if scale > 1 else {}
        pixels = image.simplejpeg.decode_jpeg(image.data, _SIMPLEJPEG_MODES[color_mode], fastdct=True, **reduced)
        return pixels.reshape(*pixels.shape[:2], -1)
    return _decode_with_pillow(image, color_mode, scale, max_pixels)


def _decode_with_pillow(image: EncodedImage, color_mode: str, scale: int, max_pixels: int) -> np.ndarray:
    """Pillow's decode; JPEGs drafted to ``scale`` and, for grayscale, straight to luma as TensorFlow does."""
    import_pillow()
    with open_image(io.BytesIO(image.data), "", max_pixels) as opened:
        if opened.format == "JPEG" and (scale > 1 or color_mode == "grayscale"):
            draft_size = (max(1, image.width // scale), max(1, image.height // scale))
            opened.draft("L" if color_mode == "grayscale" else opened.mode, draft_size)
        opened.load()
        return as_array(to_color_mode(opened, color_mode), color_mode)


def describe(error: BaseException) -> str:
    """One line: our own refusals' text, or a decoder error's type and text (they raise many kinds)."""
    text = " ".join(str(error).split())
    if isinstance(error, ImageDecodeError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
