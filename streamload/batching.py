"""Turning gathered samples into what a model consumes: float32 in [0, 1], channel axis, labels.

Shared by the Keras generator and the tf.data path so both produce identical batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import InvalidOptionError

Batch = tuple[np.ndarray, np.ndarray] | np.ndarray
Transform = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass(frozen=True)
class BatchOptions:
    """What a batch looks like; validated so a bad option fails at construction, not mid-epoch."""

    to_fit: bool = True  # return (x, y); False returns x alone and never reads the labels
    one_hot: bool = True  # one-hot float32 labels (as the tutorial); False gives sparse int32 labels
    num_classes: int = 10
    normalize: bool = True  # integer pixels -> float32 in [0, 1]; False keeps the stored dtype
    channel_axis: bool = True  # (28, 28) -> (28, 28, 1), what Conv2D expects

    def __post_init__(self) -> None:
        if self.one_hot and self.num_classes <= 0:
            raise InvalidOptionError(f"num_classes must be positive for one-hot labels, got {self.num_classes}")

    @property
    def keys(self) -> tuple[str, ...]:
        return ("x", "y") if self.to_fit else ("x",)


def scale_to_unit(x: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] for integer data (divided by the dtype's maximum), float32 otherwise."""
    if np.issubdtype(x.dtype, np.integer):
        return np.divide(x, np.float32(np.iinfo(x.dtype).max), dtype=np.float32)  # exactly x / 255, as references do
    return x.astype(np.float32, copy=False)


def encode_labels(y: np.ndarray, options: BatchOptions) -> np.ndarray:
    if not options.one_hot:
        return y.astype(np.int32, copy=False)
    if y.size and (y.min() < 0 or y.max() >= options.num_classes):
        raise InvalidOptionError(f"labels must lie in [0, {options.num_classes}) for one-hot encoding, "
                                 f"found {y.min()}..{y.max()}; pass num_classes")
    return np.eye(options.num_classes, dtype=np.float32)[y]


def finish_batch(arrays: Mapping[str, np.ndarray], options: BatchOptions,
                 transform: Transform | None = None) -> Batch:
    """The model-ready batch from raw gathered arrays (fresh, C-contiguous, never a memmap view)."""
    x = scale_to_unit(arrays["x"]) if options.normalize else arrays["x"]
    if options.channel_axis and x.ndim == 3:
        x = x[..., np.newaxis]
    y = encode_labels(arrays["y"], options) if options.to_fit else None
    if transform is not None:
        x, y = transform(x, y)
    x = np.ascontiguousarray(x)
    return (x, np.ascontiguousarray(y)) if options.to_fit else x
