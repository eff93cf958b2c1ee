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
    DatasetBusyError,
    DatasetExistsError,
    GenerationGoneError,
    IdxFormatError,
    InvalidOptionError,
    LabelRangeError,
    ManifestError,
    ManifestVersionError,
    OutOfSpaceError,
    ShardFormatError,
    SourceMismatchError,
    SourceNotFoundError,
    StreamloadError,
)
from .manifest import Manifest, read_manifest  # noqa: E402
from .sources import (  # noqa: E402
    ArraySource,
    IdxPairSource,
    NpzArraySource,
    SplitSource,
    mnist_sources,  # noqa: E402
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
    "ArraySource", "BuildOptions", "DatasetBusyError", "DatasetExistsError", "GenerationGoneError",
    "IdxFormatError", "IdxPairSource", "InvalidOptionError", "LabelRangeError", "Manifest", "ManifestError",
    "ManifestVersionError", "NpzArraySource", "OutOfSpaceError", "ShardFormatError", "SourceMismatchError",
    "SourceNotFoundError", "SplitSource",
    "StreamingGenerator", "StreamloadError", "__version__", "as_tf_dataset", "build_dataset",
    "mnist_sources", "read_manifest", "verify_dataset",
]
