"""A batch of stored image files decoded, cropped, resized and flipped into one float32 array, in threads.

Threads, not processes: the JPEG decoder (simplejpeg) and numpy's gathers and arithmetic release the
GIL, so threads share the batch array with no copy; ``benchmarks/decoders.py`` measured threads against
forked processes writing into shared memory (their best case) and the decoders against each other.
One pool per thread count lives for the process, so a batch costs no thread start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import ImageDecodeError, InvalidOptionError
from .decode import EncodedImage, dct_scale, decode, describe, read_header
from .options import ImageDecodeOptions
from .pixels import crop_box
from .randomness import Box, draw
from .recycle import ArrayRecycler
from .resize import resize_nearest
from .resize_opencv import resize_bilinear_fast

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_BATCHES = ArrayRecycler()  # the output arrays, reused once their batch is dropped (recycle.py says why)


def _forget_pools() -> None:
    """In a forked child (a Keras worker process): the parent's pools were copied without their threads, and
    a task sent to one would wait forever; the child starts its own on first use."""
    global _POOLS, _POOLS_LOCK
    _POOLS, _POOLS_LOCK = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` decoding threads, started on first use."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"streamload-decode{threads}")
        return _POOLS[threads]


def _scaled(box: Box, full: tuple[int, int], decoded: tuple[int, int]) -> Box:
    """``box`` of the full-size image, in the coordinates of a reduced decode of it."""
    if decoded == full:
        return box
    top, left = box.top * decoded[0] // full[0], box.left * decoded[1] // full[1]
    height = max(1, min(decoded[0] - top, round(box.height * decoded[0] / full[0])))
    width = max(1, min(decoded[1] - left, round(box.width * decoded[1] / full[1])))
    return Box(top, left, height, width)


def _region(image: EncodedImage, box: Box | None, options: ImageDecodeOptions) -> Box:
    """The part of the full-size image the output shows: the random crop, Keras' centred crop, or all of it."""
    if box is not None:
        return box
    if options.crop_to_aspect_ratio:
        return Box(*crop_box(image.height, image.width, options.image_size))
    return Box(0, 0, image.height, image.width)


def decode_one(record: Any, index: int, epoch: int, seed: int, options: ImageDecodeOptions, out: np.ndarray) -> None:
    """Sample ``index``'s record decoded into ``out`` (H, W, C float32); every failure an ImageDecodeError."""
    try:
        image = read_header(record, options.max_pixels)
        draws = draw(seed, epoch, index, image.height, image.width, options.crop_ranges, options.horizontal_flip)
        region = _region(image, draws.box, options)
        scale = dct_scale(region.height, region.width, options.image_size) if options.decodes_reduced else 1
        pixels = decode(image, options.color_mode, scale, options.max_pixels)
    except Exception as error:  # noqa: BLE001 - decoders raise ValueError, OSError, SyntaxError, EOFError...
        refusal = ImageDecodeError(f"sample {index}: cannot decode its image ({describe(error)})")
        refusal.sample, refusal.reason = index, describe(error)
        raise refusal from None
    decoded = pixels.shape[:2]
    if draws.box is None and options.crop_to_aspect_ratio:
        region = Box(*crop_box(decoded[0], decoded[1], options.image_size))  # Keras crops what it decoded
    else:
        region = _scaled(region, (image.height, image.width), decoded)
    crop = pixels[region.top:region.top + region.height, region.left:region.left + region.width]
    if options.interpolation == "bilinear":
        resize_bilinear_fast(crop, options.image_size, out=out, flip=draws.flip)
    else:
        out[...] = resize_nearest(crop, options.image_size, flip=draws.flip)


def decode_batch(records: Sequence[Any], sample_indices: Sequence[int], epoch: int, seed: int,
                 options: ImageDecodeOptions, threads: int = 1) -> np.ndarray:
    """The records (bytes-like, e.g. memoryviews into one read buffer) of samples ``sample_indices`` as a float32
    (B, H, W, C) batch in Keras' value range (0..255), decoded ``threads`` at a time.

    Each sample's crop and flip depend only on ``(seed, epoch, its index)``, so the batch is the same
    whatever ``threads`` is or the order the records come in. A record that cannot be decoded raises
    ImageDecodeError naming its sample index (the first such, in batch order). The array is written over by a
    later batch only once nothing refers to it or to a view of it any more (:mod:`.recycle`).
    """
    if len(records) != len(sample_indices):
        raise InvalidOptionError(f"{len(records)} records for {len(sample_indices)} sample indices")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidOptionError(f"threads must be a positive integer, got {threads!r}")
    out = _BATCHES.empty(len(records), (*options.image_size, options.channels), np.float32)

    def one(position: int) -> None:
        decode_one(records[position], int(sample_indices[position]), epoch, seed, options, out[position])

    if threads == 1 or len(records) < 2:
        for position in range(len(records)):
            one(position)
    else:
        _in_threads(one, len(records), threads)
    return out


def _in_threads(task: Callable[[int], None], count: int, threads: int) -> None:
    """``task`` of positions 0..count-1 in the pool, each worker taking the next position left until none is;
    the first failure in position order is re-raised.

    A few workers rather than a future per image: timed side by side on a busy 2-core machine, batches of 64
    decoded faster than with ``pool.map`` over the images, whose every finished future wakes the waiting
    thread.
    """
    positions, lock, failures = iter(range(count)), threading.Lock(), {}

    def work(_: int) -> None:
        while True:
            with lock:
                position = next(positions, None)
            if position is None:
                return
            try:
                task(position)
            except Exception as error:  # noqa: BLE001 - re-raised below, the first in position order
                failures[position] = error

    for _ in _pool(threads).map(work, range(min(threads, count))):
        pass
    if failures:
        raise failures[min(failures)]
