"""What model ``train.py`` builds for a dataset, decided from its manifest alone, before Keras loads.

The manifest says what each model input holds (dtype, per-sample shape) and what the target is
(class labels with their count, or float values), so the model can be sized without reading a
shard. A dataset ``train.py`` cannot train is refused here, in one line, in milliseconds, instead of
failing inside Keras after seconds of imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamload.errors import InvalidOptionError
from streamload.format.manifest import Manifest

EVALUATION_SPLITS = ("test", "validation")  # the first one the dataset has is evaluated after training
MIN_CNN_SIDE = 8  # smaller "images" are flattened into the MLP: two 3x3 convolutions need some room
MNIST_SHAPES = ((28, 28), (28, 28, 1))


@dataclass(frozen=True)
class InputPlan:
    name: str
    shape: tuple[int, ...]  # per sample, as the generator delivers it (2-D samples get a channel axis)
    image: bool  # (H, W, C) with room for convolutions: a CNN branch; else flattened into dense layers


@dataclass(frozen=True)
class ModelPlan:
    inputs: tuple[InputPlan, ...]
    num_classes: int | None  # None: a regression on float targets
    target_shape: tuple[int, ...]
    evaluate_on: str | None  # "test", else "validation", else None (nothing evaluated)
    tutorial: bool  # one 28x28 grayscale input and 10 classes: the tutorial's CNN, as on MNIST

    @property
    def kind(self) -> str:
        if self.tutorial:
            return "the tutorial's CNN"
        if len(self.inputs) > 1:
            return f"a {len(self.inputs)}-input model ({', '.join(i.name for i in self.inputs)})"
        return "a small CNN" if self.inputs[0].image else "an MLP"

    @property
    def task(self) -> str:
        return f"{self.num_classes} classes" if self.num_classes else f"a float target of shape {self.target_shape}"


def plan_model(manifest: Manifest, where: str) -> ModelPlan:
    """The model for ``manifest``'s train split; InvalidOptionError naming ``where`` when none fits."""
    if "train" not in manifest.splits:
        raise InvalidOptionError(f"{where}: no 'train' split (it has {', '.join(sorted(manifest.splits))})")
    train = manifest.split("train")
    if train.num_samples == 0:
        raise InvalidOptionError(f"{where}: the 'train' split holds no samples")
    if manifest.target is None:
        raise InvalidOptionError(f"{where}: the dataset has no target array; train.py trains supervised models")
    inputs = tuple(_input(name, train.arrays[name].dtype, train.arrays[name].shape, where)
                   for name in manifest.features)
    target = train.arrays[manifest.target]
    num_classes = _classes(manifest, target.dtype, target.shape, where)
    evaluate_on = next((split for split in EVALUATION_SPLITS if split in manifest.splits
                        and manifest.split(split).num_samples > 0), None)
    tutorial = len(inputs) == 1 and train.arrays[inputs[0].name].shape in MNIST_SHAPES and num_classes == 10
    return ModelPlan(inputs, num_classes, tuple(target.shape), evaluate_on, tutorial)


def _input(name: str, dtype: str, shape: tuple[int, ...], where: str) -> InputPlan:
    if np.dtype(dtype).kind not in "iuf":
        raise InvalidOptionError(f"{where}: input {name!r} holds {np.dtype(dtype)}; train.py needs numbers")
    delivered = (*shape, 1) if len(shape) == 2 else tuple(shape)  # the loader's channel axis
    image = len(delivered) == 3 and min(delivered[:2]) >= MIN_CNN_SIDE
    return InputPlan(name, delivered, image)


def _classes(manifest: Manifest, dtype: str, shape: tuple[int, ...], where: str) -> int | None:
    """The class count of integer labels, None for float targets (a regression); other targets are refused."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return None
    if kind in "iu" and shape == ():
        if manifest.labels is None:
            raise InvalidOptionError(f"{where}: the manifest records no class count for target "
                                     f"{manifest.target!r}; rebuild with --num-classes N")
        return manifest.labels.num_classes
    raise InvalidOptionError(f"{where}: target {manifest.target!r} holds {np.dtype(dtype)} of shape {shape}; "
                             "train.py trains on scalar class labels or float targets")


def output_units(plan: ModelPlan) -> int:
    return plan.num_classes if plan.num_classes else max(1, math.prod(plan.target_shape))
