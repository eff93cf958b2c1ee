"""streamload: train Keras models on datasets that do not fit in RAM.

Build verified on-disk shards (HDF5 or memory-mapped .npy) with ``scripts/build_shards.py`` or
:func:`build_dataset`, then feed ``model.fit`` with :class:`StreamingGenerator`, which reads only
each batch's samples from disk. Importing this package does not import TensorFlow or Keras: the
Keras-facing names are loaded on first use, so the CLI starts fast and any Keras backend works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .build import BuildOptions, build_dataset  # noqa: E402
from .errors import (  # noqa: E402
    DatasetExistsError,
    IdxFormatError,
    ImageDecodeError,
    InvalidOptionError,
    ManifestError,
    ManifestVersionError,
    MissingDependencyError,
    ShardFormatError,
    SourceFormatError,
    SourceMismatchError,
    SourceNotFoundError,
    StreamloadError,
    WorkerError,
)
from .manifest import Manifest, read_manifest  # noqa: E402
from .sources import (  # noqa: E402
    ArraySource,
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
from .verify import verify_dataset  # noqa: E402

if TYPE_CHECKING:
    from .generator import StreamingGenerator
    from .tfdata import as_tf_dataset

_LAZY = {"StreamingGenerator": "generator", "as_tf_dataset": "tfdata"}


def __getattr__(name: str) -> Any:
    """Import the Keras/TensorFlow-facing names only when they are asked for."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArraySource", "BuildOptions", "CsvSource", "DatasetExistsError", "IdxFormatError", "IdxPairSource",
    "ImageDecodeError", "ImageFolderSource", "ImageOptions", "InvalidOptionError", "IterableSource", "Manifest",
    "ManifestError", "ManifestVersionError", "MissingDependencyError", "NpyPairSource", "NpzArraySource",
    "ShardFormatError", "SourceFormatError", "SourceMismatchError", "SourceNotFoundError", "SplitSource",
    "StreamingGenerator", "StreamloadError", "WorkerError", "__version__", "as_tf_dataset", "build_dataset",
    "csv_sources", "image_folder_sources", "mnist_sources", "numpy_sources", "read_manifest", "split_validation",
    "verify_dataset",
]
