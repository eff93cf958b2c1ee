"""Samples of varying length in NumPy files, without pickle: a flat array plus its lengths.

NumPy stores a list of arrays of different lengths as an object array, which only ``pickle`` reads back,
and unpickling a file runs whatever code its author put in it. streamload refuses object arrays unless
told the file is trusted (``--allow-pickle``, ``allow_pickle=True``). The pickle-free form it reads
instead is the one it stores: beside ``NAME`` (every sample's rows back to back) the same ``.npz`` (or
folder of ``.npy`` files) holds ``NAME_lengths`` (one row count per sample, ``sum == len(NAME)``), e.g.
``np.savez(path, x_train=np.concatenate(seqs), x_train_lengths=[len(s) for s in seqs], y_train=labels)``.
Lengths rather than offsets: they are what a user has at hand (``len(s)``), and one wrong value cannot
make the rest point backwards. Only the inputs may be ragged; targets are one row per sample.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
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


class RaggedNpzSource:
    """``x`` from a flat member and its ``_lengths``, ``y`` one row per sample, streamed out of an ``.npz``."""

    def __init__(self, path: Path, x: str, y: str) -> None:
        self.path, self.x = Path(path), x
        self._flat = NpzArraySource(path, {"x": x})
        self._rows = NpzArraySource(path, {"lengths": f"{x}{LENGTHS_SUFFIX}", "y": y})
        self.description = f"{path} [{x} + {x}{LENGTHS_SUFFIX}, {y}]"
        self.num_samples = self._rows.num_samples
        with np.load(path, allow_pickle=False) as archive:  # n integers: 8 bytes a sample
            self._all_lengths = _lengths(archive[f"{x}{LENGTHS_SUFFIX}"], str(path), x, self._flat.num_samples)
        flat = self._flat.specs["x"]
        self.specs = {"x": ArraySpec(flat.dtype, (None, *flat.shape)), "y": self._rows.specs["y"]}

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        with zipfile.ZipFile(self.path) as archive, self._flat._open_member(archive, self.x) as stream:
            self._flat._read_npy_header(stream, self.x)
            first = 0
            for chunk in self._rows.iter_chunks(chunk_rows):
                lengths = self._all_lengths[first:first + len(chunk["y"])]
                first += len(lengths)
                values = self._flat._read_rows(stream, "x", int(lengths.sum()))
                yield {"x": Records(values, np.r_[0, np.cumsum(lengths)]), "y": chunk["y"]}


class RaggedNpySource:
    """The same from a folder of ``.npy`` files (``x.npy``, ``x_lengths.npy``, ``y.npy``), memory-mapped."""

    def __init__(self, folder: Path, x: str, y: str) -> None:
        self.paths = {"x": folder / f"{x}.npy", "y": folder / f"{y}.npy"}
        self._maps = {key: np.load(path, mmap_mode="r", allow_pickle=False) for key, path in self.paths.items()}
        self._all_lengths = _lengths(np.load(folder / f"{x}{LENGTHS_SUFFIX}.npy", allow_pickle=False), str(folder), x,
                                     len(self._maps["x"]))
        if len(self._all_lengths) != len(self._maps["y"]):
            raise SourceMismatchError(f"{folder}: {x}{LENGTHS_SUFFIX} has {len(self._all_lengths)} samples, {y} has "
                                      f"{len(self._maps['y'])}")
        self.description, self.num_samples = f"{folder} [{x} + {x}{LENGTHS_SUFFIX}, {y}]", len(self._all_lengths)
        flat, y_spec = ArraySpec.of(self._maps["x"]), ArraySpec.of(self._maps["y"])
        self.specs = {"x": ArraySpec(flat.dtype, (None, *flat.shape)), "y": y_spec}
        self._offsets = np.r_[0, np.cumsum(self._all_lengths)]

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for first in range(0, self.num_samples, chunk_rows):
            index = self._offsets[first:first + chunk_rows + 1]
            yield {"x": Records(np.array(self._maps["x"][index[0]:index[-1]]), index - index[0]),
                   "y": np.array(self._maps["y"][first:first + chunk_rows])}


def trusted_object_source(path: Path, x: str, y: str) -> SplitSource | None:
    """An ArraySource of a trusted ``.npz``'s object array ``x`` (unpickled and held whole in memory), or None if
    ``x`` is not an object array."""
    with np.load(path, allow_pickle=True) as archive:
        if not archive[x].dtype.hasobject:
            return None
        records = Records.from_arrays(list(archive[x]))
        return ArraySource(f"{path} [{x}, {y}] (unpickled)", x=records, y=archive[y])


def is_ragged(names: set[str], x: str) -> bool:
    return f"{x}{LENGTHS_SUFFIX}" in names


__all__ = ["LENGTHS_SUFFIX", "RaggedNpySource", "RaggedNpzSource", "is_ragged", "pickle_refusal",
           "trusted_object_source"]
