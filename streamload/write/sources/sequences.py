"""Samples of varying length in NumPy files, without pickle: a flat array plus its lengths.

NumPy stores a list of arrays of different lengths as an object array, which only ``pickle`` reads back,
and unpickling a file runs whatever code its author put in it. streamload refuses object arrays unless
told the file is trusted (``--allow-pickle``, ``allow_pickle=True``). The pickle-free form it reads
instead is the one it stores: beside ``NAME`` (every sample's rows back to back) the same ``.npz`` (or
folder of ``.npy`` files) holds ``NAME_lengths`` (one row count per sample, ``sum == len(NAME)``), e.g.
``np.savez(path, x_train=np.concatenate(seqs), x_train_lengths=[len(s) for s in seqs], y_train=labels)``.
Lengths rather than offsets: they are what a user has at hand (``len(s)``), and one wrong value cannot
make the rest point backwards. Inputs and targets alike may vary in length (a tag per token: ``y`` plus
``y_lengths``); either may also be one row per sample.
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ...errors import SourceFormatError, SourceMismatchError
from ...format.records import Records
from ...format.specs import ArraySpec
from .arrays import LENGTHS_SUFFIX, ArraySource, NpzArraySource, pickle_refusal
from .base import DEFAULT_CHUNK_ROWS, Chunk, SplitSource


def _lengths(values: np.ndarray, where: str, name: str, rows: int) -> np.ndarray:
    if values.ndim != 1 or values.dtype.kind not in "iu" or (len(values) and values.min() < 0):
        raise SourceFormatError(f"{where}: {name}{LENGTHS_SUFFIX} must be one non-negative integer per sample")
    if int(values.sum(dtype=np.int64)) != rows:
        raise SourceMismatchError(f"{where}: {name}{LENGTHS_SUFFIX} adds up to {int(values.sum())} rows, "
                                  f"{name} holds {rows}")
    return values.astype(np.int64)


Roles = dict[str, str]  # "x"/"y" -> the member or file name that holds it


def _named(x: str, y: str) -> Roles:
    return {"x": x, "y": y}


def _described(where: Path, members: Roles, ragged: Collection[str]) -> str:
    """``where [x + x_lengths, y]``: what a source reads, for messages and the build log."""
    parts = [f"{member} + {member}{LENGTHS_SUFFIX}" if role in ragged else member for role, member in members.items()]
    return f"{where} [{', '.join(parts)}]"


def _flat_name(member: str, ragged: bool) -> str:
    """How a role's sample count is named in messages: the lengths array when it is ragged."""
    return f"{member}{LENGTHS_SUFFIX}" if ragged else member


class RaggedNpzSource:
    """``x`` and ``y`` streamed out of an ``.npz``: each one row per sample, or a flat member plus its ``_lengths``."""

    def __init__(self, path: Path, x: str, y: str, names: set[str]) -> None:
        self.path, members = Path(path), _named(x, y)
        self._ragged = {role: member for role, member in members.items() if is_ragged(names, member)}
        fixed = {role: member for role, member in members.items() if role not in self._ragged}
        self._flat = {role: NpzArraySource(path, {role: member}) for role, member in self._ragged.items()}
        self._rows = NpzArraySource(path, {**fixed, **{f"{role}{LENGTHS_SUFFIX}": f"{member}{LENGTHS_SUFFIX}"
                                                       for role, member in self._ragged.items()}})
        self.description = _described(self.path, members, self._ragged)
        self.num_samples = self._rows.num_samples
        with np.load(path, allow_pickle=False) as archive:  # n integers per ragged role: 8 bytes a sample
            self._all_lengths = {role: _lengths(archive[f"{member}{LENGTHS_SUFFIX}"], str(path), member,
                                                self._flat[role].num_samples)
                                 for role, member in self._ragged.items()}
        self.specs = {role: ArraySpec(self._flat[role].specs[role].dtype, (None, *self._flat[role].specs[role].shape))
                      if role in self._ragged else self._rows.specs[role] for role in members}

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        with zipfile.ZipFile(self.path) as archive, ExitStack() as streams:
            flat = {}
            for role, member in self._ragged.items():
                flat[role] = streams.enter_context(self._flat[role]._open_member(archive, member))
                self._flat[role]._read_npy_header(flat[role], member)
            first = 0
            for chunk in self._rows.iter_chunks(chunk_rows):
                count = len(next(iter(chunk.values())))
                yield {role: self._records(role, flat[role], first, count) if role in flat else chunk[role]
                       for role in self.specs}
                first += count

    def _records(self, role: str, stream, first: int, count: int) -> Records:  # noqa: ANN001 - a zip member
        lengths = self._all_lengths[role][first:first + count]
        values = self._flat[role]._read_rows(stream, role, int(lengths.sum()))
        return Records(values, np.r_[0, np.cumsum(lengths)])


