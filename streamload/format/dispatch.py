"""A format's reader and writer by its name (``npy`` or ``hdf5``, the manifest's ``format``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import InvalidOptionError
from .hdf5.reader import open_hdf5
from .hdf5.writer import Hdf5ShardWriter
from .manifest import ArraySpec, ShardInfo, check_format
from .npy.reader import open_npy
from .npy.writer import NpyShardWriter
from .reader import ShardReader
from .writer import ShardWriter, default_shard_size


def open_reader(fmt: str, root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> ShardReader:
    """Open one shard's files (in this process) for reading the arrays named in ``specs``."""
    return (open_npy if fmt == "npy" else open_hdf5)(Path(root), shard, specs)


def make_writer(fmt: str, directory: Path, split: str, specs: Mapping[str, ArraySpec], num_samples: int,
                shard_size: int | None = None, compression: str | None = None,
                on_rows: Callable[[int], object] | None = None) -> ShardWriter:
    """The writer for ``fmt``; ``shard_size=None`` picks about 64 MB per shard."""
    check_format(fmt)
    size = default_shard_size(specs) if shard_size is None else shard_size
    if fmt == "npy":
        if compression is not None:
            raise InvalidOptionError("compression applies to --format hdf5 only; .npy shards are stored raw")
        return NpyShardWriter(directory, split, specs, num_samples, size, on_rows=on_rows)
    return Hdf5ShardWriter(directory, split, specs, num_samples, size, on_rows=on_rows, compression=compression)
