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
from streamload.format.specs import ArraySpec
from streamload.images.pixels import COLOR_MODES

EVALUATION_SPLITS = ("test", "validation")  # the first one the dataset has is evaluated after training
MIN_CNN_SIDE = 8  # smaller "images" are flattened into the MLP: two 3x3 convolutions need some room
MNIST_SHAPES = ((28, 28), (28, 28, 1))


@dataclass(frozen=True)
class InputPlan:
    name: str
    shape: tuple[int, ...]  # per sample, as the generator delivers it (2-D samples get a channel axis)
    image: bool  # (H, W, C) with room for convolutions: a CNN branch; else flattened into dense layers


@dataclass(frozen=True)
class ImageReading:
    """How ``train.py`` decodes a dataset built with ``--store encoded``: Keras' output size and colour mode,
    and the training augmentation (train split only; evaluation sees the plain resize)."""

    image_size: tuple[int, int] | None = None
    color_mode: str = "rgb"
    random_resized_crop: bool = False
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if self.image_size is not None and min(self.image_size) <= 0:
            raise InvalidOptionError(f"--image-size needs two positive integers, got {self.image_size}")

    def keywords(self, training: bool) -> dict[str, object]:
        """The loader keywords for the train split (``training``) or an evaluation split; none without a size."""
        if self.image_size is None:
            return {}
        augment = {"random_resized_crop": self.random_resized_crop, "horizontal_flip": self.horizontal_flip}
        return {"image_size": self.image_size, "color_mode": self.color_mode, **(augment if training else {})}


@dataclass(frozen=True)
class ModelPlan:
    inputs: tuple[InputPlan, ...]
    num_classes: int | None  # None: a regression on float targets
    target_shape: tuple[int, ...]
    evaluate_on: str | None  # "test", else "validation", else None (nothing evaluated)
    tutorial: bool  # one 28x28 grayscale input and 10 classes: the tutorial's CNN, as on MNIST
    reading: ImageReading = ImageReading()  # decoding of encoded image inputs (none elsewhere)

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


def plan_model(manifest: Manifest, where: str, reading: ImageReading = ImageReading()) -> ModelPlan:
    """The model for ``manifest``'s train split, its encoded images read as ``reading`` says; InvalidOptionError
    naming ``where`` when none fits."""
    if "train" not in manifest.splits:
        raise InvalidOptionError(f"{where}: no 'train' split (it has {', '.join(sorted(manifest.splits))})")
    train = manifest.split("train")
    if train.num_samples == 0:
        raise InvalidOptionError(f"{where}: the 'train' split holds no samples")
    if manifest.target is None:
        raise InvalidOptionError(f"{where}: the dataset has no target array; train.py trains supervised models")
    inputs = tuple(_input(name, train.arrays[name], where, reading) for name in manifest.features)
    if reading.image_size is not None and not any(train.arrays[name].encoded_image for name in manifest.features):
        raise InvalidOptionError(f"{where}: --image-size and the other image options decode images stored as their "
                                 "files (build_shards.py --store encoded); this dataset holds decoded arrays")
    target = train.arrays[manifest.target]
    num_classes = _classes(manifest, target.dtype, target.shape, where)
    evaluate_on = next((split for split in EVALUATION_SPLITS if split in manifest.splits
                        and manifest.split(split).num_samples > 0), None)
    tutorial = len(inputs) == 1 and train.arrays[inputs[0].name].shape in MNIST_SHAPES and num_classes == 10
    return ModelPlan(inputs, num_classes, tuple(target.shape), evaluate_on, tutorial, reading)


def _input(name: str, spec: ArraySpec, where: str, reading: ImageReading) -> InputPlan:
    if spec.encoded_image:
        if reading.image_size is None:
            raise InvalidOptionError(f"{where}: input {name!r} holds image files decoded on read (--store encoded); "
                                     "pass --image-size HEIGHT WIDTH")
        return InputPlan(name, (*reading.image_size, COLOR_MODES[reading.color_mode][1]), True)
    if np.dtype(spec.dtype).kind not in "iuf":
        raise InvalidOptionError(f"{where}: input {name!r} holds {np.dtype(spec.dtype)}; train.py needs numbers")
    if spec.ragged:
        raise InvalidOptionError(f"{where}: input {name!r} holds samples of varying length; train.py trains "
                                 "fixed-shape inputs; feed sequences to your own model (docs/sequences.md)")
    shape = spec.shape
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
