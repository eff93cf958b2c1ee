"""streamload: train Keras models on datasets that do not fit in RAM.

Build verified on-disk shards (HDF5 or memory-mapped .npy) with ``scripts/build_shards.py`` or
:func:`build_dataset`, then feed ``model.fit`` with :class:`StreamingGenerator`, which reads only
each batch's samples from disk.

Subpackages, each importing only from those below it (docs/development.md): ``base`` (helpers) ->
``format`` (what a dataset on disk is: the manifest, one folder per format with its reader and writer) ->
``write`` (sources, staging, generations, builds) -> ``read`` (dataset, sampler, read-ahead, batching,
loader) -> ``adapters`` (Keras ``PyDataset`` and callbacks, ``tf.data``); ``errors`` and ``options``
lie beneath them all.

Every name below is imported on first use, so ``import streamload`` costs nothing: the CLI starts
fast, Keras and TensorFlow load only with the adapters that need them (any Keras backend works),
and the standard-library-only modules (``streamload.base.procstats``) import without numpy.
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
    **dict.fromkeys(_ERRORS, "errors"), **dict.fromkeys(_SOURCES, "write.sources"),
    "BuildOptions": "write.build", "build_dataset": "write.build", "ShardedDataset": "read.dataset",
    "Manifest": "format.manifest", "read_manifest": "format.manifest", "Records": "format.records",
    "LoaderOptions": "options", "BatchLoader": "read.loader", "batches_per_epoch": "read.loader",
    "verify_dataset": "write.verify",
    "StreamingGenerator": "adapters.generator", "EpochSync": "adapters.callbacks",
    "TrainingCheckpoint": "adapters.callbacks", "as_tf_dataset": "adapters.tfdata", "tf_state_after": "adapters.tfdata",
}

if TYPE_CHECKING:
    from .adapters.callbacks import EpochSync, TrainingCheckpoint
    from .adapters.generator import StreamingGenerator
    from .adapters.tfdata import as_tf_dataset, tf_state_after
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
    from .format.manifest import Manifest, read_manifest
    from .format.records import Records
    from .options import LoaderOptions
    from .read.dataset import ShardedDataset
    from .read.loader import BatchLoader, batches_per_epoch
    from .write.build import BuildOptions, build_dataset
    from .write.sources import (
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
    from .write.verify import verify_dataset


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
    "OutOfSpaceError", "Records", "ShardCorruptError", "ShardFormatError", "ShardedDataset", "SourceFormatError",
    "SourceMismatchError", "SourceNotFoundError", "SplitSource", "StreamingGenerator", "StreamloadError",
    "TrainingCheckpoint", "WorkerError", "__version__", "as_tf_dataset", "batches_per_epoch", "build_dataset",
    "csv_sources", "image_folder_sources", "mnist_sources", "numpy_sources", "read_manifest", "split_validation",
    "tf_state_after", "verify_dataset",
]
