"""The dataset manifest: one JSON file that says what every shard holds and how to check it.

Opening a dataset reads only this file; shards are opened when a sample from them is first needed.
Every field a reader relies on is validated here, so a damaged or hand-edited manifest fails at
open with a :class:`~streamload.errors.ManifestError` naming the field, never later with a raw
``KeyError`` or ``TypeError``. Global sample indices map to (shard, offset) in O(log n), vectorised.

Format version 2 adds, beside version 1's splits and shards: the generation folder the shards live
in, which arrays are model inputs (``features``), the target and optional sample weights, label
facts (class count, names, range) and a fast CRC-32 per file beside its SHA-256. Version 1
manifests are still read (their shards lie beside the manifest, with ``x`` and ``y``). A model
input's array entry may record its ``scale`` (see write/values.py); entries without one read as before.

An array whose ``shape`` starts with ``null`` holds variable-length records (see records.py): per shard it
has a data file of concatenated rows plus an offsets index of ``n + 1`` int64 positions, both listed and
hashed like any other file. In npy shards they are the files of roles ``KEY`` and ``KEY.offsets``
(``SPLIT-NNNNN.KEY.npy``, ``SPLIT-NNNNN.KEY.offsets.npy``); in an HDF5 shard, the datasets ``KEY`` and
``KEY.offsets``. Manifests without such arrays are read, written and fingerprinted exactly as before.

An array entry may carry ``"encoding": "image"`` (only on a ``|u1`` array of shape ``[null]``): its
records are image files stored as found, decoded when read. Entries without it read as before, and
an entry without an encoding is written without the field, so older manifests keep their fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..base.validate import Field
from ..errors import InvalidOptionError, ManifestError, ManifestVersionError
from .shardfiles import open_shard_file
from .specs import ENCODINGS, ArraySpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2
FORMATS = ("npy", "hdf5")
HDF5_FILE_ROLE = "hdf5"  # an HDF5 shard is one file holding every array; npy shards have one file per array
_HASH_BLOCK = 4 * 2**20
MAX_SAMPLES = 2**48  # per shard and per split: far beyond any dataset, far below int64 overflow
# The names the shard writers give files: SPLIT-NNNNN.KEY.npy or SPLIT-NNNNN.h5 (writers._shard_stem).
SHARD_NAME = re.compile(r"(?P<split>.+)-[0-9]{5,}\.(?:.+\.npy|h5)")  # KEY.npy takes KEY.offsets.npy too
OFFSETS_SUFFIX = ".offsets"  # the offsets index of ragged array KEY is the file (npy) or dataset (HDF5) KEY.offsets


def offsets_key(key: str) -> str:
    """The role (npy) or HDF5 dataset name of the offsets index of ragged array ``key``."""
    return f"{key}{OFFSETS_SUFFIX}"


def array_roles(arrays: dict[str, ArraySpec]) -> list[str]:
    """The npy file roles of a split: each array, plus the offsets index of each ragged one."""
    return [role for key, spec in arrays.items() for role in ((key, offsets_key(key)) if spec.ragged else (key,))]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidOptionError(f"unknown shard format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class FileInfo:
    name: str
    bytes: int
    sha256: str
    crc32: int | None = None  # zlib's CRC-32 of the whole file: fast enough to check before every first use


def hash_file(path: Path, on_bytes: Callable[[int], object] | None = None) -> tuple[str, int]:
    """(hex SHA-256, CRC-32) of a file in one pass, in blocks, so any size hashes in constant memory."""
    import zlib

    digest, crc = hashlib.sha256(), 0
    with os.fdopen(open_shard_file(path), "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            crc = zlib.crc32(block, crc)
            if on_bytes:
                on_bytes(len(block))
    return digest.hexdigest(), crc


def sha256_file(path: Path, on_bytes: Callable[[int], object] | None = None) -> str:
    return hash_file(path, on_bytes)[0]


@dataclass(frozen=True)
class ShardInfo:
    num_samples: int
    files: dict[str, FileInfo]  # role -> file: the array name for npy, "hdf5" for an HDF5 shard


@dataclass(frozen=True)
class SplitInfo:
    arrays: dict[str, ArraySpec]
    shards: tuple[ShardInfo, ...]
    skipped: int = 0  # source samples left out at build time (e.g. unreadable images)
    _starts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts = np.fromiter((s.num_samples for s in self.shards), dtype=np.int64, count=len(self.shards))
        object.__setattr__(self, "_starts", np.concatenate(([0], np.cumsum(counts))))

    @property
    def num_samples(self) -> int:
        return int(self._starts[-1])

    @property
    def file_bytes(self) -> int:
        """Bytes of every shard file of the split, as the manifest records them (what an epoch reads)."""
        return sum(file.bytes for shard in self.shards for file in shard.files.values())

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
class LabelInfo:
    """Facts about integer class labels, recorded at build time so readers need not scan for them."""

    num_classes: int
    minimum: int | None  # smallest and largest label in the dataset; None when it holds no sample
    maximum: int | None
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Manifest:
    format: str
    splits: dict[str, SplitInfo]
    format_version: int = FORMAT_VERSION
    created_by: str = "streamload"
    generation: str | None = None  # folder beside the manifest holding the shards; None: the same folder
    features: tuple[str, ...] = ("x",)  # arrays that are model inputs, in order
    target: str | None = "y"  # the array the model learns to predict (None: unsupervised)
    sample_weight: str | None = None
    labels: LabelInfo | None = None  # set when the target holds integer class labels

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise KeyError(f"no split {name!r} in this dataset; it has {sorted(self.splits)}")
        return self.splits[name]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what the shards hold (format, specs, counts, file hashes): the dataset's identity.

        Two builds of the same data agree; a rebuild with other data, order or layout does not.
        """
        body = {name: {"arrays": {k: _spec_json(s) for k, s in split.arrays.items()},
                       "shards": [[shard.num_samples, sorted((r, f.sha256) for r, f in shard.files.items())]
                                  for shard in split.shards]}
                for name, split in sorted(self.splits.items())}
        text = json.dumps({"format": self.format, "splits": body}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> str:
        splits = {name: {"num_samples": split.num_samples, "skipped": split.skipped,
                         "arrays": {key: _spec_json(spec) for key, spec in split.arrays.items()},
                         "shards": [asdict(shard) for shard in split.shards]}
                  for name, split in self.splits.items()}
        labels = None if self.labels is None else {
            "num_classes": self.labels.num_classes, "min": self.labels.minimum, "max": self.labels.maximum,
            "class_names": None if self.labels.class_names is None else list(self.labels.class_names)}
        data = {"format_version": self.format_version, "format": self.format, "created_by": self.created_by,
                "generation": self.generation, "features": list(self.features), "target": self.target,
                "sample_weight": self.sample_weight, "labels": labels, "splits": splits}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> Manifest:
        """Validate every field readers use; a wrong one raises ManifestError naming it."""
        root = Field(data, str(path), ManifestError).object()
        version = root.get("format_version").integer(minimum=1)
        if version > FORMAT_VERSION:
            raise ManifestVersionError(f"{path}: manifest format version {version} is newer than this streamload "
                                       f"supports ({FORMAT_VERSION}); upgrade streamload to read it")
        fmt = root.get("format").choice(FORMATS)
        splits = {name: _split(name, value, fmt) for name, value in root.get("splits").entries()}
        if version == 1:
            return cls(format=fmt, splits=splits, format_version=1, created_by=root.optional("created_by", "").text())
        manifest = cls(
            format=fmt, splits=splits, format_version=version, created_by=root.optional("created_by", "").text(),
            generation=root.optional("generation", None).file_name(nullable=True),
            features=tuple(root.get("features").text_list(nonempty=True)),
            target=root.optional("target", None).text(nullable=True),
            sample_weight=root.optional("sample_weight", None).text(nullable=True),
            labels=_labels(root.optional("labels", None)))
        _check_roles(manifest, root)
        return manifest


def _spec_json(spec: ArraySpec) -> dict[str, Any]:
    """An array's entry; ``scale`` only when the build recorded one, so older manifests keep their fingerprint."""
    data = asdict(spec)
    for optional in ("scale", "encoding"):
        if data[optional] is None:
            del data[optional]
    return data


def _scale(node: Field) -> float | None:
    """A recorded input scale: a positive finite number, or null."""
    value = node.value
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
    if not ok:
        raise node.error(f"must be a positive number or null, got {value!r}"[:160])
    return float(value)


def _encoding(node: Field, dtype: str, shape: tuple[int | None, ...]) -> str | None:
    """What the records of an array are files of (``"image"``), or null: only uint8 records of shape [null]."""
    if node.value is None:
        return None
    encoding = node.choice(ENCODINGS)
    if np.dtype(dtype) != np.uint8 or shape != (None,):
        raise node.error(f"{encoding!r} needs an array of dtype |u1 and shape [null] (one file's bytes per "
                         f"record), this one is {dtype} {list(shape)}")
    return encoding


def _array(node: Field) -> ArraySpec:
    dtype, shape = node.get("dtype").dtype(), _shape(node.get("shape"))
    return ArraySpec(dtype=dtype, shape=shape, scale=_scale(node.optional("scale", None)),
                     encoding=_encoding(node.optional("encoding", None), dtype, shape))


def _split(name: str, node: Field, fmt: str) -> SplitInfo:
    node = node.object()
    arrays = {key: _array(spec) for key, spec in node.get("arrays").entries()}
    if not arrays:
        raise node.get("arrays").error("a split needs at least one array")
    roles = array_roles(arrays)
    if len(set(roles)) != len(roles):
        raise node.get("arrays").error(f"names an array {OFFSETS_SUFFIX!r} after a ragged array: {sorted(roles)}")
    roles = set(roles) if fmt == "npy" else {HDF5_FILE_ROLE}
    shards = tuple(_shard(shard, roles, name) for shard in node.get("shards").items())
    if sum(shard.num_samples for shard in shards) > MAX_SAMPLES:  # sample indices are int64
        raise node.get("shards").error(f"hold more than {MAX_SAMPLES} samples in all")
    split = SplitInfo(arrays=arrays, shards=shards, skipped=node.optional("skipped", 0).integer(minimum=0))
    total = node.optional("num_samples", split.num_samples)
    if total.integer(minimum=0) != split.num_samples:
        raise total.error(f"says {total.value} samples but the shards hold {split.num_samples}")
    return split


def _shape(node: Field) -> tuple[int | None, ...]:
    """A per-sample shape: sizes >= 0, the first of which may be null (a ragged array's records)."""
    items = list(node.items())
    first = () if not items or items[0].value is not None else (None,)
    return (*first, *(item.integer(minimum=0) for item in items[len(first):]))


def _shard(node: Field, roles: set[str], split: str) -> ShardInfo:
    node = node.object()
    files_node = node.get("files").object()
    if set(files_node.keys()) != roles:
        raise files_node.error(f"holds files for {sorted(files_node.keys())}, this format needs {sorted(roles)}")
    files = {role: FileInfo(name=_shard_name(info.get("name"), split), bytes=info.get("bytes").integer(minimum=0),
                            sha256=info.get("sha256").hex_digest(64),
                            crc32=info.optional("crc32", None).integer(minimum=0, maximum=2**32 - 1, nullable=True))
             for role, info in ((role, files_node.get(role).object()) for role in sorted(roles))}
    return ShardInfo(num_samples=node.get("num_samples").integer(minimum=0, maximum=MAX_SAMPLES), files=files)


def _shard_name(node: Field, split: str) -> str:
    """A name a shard writer of this split gives, printable: names end up in messages and in ``.verified`` lines."""
    name = node.file_name()
    match = SHARD_NAME.fullmatch(name) if name.isprintable() else None
    if match is None or match["split"] != split:
        raise node.error(f"must be a shard file name as streamload writes them for split {split!r} "
                         f"(SPLIT-NNNNN.KEY.npy, ...KEY.offsets.npy or SPLIT-NNNNN.h5), got {ascii(name)[:120]}")
    return name


def _labels(node: Field) -> LabelInfo | None:
    if node.value is None:
        return None
    node = node.object()
    names = node.optional("class_names", None)
    info = LabelInfo(num_classes=node.get("num_classes").integer(minimum=1),
                     minimum=node.get("min").integer(nullable=True), maximum=node.get("max").integer(nullable=True),
                     class_names=None if names.value is None else tuple(names.text_list()))
    if (info.minimum is None) != (info.maximum is None) or (
            info.minimum is not None and not 0 <= info.minimum <= info.maximum < info.num_classes):
        raise node.error(f"label range [{info.minimum}, {info.maximum}] does not lie in [0, {info.num_classes})")
    if info.class_names is not None and len(info.class_names) != info.num_classes:
        raise names.error(f"names {len(info.class_names)} classes, num_classes says {info.num_classes}")
    return info


def _check_roles(manifest: Manifest, root: Field) -> None:
    """Features, target and weights must name arrays that every split holds."""
    for name, split in manifest.splits.items():
        for role, keys in (("features", manifest.features), ("target", (manifest.target,)),
                           ("sample_weight", (manifest.sample_weight,))):
            missing = [key for key in keys if key is not None and key not in split.arrays]
            if missing:
                raise root.get(role).error(f"names {missing}, which split {name!r} does not hold")


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """Load ``DIR/manifest.json``; every way it can be wrong is a ManifestError naming the file and field."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest; build the dataset with scripts/build_shards.py") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{path}: manifest is not valid JSON: {exc}") from exc
    return Manifest.from_dict(data, path)
