"""Decoding and resizing one image the way ``keras.utils.image_dataset_from_directory`` does.

Keras decodes with TensorFlow and resizes with ``tf.image.resize(method="bilinear",
antialias=False)`` (after a centred crop to the target aspect ratio when ``crop_to_aspect_ratio``).
Pillow's own bilinear resize antialiases when it shrinks, so it would give different pixels;
:func:`resize_bilinear` re-implements TensorFlow's kernel in numpy instead (half-pixel centres, no
antialias, the same float32 operations in the same order), which reproduces ``tf.image.resize``'s
float output exactly. Keras keeps those floats; shards keep uint8, rounded half up, so a stored
pixel is within 0.5 of Keras' value. An image already at the target size is stored as decoded.

Decoding is Pillow's. PNG, BMP and GIF pixels equal TensorFlow's; JPEG pixels equal
``tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")``, while Keras' default (the fast IDCT) differs
by a few levels. Grayscale from colour is Pillow's ITU-R 601 luma (colour JPEGs are decoded straight
to luma, as TensorFlow does); 16-bit PNGs keep their high byte, as TensorFlow does.

Only Keras' formats are ever decoded. Pillow picks a decoder from a file's first bytes, not its
name, so an EPS file named ``cat.png`` would reach Ghostscript and a TIFF named ``.jpg`` would be
decoded though Keras refuses it; :func:`read_pixels` therefore offers Pillow only the BMP, GIF, JPEG
and PNG decoders (the file's own extension's first). A PNG named ``.jpg`` still decodes, as it does
in Keras, whose ``decode_image`` also reads any of the four by content. Only regular files are
opened (a FIFO would block the build forever, a device would be read without end), and an image of
more than ``max_pixels`` pixels is refused from its header, before a byte of it is decoded: a PNG of
one colour is kilobytes on disk and gigabytes decoded, in every decoding process at once.

The worker functions at the bottom run in child processes; Pillow is imported on first use so that
``import streamload`` never needs it.
"""

from __future__ import annotations

import os
import stat
import warnings
from functools import lru_cache
from typing import IO, Any, NamedTuple

import numpy as np

from ...errors import ImageDecodeError, MissingDependencyError, StreamloadError

COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}  # Keras' color_mode: Pillow mode, C
IMAGE_FORMATS = {".bmp": "BMP", ".gif": "GIF", ".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}  # Pillow's names
IMAGE_EXTENSIONS = tuple(IMAGE_FORMATS)  # what Keras' image_dataset_from_directory lists
# 64 Mi pixels (8192x8192): above every camera photo up to 61 MP, below Pillow's own warning (89.5 M).
# Decoding costs 4 to 16 bytes per pixel (Pillow's 4-byte RGB, conversions, numpy's copy; measured:
# 11 for rgb, 16 for rgba), so at most about 1 GiB per decoding process.
DEFAULT_MAX_IMAGE_PIXELS = 2**26
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))
PILLOW_HINT = "reading image folders needs Pillow: pip install streamload[images] (or pip install pillow)"


def import_pillow() -> Any:
    """``PIL.Image``, or a clear error saying what to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(PILLOW_HINT) from exc
    return Image


@lru_cache(maxsize=256)
def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index and the weight of the upper one, per output index (TF's kernel)."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.intp)
    return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``tf.image.resize(image, size, "bilinear", antialias=False)`` of an (H, W, C) array, as float32."""
    y0, y1, wy = _axis_weights(image.shape[0], size[0])
    x0, x1, wx = _axis_weights(image.shape[1], size[1])
    wx = wx[:, None]
    top, bottom = image[y0].astype(np.float32), image[y1].astype(np.float32)
    upper = top[:, x0] + (top[:, x1] - top[:, x0]) * wx
    lower = bottom[:, x0] + (bottom[:, x1] - bottom[:, x0]) * wx
    return upper + (lower - upper) * wy[:, None, None]


def crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of Keras' ``smart_resize``: the largest centred crop of the
    target aspect ratio, computed in float32 as its TensorFlow graph does."""
    target_height, target_width = size
    crop_height = max(min(height, int(np.float32(width * target_height) / np.float32(target_width))), 1)
    crop_width = max(min(width, int(np.float32(height * target_width) / np.float32(target_height))), 1)
    top = int(np.float32(height - crop_height) / np.float32(2))
    left = int(np.float32(width - crop_width) / np.float32(2))
    return top, left, crop_height, crop_width


def fit_image(pixels: np.ndarray, size: tuple[int, int], crop_to_aspect_ratio: bool) -> np.ndarray:
    """Crop (optionally) and resize an (H, W, C) uint8 image to ``size``; exact when no resize is needed."""
    if crop_to_aspect_ratio:
        top, left, height, width = crop_box(pixels.shape[0], pixels.shape[1], size)
        pixels = pixels[top:top + height, left:left + width]
    if pixels.shape[:2] == tuple(size):
        return pixels
    return (resize_bilinear(pixels, size) + np.float32(0.5)).astype(np.uint8)  # values lie in [0, 255]


def decoders_for(path: str) -> list[str]:
    """The Pillow formats offered for ``path``: Keras' four, the one its extension names first."""
    own = IMAGE_FORMATS.get(os.path.splitext(path)[1].lower())
    return sorted(set(IMAGE_FORMATS.values()), key=lambda name: (name != own, name))


