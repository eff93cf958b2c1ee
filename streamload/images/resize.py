"""``tf.image.resize(antialias=False)`` re-implemented in numpy, bit for bit, fast enough to run per image.

TensorFlow's bilinear kernel (``resize_bilinear_op.cc``, half-pixel centres) computes, per output pixel
and in float32 from the input cast to float, ``top = tl + (tr - tl) * dx``, ``bottom = bl + (br - bl) * dx``
and ``top + (bottom - top) * dy``. ``top`` and ``bottom`` depend only on a source row and an output
column, so :func:`resize_bilinear` interpolates each source row the output reads across once, then blends
rows; the float32 operations are TensorFlow's, in its order, so the result is its own bit for bit.

What makes it fast (each step timed by hand side by side against the previous version while writing it,
on the benchmark's photo-like JPEGs resized to 224x224; :mod:`benchmarks.images_bench` has the totals):

* rows the output never reads are dropped before anything else (a 500-row image shrunk to 224 reads
  at most 448 of them);
* every array is handled as (rows, width x channels), so numpy's inner loops run over whole rows; with
  the channel axis last and separate, a broadcast ``dx`` made numpy loop three values at a time, several
  times slower;
* gathers stay uint8 (``np.take`` with ``mode="clip"`` into a buffer: the default mode buffers its output),
  and only the left samples are cast; ``right - left`` casts the right ones inside the subtraction;
* the working arrays are per-thread buffers reused from image to image: a fresh megabyte array costs
  its page faults each time, a large share of the resize;
* the rows and columns an image size reads are computed once per size, for up to ``SIZES_CACHED`` sizes
  (photos 200-1000 px a side have some 800 widths; with 256 kept, about every other image of the
  benchmark's set computed them again), their indices as int32 to halve what that keeps.

A horizontal flip reverses the output columns' weights instead of copying the result back to front.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

SCRATCH_MAX_BYTES = 1 << 24  # a per-thread buffer is kept up to 16 MiB (a 1000x1000 photo as float32: 12 MB)
_SCRATCH = threading.local()
SIZES_CACHED = 1024  # image heights and widths whose rows and columns are kept (each ~8-13 KB at 224)


def thread_buffer(slot: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """A ``shape`` array of this thread's, reused by the next image (its old contents are garbage)."""
    size = shape[0] * shape[1]
    buffer = getattr(_SCRATCH, slot, None)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = np.empty(size, dtype)
        if buffer.nbytes <= SCRATCH_MAX_BYTES:
            setattr(_SCRATCH, slot, buffer)
    return buffer[:size].reshape(shape)


def axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index and the weight of the upper one, per output index (TF's kernel)."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.intp)
    return lower, upper, (position - floor).astype(np.float32)


@lru_cache(maxsize=SIZES_CACHED)
def _rows(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct source rows the output reads, where each output row's lower and upper rows are among
    them, and each output row's weight (as a column, to broadcast over a row)."""
    lower, upper, weight = axis_weights(in_size, out_size)
    read = np.zeros(in_size, bool)  # a mask, not np.unique's sort: each image size computes this afresh
    read[lower] = read[upper] = True
    position = (np.cumsum(read) - 1).astype(np.int32)  # a read row's place among the read rows
    return np.flatnonzero(read).astype(np.int32), position[lower], position[upper], weight[:, None].copy()


@lru_cache(maxsize=SIZES_CACHED)
def _columns(in_size: int, out_size: int, channels: int, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left and right source index and the right one's weight, per output value of a (width x channels) row."""
    left, right, weight = (part[::-1] if flip else part for part in axis_weights(in_size, out_size))
    lanes = np.arange(channels, dtype=np.int32)
    return (left[:, None].astype(np.int32) * channels + lanes).ravel(), \
        (right[:, None].astype(np.int32) * channels + lanes).ravel(), np.repeat(weight, channels)


def resize_bilinear(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None,
                    flip: bool = False) -> np.ndarray:
    """``tf.image.resize(image, size, "bilinear", antialias=False)`` of an (H, W, C) array, as float32.

    ``out``, if given, receives the result (an output batch's slot, saving a copy); ``flip`` mirrors it
    left to right (``tf.image.flip_left_right`` of the result, computed as cheaply as the resize itself).
    """
    height, width, channels = image.shape
    if image.dtype != np.uint8:
        image = image.astype(np.float32)  # TensorFlow casts any other input to float before interpolating
    rows, top_row, bottom_row, dy = _rows(height, size[0])
    left, right, dx = _columns(width, size[1], channels, flip)
    source = image.reshape(height, width * channels)  # a view, also of a crop (its rows are contiguous)
    if len(rows) < height or not source.flags.c_contiguous:
        buffer = thread_buffer("source", (len(rows), source.shape[1]), image.dtype)
        source = np.take(source, rows, axis=0, mode="clip", out=buffer)
    across = _across(source, left, right, dx)
    row_width = size[1] * channels
    top = np.take(across, top_row, axis=0, mode="clip", out=thread_buffer("top", (size[0], row_width), np.float32))
    bottom = np.take(across, bottom_row, axis=0, mode="clip", out=thread_buffer("bottom", top.shape, np.float32))
    bottom -= top
    bottom *= dy
    result = output_slot(out, (*size, channels))
    np.add(top, bottom, out=result.reshape(top.shape))
    return delivered(result, out)


def output_slot(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Where a resize writes: ``out`` itself when it is a C-contiguous float32 array of ``shape`` (a batch's
    slot, saving a copy), else a new array."""
    fits = out is not None and out.flags.c_contiguous and out.shape == shape and out.dtype == np.float32
    return out if fits else np.empty(shape, np.float32)


def delivered(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A resize's answer: ``result``, or ``out`` with ``result`` copied in when it was written elsewhere."""
    if out is None:
        return result
    if result is not out:
        out[...] = result
    return out


def _across(source: np.ndarray, left: np.ndarray, right: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each source row interpolated across, ``left + (right - left) * dx`` in float32: TF's top or bottom."""
    shape = (source.shape[0], len(left))
    gathered = thread_buffer("gathered", shape, source.dtype)
    across = thread_buffer("across", shape, np.float32)
    step = thread_buffer("step", shape, np.float32)
    np.copyto(across, np.take(source, left, axis=1, mode="clip", out=gathered), casting="unsafe")
    np.subtract(np.take(source, right, axis=1, mode="clip", out=gathered), across, out=step)
    step *= dx
    across += step
    return across


@lru_cache(maxsize=256)
def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """TF2's nearest-neighbour source index per output index: floor((i + 0.5) * in / out), in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = np.floor((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale)
    return np.minimum(position, in_size - 1).astype(np.intp)


def resize_nearest(image: np.ndarray, size: tuple[int, int], flip: bool = False) -> np.ndarray:
    """``tf.image.resize(image, size, "nearest")`` of an (H, W, C) array (TF2: half-pixel centres), mirrored
    left to right when ``flip``."""
    columns = _nearest_indices(image.shape[1], size[1])
    return image[_nearest_indices(image.shape[0], size[0])][:, columns[::-1] if flip else columns]


RESIZERS = {"bilinear": resize_bilinear, "nearest": resize_nearest}  # Keras' interpolation names
