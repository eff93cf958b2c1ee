"""What one sample of an array is: its dtype and shape. Sources describe their arrays with it, writers and
readers check files against it, and the manifest records it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySpec:
    """Dtype and per-sample shape of one array (``x``, ``y``, a named feature...) of a split."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySpec:
        """The spec of the samples of ``array`` (its first axis counts samples)."""
        return cls(dtype=np.dtype(array.dtype).newbyteorder("=").str, shape=tuple(array.shape[1:]))
