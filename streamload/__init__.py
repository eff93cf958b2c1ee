"""streamload: train Keras models on datasets that do not fit in RAM.

Build verified on-disk shards (HDF5 or memory-mapped .npy) with ``scripts/build_shards.py`` or
:func:`build_dataset`, then feed ``model.fit`` with :class:`StreamingGenerator`, which reads only
each batch's samples from disk. Importing this package does not import TensorFlow or Keras: the
Keras- and TensorFlow-facing names (``StreamingGenerator``, the callbacks, ``as_tf_dataset``,
``batches_per_epoch``) are loaded on first use, so the CLI starts fast and any Keras backend works.

Layers, each calling only those below it: sources -> manifest, writers, build -> readers ->
sampler -> loader -> adapters (Keras ``PyDataset`` and callbacks, ``tf.data``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

from .build import BuildOptions, build_dataset  # noqa: E402
from .dataset import ShardedDataset  # noqa: E402
from .errors import (  # noqa: E402
    DatasetExistsError,
    IdxFormatError,
    InvalidOptionError,
    LabelRangeError,
    ManifestError,
    ManifestVersionError,
    ShardCorruptError,
    ShardFormatError,
    SourceMismatchError,
    SourceNotFoundError,
    StreamloadError,
)
from .loader import BatchLoader, batches_per_epoch  # noqa: E402
from .manifest import Manifest, read_manifest  # noqa: E402
from .options import LoaderOptions  # noqa: E402
from .sources import ArraySource, AugmentedSource, IdxPairSource, NpzArraySource, SplitSource, mnist_sources  # noqa: E402
from .verify import verify_dataset  # noqa: E402

if TYPE_CHECKING:
    from .callbacks import EpochSync, TrainingCheckpoint
    from .generator import StreamingGenerator
    from .tfdata import as_tf_dataset

_LAZY = {"StreamingGenerator": "generator", "EpochSync": "callbacks", "TrainingCheckpoint": "callbacks",
         "as_tf_dataset": "tfdata", "batches_per_epoch": "tfdata"}


def __getattr__(name: str) -> Any:
    """Import the Keras/TensorFlow-facing names only when they are asked for."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArraySource", "AugmentedSource", "BatchLoader", "BuildOptions", "DatasetExistsError", "EpochSync",
    "IdxFormatError", "IdxPairSource", "InvalidOptionError", "LabelRangeError", "LoaderOptions", "Manifest",
    "ManifestError", "ManifestVersionError", "NpzArraySource", "ShardCorruptError", "ShardFormatError",
    "ShardedDataset", "SourceMismatchError", "SourceNotFoundError", "SplitSource", "StreamingGenerator",
    "StreamloadError", "TrainingCheckpoint", "__version__", "as_tf_dataset", "batches_per_epoch", "build_dataset",
    "mnist_sources", "read_manifest", "verify_dataset",
]
