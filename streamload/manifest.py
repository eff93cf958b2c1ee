"""The dataset manifest: one JSON file that says what every shard holds and how to check it.

Opening a dataset reads only this file; shards are opened when a sample from them is first needed.
Global sample indices map to (shard, offset) through the cumulative counts in O(log n), vectorised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidOptionError, ManifestError, ManifestVersionError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
FORMATS = ("npy", "hdf5")
_HASH_BLOCK = 4 * 2**20
HDF5_FILE_ROLE = "hdf5"  # an HDF5 shard is one file holding every array; npy shards have one file per array


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidOptionError(f"unknown shard format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class ArraySpec:
    """Dtype and per-sample shape of one array (``x`` or ``y``) of a split."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySpec:
        """The spec of the samples of ``array`` (its first axis counts samples)."""
        return cls(dtype=np.dtype(array.dtype).newbyteorder("=").str, shape=tuple(array.shape[1:]))


@dataclass(frozen=True)
class FileInfo:
    name: str
    bytes: int
    sha256: str


def sha256_file(path: Path, on_bytes: Callable[[int], object] | None = None) -> str:
    """Hex SHA-256 of a file, read in blocks so any size hashes in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            if on_bytes:
                on_bytes(len(block))
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    num_samples: int
    files: dict[str, FileInfo]  # role -> file: the array name for npy, "hdf5" for an HDF5 shard


@dataclass(frozen=True)
class SplitInfo:
    arrays: dict[str, ArraySpec]
    shards: tuple[ShardInfo, ...]
    _starts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts = np.fromiter((s.num_samples for s in self.shards), dtype=np.int64, count=len(self.shards))
        object.__setattr__(self, "_starts", np.concatenate(([0], np.cumsum(counts))))

    @property
    def num_samples(self) -> int:
        return int(self._starts[-1])

    @property
    def shard_starts(self) -> np.ndarray:
        """First global index of each shard, plus the total at the end (read-only)."""
        view = self._starts.view()
        view.flags.writeable = False
        return view

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map global sample indices to (shard number, offset inside the shard)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_samples):
            raise IndexError(f"sample index out of range [0, {self.num_samples})")
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        return shard, indices - self._starts[shard]


@dataclass(frozen=True)
class Manifest:
    format: str
    splits: dict[str, SplitInfo]
    format_version: int = FORMAT_VERSION
    created_by: str = "streamload"

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise KeyError(f"no split {name!r} in this dataset; it has {sorted(self.splits)}")
        return self.splits[name]

    def to_json(self) -> str:
        splits = {
            name: {"num_samples": split.num_samples,
                   "arrays": {key: asdict(spec) for key, spec in split.arrays.items()},
                   "shards": [asdict(shard) for shard in split.shards]}
            for name, split in self.splits.items()
        }
        data = {"format_version": self.format_version, "format": self.format,
                "created_by": self.created_by, "splits": splits}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> Manifest:
        version = data.get("format_version")
        if not isinstance(version, int):
            raise ManifestError(f"{path}: no integer 'format_version'; is this a streamload manifest?")
        if version > FORMAT_VERSION:
            raise ManifestVersionError(
                f"{path}: manifest format version {version} is newer than this streamload supports "
                f"({FORMAT_VERSION}); upgrade streamload to read it"
            )
        try:
            splits = {name: _split_from_dict(split) for name, split in data["splits"].items()}
            return cls(format=check_format(data["format"]), splits=splits, format_version=version,
                       created_by=str(data.get("created_by", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{path}: malformed manifest: {type(exc).__name__}: {exc}") from exc


def _split_from_dict(data: dict[str, Any]) -> SplitInfo:
    arrays = {name: ArraySpec(dtype=str(spec["dtype"]), shape=tuple(int(d) for d in spec["shape"]))
              for name, spec in data["arrays"].items()}
    shards = tuple(
        ShardInfo(num_samples=_count(shard["num_samples"]),
                  files={role: _file_info(info) for role, info in shard["files"].items()})
        for shard in data["shards"]
    )
    split = SplitInfo(arrays=arrays, shards=shards)
    if data.get("num_samples", split.num_samples) != split.num_samples:
        raise ValueError(f"split says {data['num_samples']} samples but its shards hold {split.num_samples}")
    return split


def _count(value: Any) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"a sample count must be a non-negative integer, got {value!r}")
    return value


def _file_info(info: dict[str, Any]) -> FileInfo:
    """A file entry, checked so that verify and the readers never meet a wrong type or a path."""
    file = FileInfo(**info)
    if not isinstance(file.name, str) or file.name in ("", ".", "..") or Path(file.name).name != file.name:
        raise ValueError(f"shard file name must be a plain file name inside the dataset folder, got {file.name!r}")
    if not isinstance(file.sha256, str):
        raise ValueError(f"{file.name}: sha256 must be a hex string, got {file.sha256!r}")
    _count(file.bytes)
    return file


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """Load ``DIR/manifest.json``; every way it can be wrong is a ManifestError naming the file."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest; build the dataset with scripts/build_shards.py") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object, found {type(data).__name__}")
    return Manifest.from_dict(data, path)
