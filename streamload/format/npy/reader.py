"""Reading ``.npy`` shards: each fixed array memory-mapped after its header is checked against the manifest,
each ragged array as its data file read by ``preadv`` runs and its mapped offsets file (see ragged/reader.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import ShardFormatError
from ..manifest import ShardInfo, offsets_key
from ..ragged.reader import RecordArray
from ..reader import ArraysReader, MappedArray
from ..records import OFFSETS_DTYPE
from ..shardfiles import open_shard_file
from ..specs import ArraySpec, read_npy_header


def npy_data_offset(path: Path, spec: ArraySpec, num_samples: int, fd: int | None = None) -> int:
    """Where the array data of a ``.npy`` file (open as ``fd``, else opened here) starts, after checking its
    header against the manifest. numpy's own message is left out: it quotes the file's first bytes."""
    try:
        with os.fdopen(open_shard_file(path) if fd is None else fd, "rb", closefd=fd is None) as stream:
            _, shape, fortran, dtype, offset = read_npy_header(stream)
    except (ValueError, SyntaxError, EOFError):
        raise ShardFormatError(f"{path}: not a valid .npy file (no readable .npy magic and header)") from None
    if tuple(shape) != (num_samples, *spec.shape) or dtype != np.dtype(spec.dtype) or fortran:
        raise ShardFormatError(f"{path}: holds {dtype} {tuple(shape)}, the manifest says "
                               f"{spec.dtype} {(num_samples, *spec.shape)}")
    return offset


def open_npy(root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> ArraysReader:
    arrays = {}
    for key, spec in specs.items():
        if spec.ragged:  # its data file and its offsets (see ragged/reader.py)
            arrays.update(open_npy_records(root, shard.files, key, spec, shard.num_samples))
            continue
        path = root / shard.files[key].name
        fd = open_shard_file(path)
        try:
            offset = npy_data_offset(path, spec, shard.num_samples, fd)
        except BaseException:
            os.close(fd)
            raise
        arrays[key] = MappedArray(path, offset, spec, shard.num_samples, fd)
    return ArraysReader(arrays, shard.num_samples)


def _npy_layout(path: Path, fd: int, spec: ArraySpec) -> tuple[int, int]:
    """(data offset, row count) of a ragged array's ``.npy`` data file, its header checked against ``spec``."""
    try:
        with os.fdopen(fd, "rb", closefd=False) as stream:
            _, shape, fortran, dtype, offset = read_npy_header(stream)
    except (ValueError, SyntaxError, EOFError):
        raise ShardFormatError(f"{path}: not a valid .npy file (no readable .npy magic and header)") from None
    if len(shape) != len(spec.shape) or tuple(shape[1:]) != spec.row_shape or dtype != np.dtype(spec.dtype) or fortran:
        raise ShardFormatError(f"{path}: holds {dtype} {tuple(shape)}, the manifest says {spec.dtype} rows "
                               f"{spec.row_shape} (records)")
    return offset, int(shape[0])


def open_npy_records(root: Path, files: dict, key: str, spec: ArraySpec,  # noqa: ANN001 - role -> FileInfo
                     num_samples: int) -> dict[str, MappedArray | RecordArray]:
    """The data file and mapped offsets file of ragged array ``key`` in an npy shard, both checked."""
    index_path, path = root / files[offsets_key(key)].name, root / files[key].name
    index_spec = ArraySpec(OFFSETS_DTYPE.str, ())
    index_fd = open_shard_file(index_path)
    try:
        index = MappedArray(index_path, npy_data_offset(index_path, index_spec, num_samples + 1, index_fd), index_spec,
                            num_samples + 1, index_fd)
    except BaseException:
        os.close(index_fd)
        raise
    fd = open_shard_file(path)
    try:
        offset, rows = _npy_layout(path, fd, spec)
        records = RecordArray(path, fd, spec, index, offset)
    except BaseException:
        os.close(fd)
        raise
    if rows != records.total_rows:
        raise ShardFormatError(f"{index_path}: offsets end at row {records.total_rows}, {path.name} holds {rows}")
    return {key: records, offsets_key(key): index}