def _kind(mode: int) -> str:
    return next((kind for is_kind, kind in _FILE_KINDS if is_kind(mode)), f"file type {stat.S_IFMT(mode):o}")


def open_regular(path: str) -> IO[bytes]:
    """``path`` opened for reading, if it is (or links to) a regular file; anything else is never opened.

    Opening a FIFO blocks until someone writes to it, and opening a device can act on it, so the
    type is checked with ``stat`` first; the descriptor is opened non-blocking and checked again,
    in case the file was swapped for a FIFO in between (a regular file reads the same either way).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ImageDecodeError(f"not a regular file but {_kind(mode)}; left unopened")
    file = open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK | os.O_NOCTTY))
    mode = os.fstat(file.fileno()).st_mode
    if not stat.S_ISREG(mode):
        file.close()
        raise ImageDecodeError(f"not a regular file but {_kind(mode)}; not read")
    return file


def _open_image(image_module: Any, file: IO[bytes], path: str, max_pixels: int) -> Any:
    """Pillow's image of ``file`` with Keras' decoders only, refused from its header when too large."""
    with warnings.catch_warnings():  # Pillow's bomb warning names no file; the size check below does
        warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
        try:
            image = image_module.open(file, formats=decoders_for(path))
        except image_module.UnidentifiedImageError:
            raise ImageDecodeError("not a BMP, GIF, JPEG or PNG image (the formats Keras reads)") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageDecodeError(f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
                               "(max_image_pixels, --max-image-pixels)")
    return image


def read_pixels(path: str, color_mode: str, *, quick: bool = False,
                max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """Decode the first frame of ``path`` into an (H, W, C) uint8 array in ``color_mode``.

    ``quick`` only checks that the file decodes, returning None: JPEGs are decoded at 1/8 scale,
    which still reads the whole entropy-coded stream, so a truncated or corrupt file fails just as
    it would at full size, for a fraction of the work.
    """
    image_module = import_pillow()
    mode, channels = COLOR_MODES[color_mode]
    with open_regular(path) as file, _open_image(image_module, file, path, max_pixels) as image:
        if image.format == "JPEG" and (quick or mode == "L"):
            image.draft("L" if mode == "L" else image.mode, (1, 1) if quick else image.size)
        image.load()
        if image.mode.startswith("I;16"):  # keep the high byte of 16-bit samples, as TensorFlow does
            image = image_module.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L")
        if image.mode != mode:
            image = image.convert(mode)
        if quick:
            return None
        pixels = np.asarray(image)
    return pixels.reshape(*pixels.shape[:2], channels)


class DecodeTask(NamedTuple):
    """One batch of files for a worker process, with what to make of them."""

    paths: list[str]
    image_size: tuple[int, int]
    color_mode: str
    crop_to_aspect_ratio: bool
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


Failures = list[tuple[int, str]]  # (position in the task, why the file could not be decoded)


def _reason(error: Exception) -> str:
    """One line: the text of our own refusals, the exception's type and text for Pillow's errors."""
    text = " ".join(str(error).split())
    if isinstance(error, StreamloadError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_images(task: DecodeTask) -> Failures:
    """Which files of the task fail to decode (any exception is a reason: Pillow raises many kinds)."""
    failures = []
    for position, path in enumerate(task.paths):
        try:
            read_pixels(path, task.color_mode, quick=True, max_pixels=task.max_pixels)
        except Exception as error:  # noqa: BLE001 - OSError, SyntaxError, ValueError, DecompressionBombError...
            failures.append((position, _reason(error)))
    return failures


def decode_images(task: DecodeTask) -> tuple[np.ndarray, Failures]:
    """The task's images decoded and fitted to size, stacked; and the files that failed after all."""
    channels = COLOR_MODES[task.color_mode][1]
    out = np.empty((len(task.paths), *task.image_size, channels), dtype=np.uint8)
    failures = []
    for position, path in enumerate(task.paths):
        try:
            pixels = read_pixels(path, task.color_mode, max_pixels=task.max_pixels)
            out[position] = fit_image(pixels, task.image_size, task.crop_to_aspect_ratio)
        except Exception as error:  # noqa: BLE001 - as in check_images
            failures.append((position, _reason(error)))
    return out, failures
