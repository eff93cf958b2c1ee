"""Decoding and resizing one image file the way ``keras.utils.image_dataset_from_directory`` does, at build time.

The pixel arithmetic (TensorFlow's resize in :mod:`streamload.images.resize`; Keras' aspect-ratio crop,
the colour modes, the format-restricted and size-limited Pillow open in :mod:`streamload.images.pixels`) is
shared with the read-time decoder (:mod:`streamload.images`); this module adds what only a build needs:
opening files safely, storing uint8, and the worker functions. Keras keeps float pixels; shards keep uint8,
rounded half up, so a stored pixel is within 0.5 of Keras' value. An image already at the target size is
stored as decoded.

Decoding is Pillow's. PNG, BMP and GIF pixels equal TensorFlow's; JPEG pixels equal
``tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")``, while Keras' default (the fast IDCT) differs
by a few levels (the read-time decoder, :mod:`streamload.images`, matches it exactly). Grayscale from
colour is TensorFlow's: colour JPEGs are decoded straight to luma, colour PNGs get libpng's luma (BMPs and
GIFs, which TensorFlow will not make grayscale, Pillow's); 16-bit PNGs keep their high byte.

Only Keras' formats are ever decoded (:func:`streamload.images.pixels.open_image`); a PNG named ``.jpg`` still
decodes, as it does in Keras, whose ``decode_image`` also reads any of the four by content. Only regular
files are opened (a FIFO would block the build forever, a device would be read without end), and an image
of more than ``max_pixels`` pixels is refused from its header, in every decoding process at once.

The worker functions at the bottom run in child processes; Pillow is imported on first use so that
``import streamload`` never needs it.
"""

from __future__ import annotations

import os
import stat
from typing import IO, NamedTuple

import numpy as np

from ...errors import ImageDecodeError, StreamloadError
from ...images.pixels import (  # noqa: F401 - IMAGE_EXTENSIONS, import_pillow: re-exported for images.py
    COLOR_MODES,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    as_array,
    crop_box,
    import_pillow,
    open_image,
    to_color_mode,
)
from ...images.resize import resize_bilinear

_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def fit_image(pixels: np.ndarray, size: tuple[int, int], crop_to_aspect_ratio: bool) -> np.ndarray:
    """Crop (optionally) and resize an (H, W, C) uint8 image to ``size``; exact when no resize is needed."""
    if crop_to_aspect_ratio:
        top, left, height, width = crop_box(pixels.shape[0], pixels.shape[1], size)
        pixels = pixels[top:top + height, left:left + width]
    if pixels.shape[:2] == tuple(size):
        return pixels
    return (resize_bilinear(pixels, size) + np.float32(0.5)).astype(np.uint8)  # values lie in [0, 255]


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


def read_pixels(path: str, color_mode: str, *, quick: bool = False,
                max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """Decode the first frame of ``path`` into an (H, W, C) uint8 array in ``color_mode``.

    ``quick`` only checks that the file decodes, returning None: JPEGs are decoded at 1/8 scale,
    which still reads the whole entropy-coded stream, so a truncated or corrupt file fails just as
    it would at full size, for a fraction of the work.
    """
    mode = COLOR_MODES[color_mode][0]
    with open_regular(path) as file, open_image(file, path, max_pixels) as image:
        if image.format == "JPEG" and (quick or mode == "L"):
            image.draft("L" if mode == "L" else image.mode, (1, 1) if quick else image.size)
        image.load()
        if quick:
            to_color_mode(image, color_mode)
            return None
        return as_array(to_color_mode(image, color_mode), color_mode)


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
