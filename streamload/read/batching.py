"""Turning gathered samples into what a model consumes, the same way for every adapter.

Model inputs are multiplied by the scale the build recorded for them (see write/values.py: 1/255 for uint8
and for other integers spanning 0..255, as Keras' ``Rescaling(1/255)`` does), integers becoming
float32 in [0, 1]; an integer input with no recorded scale is refused rather than guessed (a manifest
from before scales were recorded keeps uint8 and uint16 at 1/255 and 1/65535). 2-D samples get a
channel axis, integer class labels become one-hot float32 rows (or stay sparse int32). What each
array is (model input, target, sample weight) and how many classes there are comes from the
manifest, so nothing here assumes MNIST.

A ragged model input (samples of varying length: token ids, audio frames) is padded to the batch's
longest record (cut to ``max_length`` rows first when given) with ``pad_value``, and kept in its stored
dtype, never scaled: token ids must stay integers for an ``Embedding``. With ``mask`` (the default) the
batch also holds ``<name>_mask``, a boolean ``(batch, length)`` array, True at real rows: the mask Keras
layers take (``LSTM(...)(x, mask=m)``, ``GlobalAveragePooling1D()(x, mask=m)``, ``MultiHeadAttention``'s
``attention_mask`` after broadcasting), where lengths would need turning into a mask inside the model, and
where ``Embedding(mask_zero=True)`` would forbid id 0 and say nothing for float frames. ``x`` is then a
dict ``{name: padded, name_mask: mask}`` for a functional model with those two named inputs.
Padding each batch to its own longest record (not the dataset's) is what makes length bucketing pay.

An encoded-image input (records that are image files) is decoded into float32 ``(B, H, W, C)`` pixels at the
reader's ``image_size`` (see read/decoding.py), so the finisher is told each batch's global sample indices and
data epoch: the random crops and flips are drawn from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidOptionError
from ..format.manifest import ArraySpec, Manifest
from ..format.records import Records
from ..options import LoaderOptions
from ..write.values import NATIVE_IMAGE_SCALES, PIXEL_SCALE_OPTION
from .decoding import DecodedImages, Where, image_input, refuse_unused_image_options

Batch = Any  # x, (x, y) or (x, y, weights); x a dict of arrays when the model has several inputs
Transform = Callable[[Any, Any], tuple[Any, Any]]


class LabelOutOfRange(ValueError):
    """A label outside ``[0, num_classes)`` at ``position`` of the batch (the loader names its shard)."""

    def __init__(self, position: int, value: int, num_classes: int) -> None:
        super().__init__(position, value, num_classes)
        self.position, self.value, self.num_classes = position, value, num_classes


@dataclass(frozen=True)
class _Feature:
    key: str
    scale: float | None  # multiply by this (integers and booleans become float32 first), or None to keep it
    channel: bool  # add a trailing channel axis (2-D samples only)

    def finish(self, array: np.ndarray) -> np.ndarray:
        if self.scale is not None and (self.scale != 1 or array.dtype.kind in "iu"):  # floats, bools kept at 1
            array = array.astype(np.float32 if array.dtype.kind in "iub" else array.dtype)  # a copy to scale in place
            if self.scale != 1:
                np.multiply(array, array.dtype.type(self.scale), out=array)
        return array.reshape((*array.shape, 1)) if self.channel else array

    def outputs(self, array: np.ndarray, where: Where) -> list[tuple[str, np.ndarray]]:
        return [(self.key, self.finish(array))]


@dataclass(frozen=True)
class _Padded:
    """A ragged input: padded to the batch's longest record (at most ``max_length``), with its mask."""

    key: str
    max_length: int | None
    pad_value: int | float
    mask: bool

    def outputs(self, records: Records, where: Where) -> list[tuple[str, np.ndarray]]:
        longest = int(records.lengths.max()) if len(records) else 0
        length = longest if self.max_length is None else min(longest, self.max_length)
        values, mask = records.padded(length, self.pad_value)
        return [(self.key, values), (f"{self.key}_mask", mask)] if self.mask else [(self.key, values)]


