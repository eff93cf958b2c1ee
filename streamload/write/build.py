"""Building a dataset: every split is written into a new generation, published by one atomic switch.

A build never changes what a running reader reads: readers hold the generation they opened (see
generations.py) and the build writes the next one beside it (see staging.py). A build killed at any
point leaves the previous dataset complete, plus at most a hidden staging folder whose lock died
with the build, which the next build removes. Sources are checked as they stream (label range,
sample counts); any failure, a full disk included, leaves the dataset as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..errors import (
    DatasetExistsError,
    ForeignDataError,
    InvalidOptionError,
    ManifestError,
    OutOfSpaceError,
    StreamloadError,
    UnsafeFileError,
)
from ..format.dispatch import make_writer
from ..format.hdf5.writer import COMPRESSIONS
from ..format.labels import LabelTracker, is_class_label
from ..format.manifest import MANIFEST_NAME, Manifest, SplitInfo, check_format, read_manifest
from ..places.generations import collect_garbage
from ..places.layout import (
    BUILD_LOCK_NAME,
    FLAT_LOCK_NAME,
    check_own_dataset,
    is_own_leftover,
    is_regular_file,
    next_generation,
    unlock,
)
from .sources.base import DEFAULT_CHUNK_ROWS, SOURCE_ROLES, SplitSource
from .staging import (
    Staging,
    build_lock,
    move_into_place,
    new_building_folder,
    note_flat_leftovers,
    remove_abandoned_folders,
)
from .values import SplitValues, check_pixel_scale, input_scales, refuse_complex, with_scales

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_OURS = (BUILD_LOCK_NAME, FLAT_LOCK_NAME)  # files a build leaves in a folder besides the dataset itself
_POSITIVE = {"num_classes": "number of classes must be a positive integer",
             "shard_size": "shard size must be a positive number of samples",
             "chunk_rows": "chunk rows must be a positive integer"}


@dataclass(frozen=True)
class BuildOptions:
    """How to write shards; validated on construction so bad options fail before any work."""

    format: str = "npy"
    shard_size: int | None = None  # samples per shard; None means about 64 MB
    compression: str | None = None  # HDF5 only: "gzip" or "lzf", stored chunked
    overwrite: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # rows read from the source at a time
    progress: bool = True
    num_classes: int | None = None  # class labels must lie in [0, num_classes); None: largest label + 1
    pixel_scale: float | None = None  # what readers multiply every model input by; None: decided from the data
    allow_nonfinite: bool = False  # keep NaN and infinity in float arrays instead of refusing the build

    def __post_init__(self) -> None:
        check_format(self.format)
        for name, what in _POSITIVE.items():  # any integral number (np.int64 too), stored as an int
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Integral) or isinstance(value, bool) or value <= 0):
                raise InvalidOptionError(f"{what}, got {value!r}")
            object.__setattr__(self, name, None if value is None else int(value))
        object.__setattr__(self, "pixel_scale", check_pixel_scale(self.pixel_scale))
        if not isinstance(self.allow_nonfinite, bool):
            raise InvalidOptionError(f"allow_nonfinite must be True or False, got {self.allow_nonfinite!r}")
        if self.compression is not None and (self.format != "hdf5" or self.compression not in COMPRESSIONS):
            raise InvalidOptionError(
                f"compression {self.compression!r} is not available for format {self.format!r}; "
                f"HDF5 shards take one of {', '.join(COMPRESSIONS)}"
            )


def build_dataset(sources: Mapping[str, SplitSource], out: str | os.PathLike,
                  options: BuildOptions = BuildOptions()) -> Manifest:
    """Write ``sources`` (split name -> source) as a new generation of the dataset at ``out``."""
    out = Path(out).absolute()
    remove_abandoned_folders(out)
    check_target(out, options.overwrite)
    try:
        return _build_in_place(sources, out, options) if out.is_dir() else _build_new(sources, out, options)
    except OSError as exc:
        if exc.errno in _NO_SPACE and not isinstance(exc, StreamloadError):
            raise _out_of_space(out, exc, sources) from None
        raise


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse to write into anything but a streamload dataset, and into one only with ``overwrite``."""
    if not out.exists():
        if out.is_symlink():
            raise ForeignDataError(f"{out}: is a symbolic link to {os.readlink(out)}, which does not exist; "
                                   "create that folder, or choose another --out")
        return
    if not out.is_dir():
        raise DatasetExistsError(f"{out}: exists and is not a folder; choose another --out")
    for planted in (out / name for name in _OURS if os.path.lexists(out / name) and not is_regular_file(out / name)):
        kind = "a symbolic link" if planted.is_symlink() else "not a regular file"
        raise UnsafeFileError(f"{planted}: is {kind}; streamload never writes or locks through it (it is left "
                              "as it is: remove it)")
    if all(entry.name in _OURS or is_own_leftover(entry.name) for entry in out.iterdir()):
        return  # empty, or only what an earlier failed build left
    if not (out / MANIFEST_NAME).is_file():
        raise DatasetExistsError(f"{out}: folder is not empty and holds no {MANIFEST_NAME}; refusing to replace it")
    check_own_dataset(out)
    if not overwrite:
        raise DatasetExistsError(f"{out}: a dataset is already there; pass --overwrite to replace it")


