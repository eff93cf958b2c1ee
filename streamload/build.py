"""Building a dataset: write every split into a temporary folder, then swap it in atomically.

A build killed at any point leaves the previous dataset complete at the target path, and a
half-built one only under a hidden temporary name that the next build cleans up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .errors import DatasetExistsError, InvalidOptionError
from .manifest import MANIFEST_NAME, LabelInfo, Manifest, SplitInfo, check_format
from .sources.base import DEFAULT_CHUNK_ROWS, SOURCE_ROLES, SplitSource
from .writers import COMPRESSIONS, fsync_path, make_writer

_RENAME_EXCHANGE = 2  # from <linux/fs.h>


@dataclass(frozen=True)
class BuildOptions:
    """How to write shards; validated on construction so bad options fail before any work."""

    format: str = "npy"
    shard_size: int | None = None  # samples per shard; None means about 64 MB
    compression: str | None = None  # HDF5 only: "gzip" or "lzf", stored chunked
    overwrite: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # rows read from the source at a time
    progress: bool = True

    def __post_init__(self) -> None:
        check_format(self.format)
        if self.shard_size is not None and self.shard_size <= 0:
            raise InvalidOptionError(f"shard size must be a positive number of samples, got {self.shard_size}")
        if self.chunk_rows <= 0:
            raise InvalidOptionError(f"chunk rows must be positive, got {self.chunk_rows}")
        if self.compression is not None and (self.format != "hdf5" or self.compression not in COMPRESSIONS):
            raise InvalidOptionError(
                f"compression {self.compression!r} is not available for format {self.format!r}; "
                f"HDF5 shards take one of {', '.join(COMPRESSIONS)}"
            )


def build_dataset(sources: Mapping[str, SplitSource], out: str | os.PathLike,
                  options: BuildOptions = BuildOptions()) -> Manifest:
    """Write ``sources`` (split name -> source) as a sharded dataset at ``out``."""
    out = Path(out).absolute()
    _remove_abandoned_builds(out)  # first: it may put a dataset retired by a killed swap back at ``out``
    check_target(out, options.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        splits = {name: _write_split(name, source, staging, options) for name, source in sources.items()}
        roles = _roles(sources)
        manifest = Manifest(format=options.format, splits=splits, created_by=f"streamload {__version__}",
                            labels=_label_facts(staging, options.format, splits, roles["target"], sources),
                            **roles)
        _write_durably(staging / MANIFEST_NAME, manifest.to_json())
        fsync_path(staging)
        check_target(out, options.overwrite)  # the target may have appeared while we were writing
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a streamload dataset, and that only with ``overwrite``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetExistsError(f"{out}: exists and is not a folder; choose another --out")
    if not any(out.iterdir()):
        return
    if not (out / MANIFEST_NAME).is_file():
        raise DatasetExistsError(f"{out}: folder is not empty and holds no {MANIFEST_NAME}; refusing to replace it")
    if not overwrite:
        raise DatasetExistsError(f"{out}: a dataset is already there; pass --overwrite to replace it")


def _write_split(name: str, source: SplitSource, staging: Path, options: BuildOptions) -> SplitInfo:
    action = getattr(source, "action", "reading")
    with tqdm(total=source.num_samples, desc=f"{name}: {action} + writing {options.format}", unit="sample",
              unit_scale=True, disable=not options.progress, leave=True) as bar:
        writer = make_writer(options.format, staging, name, source.specs, source.num_samples,
                             options.shard_size, options.compression, on_rows=bar.update)
        with writer:
            for chunk in source.iter_chunks(options.chunk_rows):
                writer.write(chunk)
            shards = writer.close()
        return SplitInfo(arrays=dict(source.specs), shards=shards, skipped=getattr(source, "skipped", 0))


def _roles(sources: Mapping[str, SplitSource]) -> dict[str, object]:
    """Model inputs, target and weights: what the sources declare (``SOURCE_ROLES``), else ``x`` and ``y``."""
    declared = {role: getattr(source, role) for source in sources.values() for role in SOURCE_ROLES
                if hasattr(source, role)}
    keys = set.intersection(*(set(source.specs) for source in sources.values())) if sources else set()
    inferred = {"features": ("x",) if "x" in keys else tuple(sorted(keys - {"y"})),
                "target": "y" if "y" in keys else None, "sample_weight": None}
    return {**inferred, **declared}


def _label_facts(staging: Path, fmt: str, splits: Mapping[str, SplitInfo], target: object,
                 sources: Mapping[str, SplitSource]) -> LabelInfo | None:
    """Range and class count of integer labels (rank 1), read back from the written shards."""
    specs = [split.arrays.get(target) for split in splits.values()] if isinstance(target, str) else [None]
    if any(spec is None or spec.shape != () or np.dtype(spec.dtype).kind not in "iu" for spec in specs):
        return None
    low, high = None, None
    for split in splits.values():
        for shard in split.shards:
            if not shard.num_samples:
                continue
            if fmt == "npy":
                labels = np.load(staging / shard.files[target].name, mmap_mode="r")
            else:
                import h5py

                with h5py.File(staging / shard.files["hdf5"].name, "r") as handle:
                    labels = handle[target][()]
            low = int(labels.min()) if low is None else min(low, int(labels.min()))
            high = int(labels.max()) if high is None else max(high, int(labels.max()))
    if low is not None and low < 0:
        return None  # negative integers are targets, not class numbers
    names = next((s.class_names for s in sources.values() if getattr(s, "class_names", None)), None)
    declared = next((s.num_classes for s in sources.values() if getattr(s, "num_classes", None)), None)
    classes = declared or (len(names) if names else (high + 1 if high is not None else 1))
    return LabelInfo(num_classes=max(classes, 1), minimum=low, maximum=high,
                     class_names=None if names is None else tuple(names))


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where the OS lacks it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def _swap_into_place(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; an old dataset there is replaced in one atomic step where possible."""
    if not out.exists():
        os.rename(staging, out)
    elif _exchange(staging, out):
        pass  # ``staging`` now holds the old dataset, removed by the caller
    else:
        retired = out.parent / f".{out.name}.retired-{os.getpid()}"
        os.rename(out, retired)
        os.rename(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    fsync_path(out.parent)


def _remove_abandoned_builds(out: Path) -> None:
    """Clean up after builds of ``out`` whose process is gone (killed builds).

    Their staging folders are deleted. A dataset retired by the non-atomic fallback swap, killed
    between its two renames, is put back at ``out`` if nothing took its place.
    """
    for marker in ("retired", "building"):
        for folder in out.parent.glob(f"{glob.escape(f'.{out.name}.{marker}-')}*"):
            pid = folder.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            if marker == "retired" and not out.exists():
                os.rename(folder, out)
            else:
                shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
