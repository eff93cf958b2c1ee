"""Checks the training scripts run on their arguments before Keras loads (which takes seconds)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from apps.plan import ImageReading, ModelPlan, plan_model
from streamload.errors import InvalidOptionError
from streamload.format.manifest import Manifest, read_manifest


def check_arguments(args: argparse.Namespace, positive: Iterable[str]) -> Manifest:
    """Numbers that must be positive, and a dataset whose manifest opens; errors name the option."""
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return read_manifest(args.data)


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
