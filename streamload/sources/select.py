"""The command line's choice of source: which files become the dataset's splits.

``build_shards.py`` takes its source options from here, so every kind of source (MNIST or any IDX
folder, Keras' ``mnist.npz``, deformed copies) is chosen the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .augment import AugmentedSource
from .base import SplitSource
from .mnist import MNIST_DIR_ENV, mnist_sources


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path,
                        help=f"folder of IDX files or an mnist.npz (default: ${MNIST_DIR_ENV}, "
                             "else the Keras download)")
    parser.add_argument("--augment-to", type=int, metavar="N",
                        help="make the train split N randomly deformed copies of the training digits")
    parser.add_argument("--seed", type=int, default=0, help="seed of --augment-to (default: 0)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail unless MNIST is local")


def sources_from_args(args: argparse.Namespace) -> dict[str, SplitSource]:
    """Split name -> source, as the parsed options describe it."""
    sources = mnist_sources(args.source, download=not args.no_download)
    if args.augment_to is not None:
        sources["train"] = AugmentedSource(sources["train"], args.augment_to, seed=args.seed)
    return sources


__all__ = ["MNIST_DIR_ENV", "add_source_arguments", "sources_from_args"]