def _build_in_place(sources: Mapping[str, SplitSource], out: Path, options: BuildOptions) -> Manifest:
    """A new generation beside the current one, under the folder's build lock."""
    lock = build_lock(out)
    try:
        check_target(out, options.overwrite)  # the build that held the lock before may have created it
        collect_garbage(out, build_lock_held=True)  # staging folders of killed builds first
        with Staging(out, next_generation(out)) as staging:
            return _publish(staging, _write_splits(sources, staging.path, options))
    finally:
        unlock(lock)


def _build_new(sources: Mapping[str, SplitSource], out: Path, options: BuildOptions) -> Manifest:
    """A whole new folder next to ``out``, renamed into place only once complete."""
    building = new_building_folder(out)
    try:
        lock = build_lock(building)
        try:
            with Staging(building, next_generation(building)) as staging:
                manifest = _publish(staging, _write_splits(sources, staging.path, options))
            check_target(out, options.overwrite)  # another build may have created it meanwhile
            if move_into_place(building, out):
                return manifest
        finally:
            unlock(lock)
        return _adopt(building / str(manifest.generation), out, manifest, options)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _adopt(folder: Path, out: Path, manifest: Manifest, options: BuildOptions) -> Manifest:
    """``out`` appeared while we built it (a concurrent build finished first): publish ours as its next generation."""
    lock = build_lock(out)
    try:
        check_target(out, options.overwrite)
        with Staging(out, next_generation(out), path=folder) as staging:
            return _publish(staging, manifest)
    finally:
        unlock(lock)


def _publish(staging: Staging, manifest: Manifest) -> Manifest:
    directory = staging.directory
    try:
        previous = read_manifest(directory) if (directory / MANIFEST_NAME).exists() else None
    except ManifestError:
        previous = None  # unreadable: its files cannot be known, so they stay
    if previous is not None and previous.generation is None:
        note_flat_leftovers(directory, previous)  # version-1 files go once no reader holds them
    manifest = staging.publish(manifest)
    collect_garbage(directory, build_lock_held=True)
    return manifest


