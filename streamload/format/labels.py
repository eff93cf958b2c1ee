"""Class-label facts gathered while a build streams its target array, chunk by chunk.

Readers (one-hot encoding, the model's output layer) rely on labels lying in ``[0, num_classes)``;
a label outside that range fails the build, naming the source, the split and the sample, instead
of failing a training run hours later. Min and max come from each chunk with two vectorised
reductions, so no second pass over the data is needed.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidOptionError, LabelRangeError
from .manifest import ArraySpec, LabelInfo


def is_class_label(spec: ArraySpec) -> bool:
    """Integer scalars per sample are class labels; floats (regression) and vectors are not."""
    return np.dtype(spec.dtype).kind in "iu" and spec.shape == ()


class LabelTracker:
    """Range of the labels seen so far, checked against a class count when one is known."""

    def __init__(self, num_classes: int | None, class_names: tuple[str, ...] | None = None,
                 names_from: str = "") -> None:
        if num_classes is not None and class_names is not None and len(class_names) != num_classes:
            raise InvalidOptionError(f"--num-classes is {num_classes}, but {names_from} names "
                                     f"{len(class_names)} classes")
        self.num_classes = num_classes if num_classes is not None else (len(class_names) if class_names else None)
        self.class_names = class_names
        self.minimum: int | None = None
        self.maximum: int | None = None

    def update(self, labels: np.ndarray, where: str, first_sample: int) -> None:
        """Take one chunk's labels; ``where`` and ``first_sample`` locate them in error messages."""
        if not labels.size:
            return
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (self.num_classes is not None and high >= self.num_classes):
            outside = (labels < 0) if self.num_classes is None else ((labels < 0) | (labels >= self.num_classes))
            index = int(np.argmax(outside))  # the first offending sample, only computed on failure
            bad, position = int(labels[index]), first_sample + index
            allowed = f"[0, {self.num_classes})" if self.num_classes is not None else "[0, num_classes)"
            raise LabelRangeError(f"{where}: label {bad} at sample {position} lies outside the class range "
                                  f"{allowed}; fix the labels or pass the right --num-classes (for regression, "
                                  f"store the targets as floats)")
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def info(self) -> LabelInfo | None:
        """What the manifest records; None when there is no class count to state (no samples, none given)."""
        num_classes = self.num_classes if self.num_classes is not None else (
            None if self.maximum is None else self.maximum + 1)
        if num_classes is None:
            return None
        return LabelInfo(num_classes=num_classes, minimum=self.minimum, maximum=self.maximum,
                         class_names=self.class_names)
