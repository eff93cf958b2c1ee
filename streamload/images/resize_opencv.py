"""The read path's bilinear resize: OpenCV's float32 kernel when OpenCV is installed, else :mod:`.resize`'s.

Why a second resize: decoding on read spends a third of each image's CPU in the numpy resize, which
reproduces ``tf.image.resize`` bit for bit in about ten whole-array passes (0.63-0.67 ms a 500x375 photo
to 224x224, one thread), while TensorFlow's fused kernel takes 0.26 ms and Keras' pipeline uses it.
OpenCV's ``INTER_LINEAR`` on float32 is the same interpolation (half-pixel centres, no antialias, edges
clamped) in one compiled pass: 0.15 ms with the uint8-to-float32 conversion included, measured side by side
on the image benchmark's photos. Its arithmetic is ``a * (1 - w) + b * w`` where TensorFlow computes
``a + (b - a) * w`` and finds source positions in float32 where OpenCV uses double, so values differ:
at most 0.005 of 0..255 on those photos; on random pixels (the worst case) 0.018 for sides up to 700 px,
0.05 at 3,000 and 0.11 at 8,000 (float32 positions lose precision as they grow; :func:`tolerance` is
what the tests allow), far inside the JPEG IDCT difference Keras' own decoders show. Builds of shards
keep the exact numpy resize: their pixels are rounded to uint8, where a last-bit difference could move a
value by one.

OpenCV is set to run its functions in the calling thread (``cv2.setNumThreads(1)``, as albumentations does
on import) when this module first imports it: the decoding threads already fill the cores, and OpenCV's own
pool, woken for each resize, spun for the rest: one decoding thread spent 2.0-2.4 ms of CPU per benchmark
photo with the pool against 1.35-1.56 ms without it at the same images per second, and two spent
1.47-1.91 ms against 1.41-1.44 ms (``decode_batch``, 640 photos, 3 rounds each, measured side by side).
A program that wants OpenCV's pool for its own work sets its thread count again after the first resize.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .resize import delivered, output_slot, resize_bilinear, thread_buffer

TOLERANCE_PER_1000_PX = 0.025  # of 0..255 pixel values, per 1,000 pixels of the input's longer side


def tolerance(height: int, width: int) -> float:
    """The largest difference from ``tf.image.resize`` the tests allow for an input of this size."""
    return TOLERANCE_PER_1000_PX * max(1.0, max(height, width) / 1000)


@lru_cache(maxsize=1)
def import_opencv() -> Any:
    """The cv2 module, set to one thread, or None when OpenCV is not installed (the exact numpy resize runs then)."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)  # the decoding threads are the parallelism (module docstring)
    return cv2


def resize_bilinear_fast(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None,
                         flip: bool = False) -> np.ndarray:
    """``tf.image.resize(image, size, "bilinear", antialias=False)`` of an (H, W, C) array as float32, within
    :func:`tolerance` (OpenCV's kernel), or bit for bit when OpenCV is missing; arguments as
    :func:`.resize.resize_bilinear`'s."""
    cv2 = import_opencv()
    if cv2 is None:
        return resize_bilinear(image, size, out=out, flip=flip)
    height, width, channels = image.shape
    source = thread_buffer("opencv", (height, width * channels), np.float32).reshape(image.shape)
    mirrored = cv2.flip(image, 1).reshape(image.shape) if flip else image  # resizing commutes with the mirror
    np.copyto(source, mirrored, casting="unsafe")  # (from numpy's mirrored view: 12x the time, measured)
    target = output_slot(out, (*size, channels))  # (OpenCV writes into dst only if it fits exactly)
    cv2.resize(source, (size[1], size[0]), dst=target, interpolation=cv2.INTER_LINEAR)
    return delivered(target, out)
