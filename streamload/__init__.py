"""streamload: train Keras models on datasets that do not fit in RAM.

Build verified on-disk shards (HDF5 or memory-mapped .npy) with ``scripts/build_shards.py`` or
:func:`build_dataset`, then feed ``model.fit`` with :class:`StreamingGenerator`, which reads only
each batch's samples from disk.

Layers, each calling only those below it: sources -> manifest, writers, build -> readers ->
sampler -> loader -> adapters (Keras ``PyDataset`` and callbacks, ``tf.data``).

Every name below is imported on first use, so ``import streamload`` costs nothing: the CLI starts
fast, Keras and TensorFlow load only with the adapters that need them (any Keras backend works),
and the standard-library-only modules (``streamload.procstats``) import without numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_ERRORS = ("DatasetBusyError", "DatasetExistsError", "GenerationGoneError", "IdxFormatError", "ImageDecodeError",
           "InvalidOptionError", "LabelRangeError", "ManifestError", "ManifestVersionError", "MissingDependencyError",
           "OutOfSpaceError", "ShardCorruptError", "ShardFormatError", "SourceFormatError", "SourceMismatchError",
           "SourceNotFoundError", "StreamloadError", "WorkerError")
_SOURCES = ("ArraySource", "AugmentedSource", "CsvSource", "IdxPairSource", "ImageFolderSource", "ImageOptions",
            "IterableSource", "NpyPairSource", "NpzArraySource", "SplitSource", "csv_sources", "image_folder_sources",
            "mnist_sources", "numpy_sources", "split_validation")
_HOMES = {
    **dict.fromkeys(_ERRORS, "errors"), **dict.fromkeys(_SOURCES, "sources"),
    "BuildOptions": "build", "build_dataset": "build", "ShardedDataset": "dataset", "Manifest": "manifest",
    "read_manifest": "manifest", "LoaderOptions": "options", "BatchLoader": "loader", "batches_per_epoch": "loader",
    "verify_dataset": "verify",
    "StreamingGenerator": "generator", "EpochSync": "callbacks", "TrainingCheckpoint": "callbacks",
    "as_tf_dataset": "tfdata", "tf_state_after": "tfdata",
}

if TYPE_CHECKING:
    from .build import BuildOptions, build_dataset
    from .callbacks import EpochSync, TrainingCheckpoint
    from .dataset import ShardedDataset
    from .errors import (
        DatasetBusyError,
        DatasetExistsError,
        GenerationGoneError,
        IdxFormatError,
        ImageDecodeError,
        InvalidOptionError,
        LabelRangeError,
        ManifestError,
        ManifestVersionError,
        MissingDependencyError,
        OutOfSpaceError,
        ShardCorruptError,
        ShardFormatError,
        SourceFormatError,
        SourceMismatchError,
        SourceNotFoundError,
        StreamloadError,
        WorkerError,
    )
    from .generator import StreamingGenerator
    from .loader import BatchLoader, batches_per_epoch
    from .manifest import Manifest, read_manifest
    from .options import LoaderOptions
    from .sources import (
        ArraySource,
        AugmentedSource,
        CsvSource,
        IdxPairSource,
        ImageFolderSource,
        ImageOptions,
        IterableSource,
        NpyPairSource,
        NpzArraySource,
        SplitSource,
        csv_sources,
        image_folder_sources,
        mnist_sources,
        numpy_sources,
        split_validation,
    )
    from .tfdata import as_tf_dataset, tf_state_after
    from .verify import verify_dataset


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "ArraySource", "AugmentedSource", "BatchLoader", "BuildOptions", "CsvSource", "DatasetBusyError",
    "DatasetExistsError", "EpochSync", "GenerationGoneError", "IdxFormatError", "IdxPairSource", "ImageDecodeError",
    "ImageFolderSource", "ImageOptions", "InvalidOptionError", "IterableSource", "LabelRangeError", "LoaderOptions",
    "Manifest", "ManifestError", "ManifestVersionError", "MissingDependencyError", "NpyPairSource", "NpzArraySource",
    "OutOfSpaceError", "ShardCorruptError", "ShardFormatError", "ShardedDataset", "SourceFormatError",
    "SourceMismatchError", "SourceNotFoundError", "SplitSource", "StreamingGenerator", "StreamloadError",
    "TrainingCheckpoint", "WorkerError", "__version__", "as_tf_dataset", "batches_per_epoch", "build_dataset",
    "csv_sources", "image_folder_sources", "mnist_sources", "numpy_sources", "read_manifest", "split_validation",
    "tf_state_after", "verify_dataset",
]
