"""Arrays in NumPy files: an ``.npz`` archive with any names, or ``.npy`` files, never loaded whole.

An ``.npz`` member is streamed out of the zip file (compressed or not) by :class:`NpzArraySource`;
an ``.npy`` file is memory-mapped and copied out a chunk of rows at a time. Dtypes (in native byte
order) and per-sample shapes are kept exactly; the dataset's arrays are named ``x`` and ``y``.

Which arrays pair up, with ``X``/``Y`` the ``--x-key``/``--y-key`` (default ``x``/``y``): ``X_train``
and ``Y_train`` (plus ``X_test``/``Y_test`` and ``X_validation``/``Y_validation`` or ``X_val``/``Y_val``
when present: Keras' layout, as in ``mnist.npz``), else ``X`` and ``Y`` as the train split. In a
folder the same names are looked up as ``NAME.npy`` files; a single ``.npy`` file is ``x``, with
``--y-key`` naming the labels file beside it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ...errors import SourceFormatError, SourceMismatchError, SourceNotFoundError
from ...format.specs import ArraySpec
from .arrays import NpzArraySource, check_sample_size, pickle_refusal
from .base import DEFAULT_CHUNK_ROWS, Chunk, SplitSource, rows_per_chunk

SPLIT_SUFFIXES = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
STORABLE_KINDS = "biufc"  # booleans and numbers: what .npy and HDF5 shards both hold


def check_storable(specs: Mapping[str, ArraySpec], where: str) -> None:
    """Refuse arrays of strings, objects, records or dates, which shards cannot hold."""
    for key, spec in specs.items():
        if np.dtype(spec.dtype).kind not in STORABLE_KINDS:
            raise SourceFormatError(f"{where}: array {key!r} has dtype {spec.dtype}; shards hold numbers and booleans")


def _open_npy(path: Path) -> np.memmap:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{path}: no such .npy file") from exc
    except ValueError as exc:  # not a .npy file, a pickled object array, an empty file...
        if "allow_pickle" in str(exc):
            raise pickle_refusal(str(path), path.stem) from None
        raise SourceFormatError(f"{path}: cannot memory-map as a .npy array: {exc}") from exc
    if array.ndim == 0:
        raise SourceFormatError(f"{path}: a 0-d array has no samples; its first axis must count them")
    check_sample_size(str(path), path.stem, array.shape, array.dtype)
    return array


class NpyPairSource:
    """Inputs and targets in two ``.npy`` files of equal length, memory-mapped, in any dtype and shape."""

    def __init__(self, x_path: str | os.PathLike, y_path: str | os.PathLike) -> None:
        self.paths = {"x": Path(x_path), "y": Path(y_path)}
        arrays = {key: _open_npy(path) for key, path in self.paths.items()}
        if len(arrays["x"]) != len(arrays["y"]):
            raise SourceMismatchError(f"{self.paths['x']} has {len(arrays['x'])} rows but {self.paths['y']} has "
                                      f"{len(arrays['y'])}; they must pair up one to one")
        self.num_samples = len(arrays["x"])
        self.specs = {key: ArraySpec.of(array) for key, array in arrays.items()}
        self.description = f"{self.paths['x']} + {self.paths['y'].name}"
        check_storable(self.specs, self.description)

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        arrays = {key: _open_npy(path) for key, path in self.paths.items()}
        rows = rows_per_chunk(self.specs, chunk_rows)
        for start in range(0, self.num_samples, rows):
            yield {key: np.ascontiguousarray(array[start:start + rows], dtype=np.dtype(self.specs[key].dtype))
                   for key, array in arrays.items()}


def pair_names(names: set[str], x_key: str | None, y_key: str | None, where: Path) -> dict[str, tuple[str, str]]:
    """Split -> (inputs name, targets name) among ``names``, by the rule in this module's docstring."""
    x, y = x_key or "x", y_key or "y"
    splits = {split: (f"{x}_{suffix}", f"{y}_{suffix}") for suffix, split in SPLIT_SUFFIXES.items()
              if {f"{x}_{suffix}", f"{y}_{suffix}"} <= names}
    if "train" in splits:
        return splits
    if {x, y} <= names:
        return {"train": (x, y)}
    raise SourceFormatError(f"{where}: no arrays {x!r} and {y!r} (nor {x}_train and {y}_train); it holds "
                            f"{sorted(names)}: name the inputs and targets with --x-key and --y-key")


def _npz_source(path: Path, names: set[str], x: str, y: str, allow_pickle: bool) -> SplitSource:
    from .sequences import RaggedNpzSource, any_ragged, trusted_object_source

    if any_ragged(names, x, y):
        return RaggedNpzSource(path, x, y, names)
    trusted = trusted_object_source(path, x, y) if allow_pickle else None
    return trusted or NpzArraySource(path, {"x": x, "y": y})


def npz_sources(path: Path, x_key: str | None = None, y_key: str | None = None,
                allow_pickle: bool = False) -> dict[str, SplitSource]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name[:-4] for name in archive.namelist() if name.endswith(".npy")}
    except zipfile.BadZipFile as exc:
        raise SourceFormatError(f"{path}: not an .npz archive ({exc})") from exc
    if not names:
        raise SourceFormatError(f"{path}: the .npz archive holds no arrays")
    sources = {split: _npz_source(path, names, x, y, allow_pickle)
               for split, (x, y) in pair_names(names, x_key, y_key, path).items()}
    for source in sources.values():
        check_storable(source.specs, source.description)
    return sources


def numpy_sources(path: str | os.PathLike, x_key: str | None = None, y_key: str | None = None,
                  allow_pickle: bool = False) -> dict[str, SplitSource]:
    """Split -> source for an ``.npz`` archive, a folder of ``.npy`` files, or one ``.npy`` file.

    Inputs or targets of varying length come as ``X`` plus ``X_lengths`` (see sequences.py); object arrays only with
    ``allow_pickle`` (an ``.npz`` of a trusted author)."""
    from .sequences import RaggedNpySource, any_ragged

    path = Path(path).expanduser()
    if path.is_dir():
        names = {file.stem for file in path.glob("*.npy")}
        return {split: RaggedNpySource(path, x, y, names) if any_ragged(names, x, y) else
                NpyPairSource(path / f"{x}.npy", path / f"{y}.npy")
                for split, (x, y) in pair_names(names, x_key, y_key, path).items()}
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".npy":
        if not y_key:
            raise SourceFormatError(f"{path}: a single .npy file holds the inputs; name its targets file beside "
                                    "it with --y-key (e.g. --y-key y for y.npy), or pass the folder")
        return {"train": NpyPairSource(path, path.with_name(f"{y_key}.npy"))}
    return npz_sources(path, x_key, y_key, allow_pickle)
