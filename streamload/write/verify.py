"""Checking a built dataset against its manifest: everything reading relies on, file by file.

Every shard file must be present, of the recorded size, SHA-256 and CRC-32, and its header must
agree with the manifest: the ``.npy`` header's dtype, shape (rows = the shard's sample count) and
payload size, or the HDF5 file's dataset names, shapes and dtypes. Class labels must lie in the
range the manifest records. A shard that is a symbolic link or not a regular file (a FIFO would make
the check wait forever) is a problem, never followed or opened, and so is an HDF5 dataset whose bytes
lie outside its file (external storage, a virtual dataset, a link): hashing the shard would not cover
them. The check holds a lease on the generation, so a rebuild running at the same time cannot delete
the files being checked.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import ManifestError, ObjectNotFoundError, ShardFormatError
from ..format.hdf5.reader import foreign_storage
from ..format.manifest import (
    HDF5_FILE_ROLE,
    MANIFEST_NAME,
    OFFSETS_SUFFIX,
    FileInfo,
    LabelInfo,
    Manifest,
    hash_file,
    offsets_key,
    read_manifest,
)
from ..format.records import OFFSETS_DTYPE, offsets_problem
from ..format.shardfiles import irregular_shard, open_shard_file
from ..format.specs import read_npy_header
from ..places.bucket import BucketPlace
from ..places.generations import acquire
from ..store.url import is_remote

Layout = dict[str, tuple[tuple[int | None, ...], np.dtype]]  # array -> (full shape, None: any rows; dtype) in a file


@dataclass(frozen=True)
class ShardProblem:
    """One bad file of one shard, with what is wrong in words."""

    split: str
    shard: int
    file: str
    problem: str

    def __str__(self) -> str:
        where = f" (split {self.split!r}, shard {self.shard})" if self.shard >= 0 else ""
        return f"{self.file}{where}: {self.problem}"


def verify_dataset(directory: str | os.PathLike, *, progress: bool = True) -> list[ShardProblem]:
    """Check every file of the current generation; an empty list means the dataset is sound.

    An unreadable manifest raises :class:`~streamload.errors.ManifestError` instead, since then no
    shard can be checked at all.
    """
    if is_remote(directory):
        return _verify_bucket(BucketPlace(str(directory)), progress)
    with acquire(directory) as lease:
        manifest, root = lease.manifest, lease.root
        problems = _check_manifest_copy(lease.directory, manifest)
        total = sum(info.bytes for *_, info in _files(manifest))
        with tqdm(total=total, desc="verifying", unit="B", unit_scale=True, disable=not progress) as bar:
            for split_name, index, role, info in _files(manifest):
                problem = _check_one(root, manifest, split_name, index, role, info, bar.update)
                if problem:
                    problems.append(ShardProblem(split_name, index, info.name, problem))
    return problems


def _files(manifest: Manifest) -> list[tuple[str, int, str, FileInfo]]:
    return [(split_name, index, role, info)
            for split_name, split in manifest.splits.items()
            for index, shard in enumerate(split.shards)
            for role, info in shard.files.items()]


def _check_one(root: Path, manifest: Manifest, split_name: str, index: int, role: str, info: FileInfo,
               on_bytes: Callable[[int], object]) -> str | None:
    layout = expected_layout(manifest, split_name, index, role)
    problem = check_file(root / info.name, info, on_bytes, layout, manifest.format)
    if problem is None:
        problem = check_offsets(root, shard_files(manifest, split_name, index), layout, manifest.format,
                                ragged_keys(manifest, split_name))
    if problem is None and manifest.labels is not None and manifest.target in layout:
        problem = check_labels(root / info.name, manifest.format, manifest.target, manifest.labels)
    return problem


def _verify_bucket(place: BucketPlace, progress: bool) -> list[ShardProblem]:
    """The same checks for ``s3://bucket/prefix``: its current generation, shard by shard downloaded into a
    temporary folder (one shard's files at a time), checked there, then deleted."""
    hold = place.open()
    manifest, problems = hold.manifest, []
    total = sum(info.bytes for *_, info in _files(manifest))
    with tqdm(total=total, desc="verifying", unit="B", unit_scale=True, disable=not progress) as bar, \
            tempfile.TemporaryDirectory(prefix="streamload-verify-") as folder:
        root = Path(folder)
        for split_name, split in manifest.splits.items():
            for index, shard in enumerate(split.shards):
                missing = set()
                for info in shard.files.values():
                    try:
                        place.store.get_file(f"{hold.generation}/{info.name}", root / info.name)
                    except ObjectNotFoundError:
                        missing.add(info.name)
                        problems.append(ShardProblem(split_name, index, info.name, "missing from the bucket"))
                for role, info in shard.files.items():
                    if info.name not in missing:
                        problem = _check_one(root, manifest, split_name, index, role, info, bar.update)
                        if problem:
                            problems.append(ShardProblem(split_name, index, info.name, problem))
                for info in shard.files.values():
                    (root / info.name).unlink(missing_ok=True)
    return problems


def _check_manifest_copy(directory: Path, manifest: Manifest) -> list[ShardProblem]:
    """Processes that continue a reader's generation (spawned workers) read its copy: it must be the same."""
    if manifest.generation is None:
        return []
    name = f"{manifest.generation}/{MANIFEST_NAME}"
    try:
        copy = read_manifest(directory / manifest.generation)
    except ManifestError as exc:
        return [ShardProblem("", -1, name, f"unreadable copy of the manifest: {exc}")]
    if copy != manifest:
        return [ShardProblem("", -1, name, f"differs from {directory / MANIFEST_NAME}")]
    return []


def expected_layout(manifest: Manifest, split: str, shard: int, role: str) -> Layout:
    """What the file of ``role`` in a shard must hold, by the manifest: array -> (shape, dtype)."""
    info = manifest.splits[split]
    rows = info.shards[shard].num_samples
    keys = list(info.arrays) if role == HDF5_FILE_ROLE else [role]
    layout: Layout = {}
    for key in keys:
        if key.endswith(OFFSETS_SUFFIX) and key not in info.arrays:  # an npy shard's offsets file
            layout[key] = ((rows + 1,), OFFSETS_DTYPE)
            continue
        spec = info.arrays[key]
        layout[key] = ((rows, *spec.shape) if not spec.ragged else spec.shape, np.dtype(spec.dtype))
        if spec.ragged and role == HDF5_FILE_ROLE:
            layout[offsets_key(key)] = ((rows + 1,), OFFSETS_DTYPE)
    return layout


def shard_files(manifest: Manifest, split: str, shard: int) -> dict[str, str]:
    """Role -> file name of one shard."""
    return {role: info.name for role, info in manifest.splits[split].shards[shard].files.items()}


def ragged_keys(manifest: Manifest, split: str) -> list[str]:
    return [key for key, spec in manifest.splits[split].arrays.items() if spec.ragged]


def check_offsets(root: Path, files: dict[str, str], layout: Layout, fmt: str, ragged: list[str]) -> str | None:
    """The offsets index of each ragged array in ``layout`` (an npy offsets file, or the offsets datasets of an
    HDF5 shard) against its data's row count: see records.offsets_problem."""
    for data_key in ragged:
        key = offsets_key(data_key)
        if key not in layout:
            continue
        try:
            offsets, rows = _offsets_and_rows(root, files, key, data_key, fmt)
        except (OSError, ValueError, KeyError) as exc:
            return f"offsets {key!r}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        problem = offsets_problem(offsets, rows)
        if problem is not None:
            return problem if fmt == "npy" else f"dataset {key!r}: {problem}"
    return None


def _offsets_and_rows(root: Path, files: dict[str, str], key: str, data_key: str, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "npy":
        with os.fdopen(open_shard_file(root / files[data_key]), "rb") as stream:
            rows = read_npy_header(stream)[1][0]
        return np.load(root / files[key], mmap_mode="r", allow_pickle=False), int(rows)
    import h5py

    with h5py.File(root / files[HDF5_FILE_ROLE], "r") as handle:
        return handle[key][()], int(handle[data_key].shape[0])


def check_file(path: Path, info: FileInfo, on_bytes: Callable[[int], object] | None = None,
               layout: Layout | None = None, fmt: str = "npy") -> str | None:
    """What is wrong with ``path`` compared to its manifest entry (and ``layout``), or None.

    ``lstat``, not ``stat``: a link is never followed and a FIFO never opened (which would wait forever).
    """
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    irregular = irregular_shard(path, status.st_mode)
    if irregular is not None:
        return str(irregular).removeprefix(f"{path}: ")
    if status.st_size != info.bytes:
        kind = "truncated" if status.st_size < info.bytes else "too long"
        return f"{kind}: {status.st_size} bytes, the manifest says {info.bytes}"
    try:
        problems = [] if layout is None else check_header(path, fmt, layout)
        sha256, crc32 = hash_file(path, on_bytes)
    except ShardFormatError as exc:  # replaced by a link or a FIFO since the lstat
        return str(exc).removeprefix(f"{path}: ")
    if sha256 != info.sha256:
        problems.append(f"checksum mismatch: SHA-256 {sha256[:16]}..., the manifest says {info.sha256[:16]}...")
    elif info.crc32 is not None and crc32 != info.crc32:
        problems.append(f"checksum mismatch: CRC-32 {crc32:08x}, the manifest says {info.crc32:08x}")
    return "; ".join(problems) or None


def check_header(path: Path, fmt: str, layout: Layout) -> list[str]:
    """Disagreements between a shard file's own header and the manifest, each naming the field."""
    if fmt == "npy":
        ((key, (shape, dtype)),) = layout.items()
        return _check_npy(path, key, shape, dtype)
    return _check_hdf5(path, layout)


def _check_npy(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> list[str]:
    try:
        with os.fdopen(open_shard_file(path), "rb") as stream:
            version, found_shape, fortran, found_dtype, offset = read_npy_header(stream)
    except (ValueError, SyntaxError, EOFError):  # not numpy's message: it quotes the file's first bytes
        return ["header: not a .npy header (no readable .npy magic and header)"]
    if version not in ((1, 0), (2, 0)):
        return [f"header: unsupported .npy version {version}"]
    problems = []
    if found_dtype != dtype:
        problems.append(f"array {key!r}: header says dtype {found_dtype.str}, the manifest says {dtype.str}")
    if not _shape_fits(found_shape, shape):
        problems.append(f"array {key!r}: header says shape {found_shape}, the manifest says {shape}")
    if fortran:
        problems.append(f"array {key!r}: header says Fortran order, shards are C order")
    payload = math.prod(found_shape) * found_dtype.itemsize
    size = path.stat().st_size
    if not problems and offset + payload != size:
        problems.append(f"array {key!r}: header and data disagree: {offset} + {payload} bytes expected, "
                        f"file has {size}")
    return problems


def _shape_fits(found: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """``found`` is ``expected``, where None (a ragged array's row count) takes any size."""
    return len(found) == len(expected) and all(b is None or a == b for a, b in zip(found, expected))


def _check_hdf5(path: Path, layout: Layout) -> list[str]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names = sorted(handle.keys())
            problems = [] if names == sorted(layout) else [
                f"datasets: file holds {names}, the manifest says {sorted(layout)}"]
            for key in sorted(set(names) & set(layout)):
                shape, dtype = layout[key]
                foreign = foreign_storage(handle, key)
                if foreign is not None:
                    problems.append(f"array {key!r}: {foreign}")
                    continue
                dataset = handle[key]
                if dataset.dtype != dtype:
                    problems.append(f"array {key!r}: file says dtype {dataset.dtype.str}, "
                                    f"the manifest says {dtype.str}")
                if not _shape_fits(dataset.shape, shape):
                    problems.append(f"array {key!r}: file says shape {dataset.shape}, the manifest says {shape}")
            return problems
    except OSError as exc:
        return [f"header: not a readable HDF5 file ({str(exc).splitlines()[0]})"]


def check_labels(path: Path, fmt: str, target: str, labels: LabelInfo) -> str | None:
    """Class labels of one file outside the manifest's recorded range [min, max] (within [0, num_classes))."""
    if fmt == "npy":
        values = np.load(path, mmap_mode="r")
    else:
        import h5py

        with h5py.File(path, "r") as handle:
            values = handle[target][()]
    if not values.size:
        return None
    low, high = int(values.min()), int(values.max())
    if labels.minimum is None or labels.maximum is None or low < labels.minimum or high > labels.maximum:
        return (f"array {target!r}: labels lie in [{low}, {high}], outside the manifest's labels range "
                f"[{labels.minimum}, {labels.maximum}] of {labels.num_classes} classes")
    return None
