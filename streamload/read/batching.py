"""Turning gathered samples into what a model consumes, the same way for every adapter.

Model inputs are multiplied by the scale the build recorded for them (see write/values.py: 1/255 for uint8
and for other integers spanning 0..255, as Keras' ``Rescaling(1/255)`` does), integers becoming
float32 in [0, 1]; an integer input with no recorded scale is refused rather than guessed (a manifest
from before scales were recorded keeps uint8 and uint16 at 1/255 and 1/65535). 2-D samples get a
channel axis, integer class labels become one-hot float32 rows (or stay sparse int32). What each
array is (model input, target, sample weight) and how many classes there are comes from the
manifest, so nothing here assumes MNIST.

Model inputs and targets of varying length are padded to the batch's longest record (read/padding.py says
how, and what masks and weights come with them); ``x`` is then a dict ``{name: padded, name_mask: mask}`` for
a functional model with those two named inputs, and a ragged target brings the sample weights that keep its
padding out of the loss. Padding each batch to its own longest record (not the dataset's) is what makes length
bucketing pay.

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
from ..options import LoaderOptions
from ..write.values import NATIVE_IMAGE_SCALES, PIXEL_SCALE_OPTION
from .decoding import DecodedImages, Where, image_input, refuse_unused_image_options
from .padding import PaddedInput, PaddedTarget, widened_to_parity

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


class BatchFinisher:
    """Built once per loader: which arrays to read and how each becomes part of the batch."""

    def __init__(self, manifest: Manifest, specs: Mapping[str, ArraySpec], options: LoaderOptions,
                 transform: Transform | None = None) -> None:
        refuse_unused_image_options(dict(specs), manifest.features, options)
        self.features = tuple(_feature(key, specs[key], options) for key in manifest.features)
        self.target = manifest.target if options.to_fit else None
        self.weights = manifest.sample_weight if options.to_fit else None
        ragged = self.target is not None and specs[self.target].ragged
        self.padded_target = PaddedTarget(options.max_length) if ragged else None
        _refuse_weights(self.weights, specs, ragged)
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
        weights = None if self.weights is None else arrays[self.weights]
        if self.padded_target is not None:
            y, weights = self.padded_target.pad(arrays[self.target], weights)
        else:
            y = self._labels(arrays[self.target])
        if self.transform is not None:
            x, y = self.transform(x, y)
        return (x, y) if weights is None else (x, y, weights)

    @property
    def decodes_images(self) -> bool:
        """Whether some input is encoded images, decoded as each batch is finished (the batch's CPU-heavy part)."""
        return any(isinstance(feature, DecodedImages) for feature in self.features)

    @property
    def pads_per_batch(self) -> bool:
        """Whether some output is padded to each batch's own length (a ragged input or target)."""
        return self.padded_target is not None or any(isinstance(f, PaddedInput) for f in self.features)

    def with_length_parity(self, batch: Batch, parity: int) -> Batch:
        """``batch`` with each padded output one padding row longer where its length's parity is not ``parity``.

        Keras' TensorFlow adapter of a ``PyDataset`` fixes the output signature from the first two batches: two
        batches of the same padded length would make the length static, and every later batch of another length
        fail. Batches of alternating parity always differ there, at the cost of at most one padded row (masked,
        or weighted 0). An input and its mask have one length, so they are widened together.
        """
        x, rest = (batch[0], batch[1:]) if isinstance(batch, tuple) else (batch, ())
        pads = {name: pad for f in self.features if isinstance(f, PaddedInput) for name, pad in f.pad_values().items()}
        if isinstance(x, dict):
            x = {name: widened_to_parity(array, parity, pads[name]) if name in pads else array
                 for name, array in x.items()}
        elif len(pads) == 1:
            x = widened_to_parity(x, parity, next(iter(pads.values())))
        if self.padded_target is not None and len(rest) == 2:
            rest = tuple(widened_to_parity(array, parity, 0) for array in rest)
        return (x, *rest) if isinstance(batch, tuple) else x

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


def _feature(key: str, spec: ArraySpec, options: LoaderOptions) -> _Feature | PaddedInput | DecodedImages:
    if spec.encoded_image:
        return image_input(key, spec, options, input_scale(key, spec) if options.normalize else None)
    if spec.ragged:
        if np.dtype(spec.dtype).kind in "iub" and options.pad_value != int(options.pad_value):
            raise InvalidOptionError(f"pad_value {options.pad_value!r} does not fit input {key!r} of {spec.dtype}")
        return PaddedInput(key, options.max_length, options.pad_value, options.mask)
    scale = input_scale(key, spec) if options.normalize else None
    return _Feature(key, scale, options.channel_axis and len(spec.shape) == 2)


def _refuse_weights(key: str | None, specs: Mapping[str, ArraySpec], ragged_target: bool) -> None:
    """Sample weights of varying length are refused (a ragged target weights its padding 0 by itself), and so are
    weights that are not one number per sample beside a ragged target (they multiply its steps' weights)."""
    if key is None:
        return
    if specs[key].ragged:
        raise InvalidOptionError(f"array {key!r} holds sample weights of varying length, which are not supported; "
                                 "a target of varying length weights its padding 0 by itself")
    if ragged_target and specs[key].shape != ():
        raise InvalidOptionError(f"array {key!r}: sample weights beside a target of varying length must be one "
                                 f"number per sample, not {specs[key].shape}")


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
