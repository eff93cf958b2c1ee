"""Arrays of varying length padded per batch: model inputs with their masks, targets with the sample weights
that keep their padding out of the loss, and the one-row widening Keras' TensorFlow adapter needs.

A ragged model input (token ids, audio frames) is padded to the batch's longest record (cut to ``max_length``
rows first when given) with ``pad_value`` and kept in its stored dtype, never scaled: token ids must stay
integers for an ``Embedding``. With ``mask`` (the default) the batch also holds ``<name>_mask``, a boolean
``(batch, length)`` array, True at real rows: the mask Keras layers take (``LSTM(...)(x, mask=m)``,
``GlobalAveragePooling1D()(x, mask=m)``, ``MultiHeadAttention``'s ``attention_mask`` after broadcasting),
where lengths would need turning into a mask inside the model, and where ``Embedding(mask_zero=True)`` would
forbid id 0 and say nothing for float frames.

A ragged target (a label per step: tags, the next tokens, frames to predict) is padded the same way with 0,
integers as int32 (sparse labels, what ``SparseCategoricalCrossentropy`` takes), and the batch gains sample
weights of shape ``(batch, length)``: 1 at real steps (or the sample's own weight, when the dataset has a
per-sample weight array), 0 at padded ones, so no loss counts the padding. Keras' default reduction still
divides by every step of the batch, padded ones included, as it does for any zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..format.records import Records

Where = Any  # (global sample indices, data epoch) of the batch; padding needs neither


def padded_length(records: Records, max_length: int | None) -> int:
    """The batch's longest record, cut to ``max_length``: the length every record is padded or cut to."""
    longest = int(records.lengths.max()) if len(records) else 0
    return longest if max_length is None else min(longest, max_length)


@dataclass(frozen=True)
class PaddedInput:
    """A ragged model input: padded to the batch's longest record (at most ``max_length``), with its mask."""

    key: str
    max_length: int | None
    pad_value: int | float
    mask: bool

    def outputs(self, records: Records, where: Where) -> list[tuple[str, np.ndarray]]:
        values, mask = records.padded(padded_length(records, self.max_length), self.pad_value)
        return [(self.key, values), (self.mask_key, mask)] if self.mask else [(self.key, values)]

    @property
    def mask_key(self) -> str:
        return f"{self.key}_mask"

    def pad_values(self) -> dict[str, Any]:
        """What each of this input's outputs is padded with: ``pad_value``, and False for the mask."""
        return {self.key: self.pad_value, self.mask_key: False} if self.mask else {self.key: self.pad_value}


@dataclass(frozen=True)
class PaddedTarget:
    """A ragged target: padded with 0 to the batch's longest record (at most ``max_length``), weighted 0 there."""

    max_length: int | None

    def pad(self, records: Records, sample_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The padded targets and their float32 ``(batch, length)`` weights: the mask, times each sample's weight."""
        values, mask = records.padded(padded_length(records, self.max_length), 0)
        if values.dtype.kind in "iu":
            values = values.astype(np.int32)
        weights = mask.astype(np.float32)
        if sample_weights is not None:
            weights *= np.asarray(sample_weights, np.float32).reshape(len(weights), 1)
        return values, weights


def widened_to_parity(array: Any, parity: int, pad_value: Any) -> Any:
    """``array`` one ``pad_value`` row longer along its length axis (axis 1) when that length's parity is not
    ``parity``'s; anything that is not a batch of padded rows is returned as it is."""
    if not isinstance(array, np.ndarray) or array.ndim < 2 or array.shape[1] % 2 == parity % 2:
        return array
    return np.pad(array, [(0, 0), (0, 1)] + [(0, 0)] * (array.ndim - 2), constant_values=pad_value)
