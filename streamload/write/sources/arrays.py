"""Samples already in arrays: in memory or memory-mapped, or inside an ``.npz`` archive (Keras' ``mnist.npz``).

A file's header says how large its arrays are; before anything is allocated that claim is checked
against the bytes the file holds, and a single sample larger than ``MAX_SAMPLE_BYTES`` (which
would be read whole) is refused, so a bad or hostile header is a one-line error, not a MemoryError.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ...errors import ShardFormatError, SourceFormatError, SourceMismatchError
from ...format.records import Records
from ...format.specs import ArraySpec
from .base import DEFAULT_CHUNK_ROWS, Chunk, rows_per_chunk

MAX_SAMPLE_BYTES = 2**30  # one sample is read whole: more than 1 GiB of it is refused
LENGTHS_SUFFIX = "_lengths"  # NAME_lengths beside NAME: samples of varying length (see sequences.py)
PICKLE_OPTION = "--allow-pickle (numpy_sources(..., allow_pickle=True))"


def pickle_refusal(where: str, member: str) -> SourceFormatError:
    """The refusal of an object array: it names the pickle-free form and the option for trusted files."""
    return SourceFormatError(
        f"{where}: array {member!r} holds Python objects (an object array, e.g. sequences of varying length), which "
        f"only pickle reads, and unpickling runs code from the file; store it as {member} (rows back to back) plus "
        f"{member}{LENGTHS_SUFFIX} (see docs/sequences.md), or pass {PICKLE_OPTION} for a file you trust")


def check_sample_size(where: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a sample too large to read at once, computed without numpy overflowing on a hostile shape."""
    sample_bytes = dtype.itemsize
    for side in shape[1:]:
        sample_bytes *= side
    if sample_bytes > MAX_SAMPLE_BYTES:
        raise ShardFormatError(f"{where}: one sample of array {key!r} is {sample_bytes / 2**30:.1f} GiB "
                               f"({shape[1:]} of {dtype}); more than {MAX_SAMPLE_BYTES // 2**30} GiB per sample is "
                               "not read")


def spec_of(array: np.ndarray | Records) -> ArraySpec:
    """An array's sample spec; Records (variable-length samples) get a leading None."""
    if isinstance(array, Records):
        return ArraySpec(np.dtype(array.dtype).newbyteorder("=").str, (None, *array.row_shape))
    return ArraySpec.of(array)


class ArraySource:
    """In-memory or memory-mapped arrays, e.g. ``ArraySource(x=images, y=labels)``; an array may be
    :class:`~streamload.format.records.Records` (``Records.from_arrays(token_lists)``) for samples of varying length."""

    def __init__(self, description: str = "arrays", **arrays: np.ndarray) -> None:
        lengths = {key: len(array) for key, array in arrays.items()}
        if not arrays or len(set(lengths.values())) != 1:
            raise SourceMismatchError(f"{description}: arrays must be given and have equal lengths, got {lengths}")
        self.arrays = arrays
        self.description = description
        self.num_samples = next(iter(lengths.values()))
        self.specs = {key: spec_of(array) for key, array in arrays.items()}

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for start in range(0, self.num_samples, chunk_rows):
            yield {key: array[start:start + chunk_rows] if isinstance(array, Records)
                   else np.asarray(array[start:start + chunk_rows]) for key, array in self.arrays.items()}


class NpzArraySource:
    """Arrays inside an ``.npz`` archive (Keras' ``mnist.npz``), streamed from the zip member."""

    def __init__(self, path: str | os.PathLike, members: Mapping[str, str]) -> None:
        self.path, self.members = Path(path), dict(members)
        self._headers = {key: self._read_header(member) for key, member in self.members.items()}
        lengths = {self.members[key]: shape[0] for key, (shape, _) in self._headers.items()}
        if len(set(lengths.values())) != 1:
            raise SourceMismatchError(f"{self.path}: arrays {lengths} must have equal lengths")
        self.description = f"{self.path} [{', '.join(self.members.values())}]"
        self.num_samples = next(iter(lengths.values()))
        self.specs = {key: ArraySpec(dtype.newbyteorder("=").str, shape[1:])
                      for key, (shape, dtype) in self._headers.items()}

    def _open_member(self, archive: zipfile.ZipFile, member: str):  # noqa: ANN202 - a zip file stream
        try:
            return archive.open(f"{member}.npy")
        except KeyError as exc:
            raise ShardFormatError(f"{self.path}: no array {member!r}; it has {archive.namelist()}") from exc

    def _read_header(self, member: str) -> tuple[tuple[int, ...], np.dtype]:
        with zipfile.ZipFile(self.path) as archive, self._open_member(archive, member) as stream:
            shape, fortran, dtype = self._read_npy_header(stream, member)
            data_offset, member_bytes = stream.tell(), archive.getinfo(f"{member}.npy").file_size
        if not shape:
            raise ShardFormatError(f"{self.path}: array {member!r} is 0-d (a single value): it has no samples; "
                                   "its first axis must count them")
        if dtype.hasobject:
            raise pickle_refusal(str(self.path), member)
        if fortran:
            raise ShardFormatError(f"{self.path}: array {member!r} must be a C-ordered array of numbers")
        check_sample_size(str(self.path), member, tuple(shape), dtype)
        claimed = dtype.itemsize
        for side in shape:
            claimed *= side
        if data_offset + claimed != member_bytes:
            raise ShardFormatError(f"{self.path}: array {member!r}'s header claims {tuple(shape)} of {dtype} "
                                   f"({claimed} bytes), but the member holds {member_bytes - data_offset}")
        return tuple(shape), dtype

    def _read_npy_header(self, stream, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:  # noqa: ANN001
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        try:
            version = np.lib.format.read_magic(stream)
            header = readers[version](stream) if version in readers else None
        except (ValueError, SyntaxError):  # truncated or garbled; numpy's message would quote the file's bytes
            raise ShardFormatError(f"{self.path}: array {member!r} has no readable .npy header") from None
        if header is None:
            raise ShardFormatError(f"{self.path}: array {member!r} uses unsupported .npy version {version}")
        return header

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        chunk_rows = rows_per_chunk(self.specs, chunk_rows)
        with zipfile.ZipFile(self.path) as archive:
            streams = {key: self._open_member(archive, member) for key, member in self.members.items()}
            for key, stream in streams.items():
                self._read_npy_header(stream, self.members[key])
            for start in range(0, self.num_samples, chunk_rows):
                count = min(chunk_rows, self.num_samples - start)
                yield {key: self._read_rows(stream, key, count) for key, stream in streams.items()}

    def _read_rows(self, stream, key: str, count: int) -> np.ndarray:  # noqa: ANN001
        shape, dtype = self._headers[key]
        size = count * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        data = stream.read(size)
        if len(data) != size:
            raise ShardFormatError(f"{self.path}: array {self.members[key]!r} is truncated")
        return np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:])).astype(dtype.newbyteorder("="), copy=False)