def _write_splits(sources: Mapping[str, SplitSource], folder: Path, options: BuildOptions) -> Manifest:
    roles = _roles(sources)
    features: tuple[str, ...] = roles["features"]  # type: ignore[assignment]
    for name, source in sources.items():
        refuse_complex(source.specs, f"{source.description} (split {name!r})")
    labels = _label_tracker(sources, roles["target"], options)  # type: ignore[arg-type]
    target = roles["target"] if labels is not None else None
    checks = {name: SplitValues(source.specs, features, f"{source.description} (split {name!r})",
                                options.allow_nonfinite, getattr(source, "column_names", None))
              for name, source in sources.items()}
    splits = {name: _write_split(name, source, folder, options, target, labels, checks[name])
              for name, source in sources.items()}
    scales = input_scales({name: (split.arrays, checks[name]) for name, split in splits.items()}, features,
                          options.pixel_scale)
    splits = {name: replace(split, arrays=with_scales(split.arrays, scales)) for name, split in splits.items()}
    return Manifest(format=options.format, splits=splits, created_by=f"streamload {__version__}",
                    labels=None if labels is None else labels.info(), **roles)  # type: ignore[arg-type]


def _write_split(name: str, source: SplitSource, folder: Path, options: BuildOptions, target: str | None,
                 labels: LabelTracker | None, values: SplitValues) -> SplitInfo:
    action = getattr(source, "action", "reading")
    where = f"{source.description} (split {name!r})"
    with tqdm(total=source.num_samples, desc=f"{name}: {action} + writing {options.format}", unit="sample",
              unit_scale=True, disable=not options.progress, leave=True) as bar:
        shard_size = options.shard_size or getattr(source, "shard_size", None)  # large records: the source knows
        writer = make_writer(options.format, folder, name, source.specs, source.num_samples,
                             shard_size, options.compression, on_rows=bar.update)
        with writer:
            for chunk in source.iter_chunks(options.chunk_rows):
                if labels is not None and target in chunk:
                    labels.update(chunk[target], where, values.samples)
                values.check(chunk)  # counts the chunk's samples, so it comes after the label check
                writer.write(chunk)
            shards = writer.close()
        return SplitInfo(arrays=dict(source.specs), shards=shards, skipped=getattr(source, "skipped", 0))


def _label_tracker(sources: Mapping[str, SplitSource], target: str | None,
                   options: BuildOptions) -> LabelTracker | None:
    """A tracker when the target holds class labels (integer scalars) in every split, else None."""
    specs = [source.specs.get(target) for source in sources.values()] if target else []
    if not specs or any(spec is None or not is_class_label(spec) for spec in specs):
        if options.num_classes is not None:
            raise InvalidOptionError(f"--num-classes {options.num_classes} applies to integer class labels, but the "
                                     f"target {target!r} holds {[spec and spec.dtype for spec in specs]}")
        return None
    named = next((source for source in sources.values() if getattr(source, "class_names", None)), None)
    names = tuple(named.class_names) if named is not None else None  # type: ignore[attr-defined]
    return LabelTracker(options.num_classes, names, named.description if named is not None else "")


def _roles(sources: Mapping[str, SplitSource]) -> dict[str, object]:
    """Model inputs, target and weights: what the sources declare (``SOURCE_ROLES``), else ``x`` and ``y``."""
    declared = {role: getattr(source, role) for source in sources.values() for role in SOURCE_ROLES
                if hasattr(source, role)}
    keys = set.intersection(*(set(source.specs) for source in sources.values())) if sources else set()
    inferred = {"features": ("x",) if "x" in keys else tuple(sorted(keys - {"y"})),
                "target": "y" if "y" in keys else None, "sample_weight": None}
    return {**inferred, **declared}


def _out_of_space(out: Path, exc: OSError, sources: Mapping[str, SplitSource]) -> OutOfSpaceError:
    """One line naming the dataset folder, instead of a bare ENOSPC or h5py's multi-line report."""
    needed = sum(source.num_samples * sum(spec.sample_bytes for spec in source.specs.values())
                 for source in sources.values())
    try:
        free = f"{shutil.disk_usage(out if out.exists() else out.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    error = OutOfSpaceError(f"{out}: no space left on the device while writing the dataset (it needs about "
                            f"{needed / 2**20:.1f} MiB uncompressed, {free}); nothing changed at {out}; "
                            "free some space or choose another --out")
    error.errno = exc.errno
    return error
