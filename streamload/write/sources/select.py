"""The command line's choice of source: which files become the dataset's splits.

``build_shards.py`` takes its source options from here, so every kind of source is chosen the same
way: MNIST (or any IDX folder, Keras' ``mnist.npz``), a folder of images in class subfolders, NumPy
files, a CSV table. ``--source-type auto`` tells them apart by what ``--source`` is; without
``--source``, MNIST is found as before. ``--validation-split`` works the same for every type.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ...base.names import display_name
from ...errors import InvalidOptionError, SourceFormatError, SourceNotFoundError
from .augment import AugmentedSource
from .base import SplitSource
from .imaging import COLOR_MODES, DEFAULT_MAX_IMAGE_PIXELS
from .mnist import MNIST_DIR_ENV, mnist_sources
from .splits import split_validation

SOURCE_TYPES = ("auto", "idx", "mnist-npz", "npz", "npy", "images", "csv")
_IMAGE_OPTIONS = ("image_size", "color_mode", "crop_to_aspect_ratio", "jobs", "strict", "max_image_pixels", "store")
_ONLY_FOR = {  # option -> the source types it applies to (given for another type, it is an error)
    **dict.fromkeys(_IMAGE_OPTIONS, ("images",)),
    "x_key": ("npz", "npy"), "y_key": ("npz", "npy"), "allow_pickle": ("npz",), "label_column": ("csv",),
    "augment_to": ("idx", "mnist-npz", "npz", "npy"),
}


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("source")
    source.add_argument("--source", type=Path,
                        help="what to shard: a folder of images in class subfolders, an .npz file, a folder of "
                             ".npy files (or one), a CSV table, or MNIST as a folder of IDX files or an mnist.npz "
                             f"(the default: ${MNIST_DIR_ENV}, else the Keras download)")
    source.add_argument("--source-type", choices=SOURCE_TYPES, default="auto",
                        help="what --source holds (default: auto, told from the name and contents)")
    source.add_argument("--validation-split", type=float, metavar="F",
                        help="cut a validation split of round(F * n) random training samples off a source "
                             "without one")
    source.add_argument("--seed", type=int, default=0, help="seed of --validation-split and --augment-to (default: 0)")
    source.add_argument("--augment-to", type=int, metavar="N",
                        help="make the train split N randomly deformed copies of the training digits")
    source.add_argument("--no-download", action="store_true", help="never download; fail unless MNIST is local")
    images = parser.add_argument_group("image folders (the options of keras.utils.image_dataset_from_directory)")
    images.add_argument("--store", choices=("decoded", "encoded"),
                        help="decoded (the default): every image decoded and resized to --image-size, stored as "
                             "uint8 pixels; encoded: each file's bytes stored as found (no re-encode), decoded "
                             "when read, at the image_size the reader asks for")
    images.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="--store decoded: resize every image to this size, bilinear as Keras does (default: "
                             "256 256); refused with --store encoded, where the size is the reader's image_size")
    images.add_argument("--color-mode", choices=tuple(COLOR_MODES), help="1, 3 or 4 channels (default: rgb)")
    images.add_argument("--crop-to-aspect-ratio", action="store_true",
                        help="crop the largest centred box of the target aspect ratio before resizing")
    images.add_argument("--jobs", type=int, help="decoding processes (default: every usable core)")
    images.add_argument("--strict", action="store_true",
                        help="refuse unreadable images (exit 2, nothing written) instead of skipping them")
    images.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="images of more than N pixels (width x height) are unreadable: skipped, or refused with "
                             f"--strict; bounds each decoding process's memory (default: {DEFAULT_MAX_IMAGE_PIXELS}, "
                             "a decoding process holds up to 16 bytes a pixel)")
    arrays = parser.add_argument_group("NumPy files and CSV tables")
    arrays.add_argument("--x-key", help="name of the inputs array (default: x, or x_train/x_test)")
    arrays.add_argument("--y-key", help="name of the targets array (default: y, or y_train/y_test)")
    arrays.add_argument("--allow-pickle", action="store_true",
                        help="read object arrays (sequences of varying length) from an .npz with pickle, which runs "
                             "code from the file: only for files you trust; X plus X_lengths needs no pickle")
    arrays.add_argument("--label-column", help="CSV label column, by header name or 0-based index "
                                               "(default: the column named label, else the last)")


def detect_source_type(source: Path | None) -> str:
    """The source type of ``--source``: by suffix for a file, by what a folder holds."""
    if source is None:
        return "idx"  # MNIST, from $STREAMLOAD_MNIST_DIR, Keras' cache or its download
    source = source.expanduser()
    if source.is_file():
        suffixes = [suffix.lower() for suffix in source.suffixes[-2:]]
        for suffix, kind in ((".npz", "npz"), (".npy", "npy"), (".csv", "csv"), (".tsv", "csv")):
            if suffix in suffixes:
                return kind
        raise SourceFormatError(f"{display_name(source)}: cannot tell what this file holds from its name (.npz, "
                                ".npy, .csv, .tsv); pass --source-type")
    if not source.is_dir():
        raise SourceNotFoundError(f"{display_name(source)}: no such file or folder; --source takes a folder of "
                                  "images in class subfolders, an .npz, .npy files, a CSV table, or MNIST as a folder "
                                  f"of IDX files or mnist.npz (or leave it out and set ${MNIST_DIR_ENV})")
    names = os.listdir(source)
    if (source / "mnist.npz").is_file() or any("idx" in name and "ubyte" in name for name in names):
        return "idx"
    if any(name.endswith(".npy") for name in names):
        return "npy"
    if any(not name.startswith(".") and (source / name).is_dir() for name in names):
        return "images"
    raise SourceFormatError(f"{display_name(source)}: holds no IDX files, mnist.npz, .npy files or class subfolders "
                            "of images; pass --source-type or another --source")


def _check_applicable(args: argparse.Namespace, kind: str) -> None:
    for option, kinds in _ONLY_FOR.items():
        value = getattr(args, option, None)
        if value not in (None, False) and kind not in kinds:
            flag = "--" + option.replace("_", "-")
            raise InvalidOptionError(f"{flag} applies only to {' and '.join(kinds)} sources; "
                                     f"{display_name(args.source or 'MNIST')} is a source of type {kind}")


def _image_sources(args: argparse.Namespace) -> dict[str, SplitSource]:
    from .images import ImageOptions, image_folder_sources

    given = {option: getattr(args, option) for option in _IMAGE_OPTIONS if getattr(args, option) not in (None, False)}
    if "image_size" in given:
        given["image_size"] = tuple(given["image_size"])
    options = ImageOptions(**given, progress=not getattr(args, "quiet", False))
    return image_folder_sources(args.source, options, validation_split=args.validation_split, seed=args.seed)


def _file_sources(args: argparse.Namespace, kind: str) -> dict[str, SplitSource]:
    if args.source is None:
        raise InvalidOptionError(f"--source-type {kind} needs --source naming the file or folder")
    if kind == "images":
        return _image_sources(args)
    if kind == "csv":
        from .tables import csv_sources

        return dict(csv_sources(args.source, args.label_column))
    from .numpy_files import numpy_sources

    return numpy_sources(args.source, args.x_key, args.y_key, getattr(args, "allow_pickle", False))


def sources_from_args(args: argparse.Namespace) -> dict[str, SplitSource]:
    """Split name -> source, as the parsed options describe it."""
    kind = detect_source_type(args.source) if args.source_type == "auto" else args.source_type
    _check_applicable(args, kind)
    if kind in ("idx", "mnist-npz"):
        sources = mnist_sources(args.source, download=not args.no_download)
    else:
        sources = _file_sources(args, kind)
    if args.validation_split is not None and kind != "images":  # image folders cut their file list instead
        sources = split_validation(sources, args.validation_split, args.seed)
    if args.augment_to is not None:  # after the split: validation keeps undeformed samples
        sources["train"] = AugmentedSource(sources["train"], args.augment_to, seed=args.seed)
    return sources


__all__ = ["MNIST_DIR_ENV", "SOURCE_TYPES", "add_source_arguments", "detect_source_type", "sources_from_args"]