class BatchFinisher:
    """Built once per loader: which arrays to read and how each becomes part of the batch."""

    def __init__(self, manifest: Manifest, specs: Mapping[str, ArraySpec], options: LoaderOptions,
                 transform: Transform | None = None) -> None:
        refuse_unused_image_options(dict(specs), manifest.features, options)
        self.features = tuple(_feature(key, specs[key], options) for key in manifest.features)
        self.target = manifest.target if options.to_fit else None
        self.weights = manifest.sample_weight if options.to_fit else None
        for role in (self.target, self.weights):
            if role is not None and specs[role].ragged:
                raise InvalidOptionError(f"array {role!r} holds samples of varying length; ragged targets and "
                                         "sample weights are not supported (ragged model inputs are)")
        self.transform = transform
        self.keys = tuple(key for key in (*manifest.features, self.target, self.weights) if key is not None)
        self.num_classes = self._class_count(manifest, specs, options)
        self._eye = np.eye(self.num_classes, dtype=np.float32) if self.num_classes and options.one_hot else None

    @staticmethod
    def _class_count(manifest: Manifest, specs: Mapping[str, ArraySpec], options: LoaderOptions) -> int | None:
        """Classes of an integer class-label target (None for other targets, which pass through as they are)."""
        target = manifest.target
        if not options.to_fit or target is None:
            return None
        spec = specs[target]
        if np.dtype(spec.dtype).kind not in "iu" or spec.shape != ():
            return None  # float or multi-dimensional targets (regression)
        labels = manifest.labels
        classes = options.num_classes or (labels.num_classes if labels is not None else None)
        if classes is None and options.one_hot:
            raise InvalidOptionError(f"the manifest records no class count for {target!r}; pass num_classes")
        return classes

    def __call__(self, arrays: Mapping[str, np.ndarray], indices: np.ndarray | None = None, epoch: int = 0) -> Batch:
        """The batch of gathered ``arrays``; ``indices`` (global, in batch order) and ``epoch`` seed image decoding."""
        inputs = [output for feature in self.features for output in feature.outputs(arrays[feature.key],
                                                                                     (indices, epoch))]
        x = inputs[0][1] if len(inputs) == 1 else dict(inputs)
        if self.target is None:
            return x if self.transform is None else self.transform(x, None)[0]
        y = self._labels(arrays[self.target])
        if self.transform is not None:
            x, y = self.transform(x, y)
        return (x, y) if self.weights is None else (x, y, arrays[self.weights])

    @property
    def padded_keys(self) -> tuple[str, ...]:
        """The outputs padded to a batch's own length: each ragged input and its mask."""
        return tuple(name for feature in self.features if isinstance(feature, _Padded)
                     for name in ((feature.key, f"{feature.key}_mask") if feature.mask else (feature.key,)))

    def with_length_parity(self, batch: Batch, parity: int) -> Batch:
        """``batch`` with its padded outputs one masked row longer where their length's parity is not ``parity``.

        Keras' TensorFlow adapter of a ``PyDataset`` fixes the output signature from the first two batches: two
        batches of the same padded length would make the length static, and every later batch of another length
        fail. Batches of alternating parity always differ there, at the cost of at most one padded row.
        """
        keys = self.padded_keys
        x = batch[0] if isinstance(batch, tuple) else batch
        if not keys or not isinstance(x, dict) and len(keys) != 1:
            return batch
        named = x if isinstance(x, dict) else {keys[0]: x}
        if named[keys[0]].shape[1] % 2 == parity % 2:
            return batch
        widened = {**named, **{key: _one_more_row(named[key], key.endswith("_mask"), self) for key in keys}}
        x = widened if isinstance(x, dict) else widened[keys[0]]
        return (x, *batch[1:]) if isinstance(batch, tuple) else x

    def _labels(self, y: np.ndarray) -> np.ndarray:
        classes = self.num_classes
        if classes is None:
            return y.astype(np.int32) if y.dtype.kind in "iu" and y.ndim == 1 else y
        if y.dtype.kind == "i" and len(y) and y.min() < 0:  # take() would wrap a negative index around
            position = int(np.argmin(y))
            raise LabelOutOfRange(position, int(y[position]), classes)
        if self._eye is None:  # sparse labels: one comparison, so a corrupt label is never trained on silently
            if len(y) and y.max() >= classes:
                position = int(np.argmax(y))
                raise LabelOutOfRange(position, int(y[position]), classes)
            return y.astype(np.int32)
        try:
            return self._eye.take(y, axis=0)  # raises for a label >= classes, at no cost to the others
        except IndexError:
            position = int(np.argmax(y))
            raise LabelOutOfRange(position, int(y[position]), classes) from None


def _one_more_row(array: np.ndarray, is_mask: bool, finisher: BatchFinisher) -> np.ndarray:
    pad = False if is_mask else next(f.pad_value for f in finisher.features if isinstance(f, _Padded))
    widths = [(0, 0), (0, 1)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=pad)


def _feature(key: str, spec: ArraySpec, options: LoaderOptions) -> _Feature | _Padded | DecodedImages:
    if spec.encoded_image:
        return image_input(key, spec, options, input_scale(key, spec) if options.normalize else None)
    if spec.ragged:
        if np.dtype(spec.dtype).kind in "iub" and options.pad_value != int(options.pad_value):
            raise InvalidOptionError(f"pad_value {options.pad_value!r} does not fit input {key!r} of {spec.dtype}")
        return _Padded(key, options.max_length, options.pad_value, options.mask)
    scale = input_scale(key, spec) if options.normalize else None
    return _Feature(key, scale, options.channel_axis and len(spec.shape) == 2)


def ragged_input(manifest: Manifest, specs: Mapping[str, ArraySpec]) -> str | None:
    """The first model input of varying length (the one length bucketing sorts by), or None."""
    return next((key for key in manifest.features if specs[key].ragged and not specs[key].encoded_image), None)


def input_scale(key: str, spec: ArraySpec) -> float | None:
    """The recorded scale; for a manifest without one, uint8/uint16's, floats and booleans kept, else refused."""
    dtype = np.dtype(spec.dtype)
    if spec.scale is not None:
        return spec.scale
    if dtype.kind not in "iu":
        return None
    if dtype in NATIVE_IMAGE_SCALES:
        return NATIVE_IMAGE_SCALES[dtype]
    raise InvalidOptionError(f"input {key!r} holds {dtype} values for which the build found no scale (not 0..255 "
                             f"nor 0..65535); rebuild with {PIXEL_SCALE_OPTION}, or read raw values with "
                             "normalize=False")
