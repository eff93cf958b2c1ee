"""Checks the training scripts run on their arguments before Keras loads (which takes seconds)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

from apps.plan import ImageReading, ModelPlan, plan_model
from streamload.errors import InvalidOptionError
from streamload.format.manifest import Manifest, read_manifest
from streamload.images.pixels import COLOR_MODES
from streamload.places.dispatch import open_place
from streamload.store.url import is_remote


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of datasets built with ``--store encoded`` (images decoded on read), as Keras names them."""
    images = parser.add_argument_group("datasets built with --store encoded (images decoded on read)")
    images.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="decode and resize every image to this size, as Keras' image_size (required there)")
    images.add_argument("--color-mode", default="rgb", choices=tuple(COLOR_MODES),
                        help="Keras' color_mode (default: rgb)")
    images.add_argument("--random-resized-crop", action="store_true",
                        help="train on random crops (Inception's ranges), a pure function of seed, epoch and sample")
    images.add_argument("--horizontal-flip", action="store_true", help="flip half the training images, likewise")


def check_arguments(args: argparse.Namespace, positive: Iterable[str]) -> Manifest:
    """Numbers that must be positive, and a dataset whose manifest opens; errors name the option."""
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return dataset_manifest(args.data)


def dataset_manifest(location: str | os.PathLike) -> Manifest:
    """The manifest of a dataset folder or of ``s3://bucket/prefix`` (its current generation)."""
    if not is_remote(location):
        return read_manifest(location)
    hold = open_place(location).open()
    hold.release()  # only the manifest is wanted here; the loaders lease the generation they read
    return hold.manifest


def check_trainable(args: argparse.Namespace, positive: Iterable[str]) -> ModelPlan:
    """``check_arguments``, then the model ``train.py`` would build: a dataset it cannot train, or an
    option that cannot apply to it (``--min-accuracy`` without class labels or an evaluation split), is
    refused here in one line."""
    plan = plan_model(check_arguments(args, positive), str(args.data), image_reading(args))
    if args.min_accuracy is not None and (plan.num_classes is None or plan.evaluate_on is None):
        raise InvalidOptionError(f"--min-accuracy needs class labels and a test or validation split; {args.data} "
                                 f"has {plan.task} and {plan.evaluate_on or 'no evaluation split'}")
    return plan


def image_reading(args: argparse.Namespace) -> ImageReading:
    """The image options of ``train.py``'s command line (encoded image datasets), checked by the plan."""
    size = getattr(args, "image_size", None)
    return ImageReading(tuple(size) if size else None, getattr(args, "color_mode", "rgb"),
                        getattr(args, "random_resized_crop", False), getattr(args, "horizontal_flip", False))