class RaggedNpySource:
    """The same from a folder of ``.npy`` files (``x.npy``, ``x_lengths.npy``, ``y.npy``...), memory-mapped."""

    def __init__(self, folder: Path, x: str, y: str, names: set[str]) -> None:
        members = _named(x, y)
        self._maps = {role: np.load(folder / f"{member}.npy", mmap_mode="r", allow_pickle=False)
                      for role, member in members.items()}
        self._offsets = {role: np.r_[0, np.cumsum(_lengths(np.load(folder / f"{member}{LENGTHS_SUFFIX}.npy",
                                                                   allow_pickle=False), str(folder), member,
                                                           len(self._maps[role])))]
                         for role, member in members.items() if is_ragged(names, member)}
        counts = {_flat_name(member, role in self._offsets): len(self._offsets[role]) - 1 if role in self._offsets
                  else len(self._maps[role]) for role, member in members.items()}
        if len(set(counts.values())) != 1:
            (first, many), (second, other) = counts.items()
            raise SourceMismatchError(f"{folder}: {first} has {many} samples, {second} has {other}")
        self.num_samples = next(iter(counts.values()))
        self.description = _described(folder, members, self._offsets)
        self.specs = {role: ArraySpec.of(array) for role, array in self._maps.items()}
        self.specs.update({role: ArraySpec(self.specs[role].dtype, (None, *self.specs[role].shape))
                           for role in self._offsets})

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for first in range(0, self.num_samples, chunk_rows):
            yield {role: self._rows(role, array, first, chunk_rows) for role, array in self._maps.items()}

    def _rows(self, role: str, array: np.ndarray, first: int, count: int) -> np.ndarray | Records:
        if role not in self._offsets:
            return np.array(array[first:first + count])
        index = self._offsets[role][first:first + count + 1]
        return Records(np.array(array[index[0]:index[-1]]), index - index[0])


def trusted_object_source(path: Path, x: str, y: str) -> SplitSource | None:
    """An ArraySource of a trusted ``.npz`` whose ``x`` or ``y`` is an object array (unpickled and held whole in
    memory, each object array as records), or None if neither is."""
    with np.load(path, allow_pickle=True) as archive:
        arrays = {role: archive[member] for role, member in _named(x, y).items()}
    if not any(array.dtype.hasobject for array in arrays.values()):
        return None
    return ArraySource(f"{path} [{x}, {y}] (unpickled)", **{
        role: Records.from_arrays(list(array)) if array.dtype.hasobject else array for role, array in arrays.items()})


def is_ragged(names: set[str], member: str) -> bool:
    """Whether ``member`` comes with its lengths (``member_lengths``) among ``names``."""
    return f"{member}{LENGTHS_SUFFIX}" in names


def any_ragged(names: set[str], x: str, y: str) -> bool:
    return is_ragged(names, x) or is_ragged(names, y)


__all__ = ["LENGTHS_SUFFIX", "RaggedNpySource", "RaggedNpzSource", "any_ragged", "is_ragged", "pickle_refusal",
           "trusted_object_source"]
