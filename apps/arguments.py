"""Checks the training scripts run on their arguments before Keras loads (which takes seconds)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from streamload.errors import InvalidOptionError
from streamload.manifest import read_manifest


def check_arguments(args: argparse.Namespace, positive: Iterable[str]) -> None:
    """Numbers that must be positive, and a dataset whose manifest opens; errors name the option."""
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {value}")
    read_manifest(args.data)
