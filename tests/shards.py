"""Small real datasets on disk for the reading-side tests (imported by test modules, not a fixture file)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from streamload import ArraySource, BuildOptions, build_dataset


def make_arrays(n: int, seed: int = 0, shape: tuple[int, ...] = (28, 28)) -> dict[str, np.ndarray]:
    """Distinct random images (row i starts with i's bytes, so every sample is unique) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, :4] = np.arange(n, dtype="<u4").view(np.uint8).reshape(n, 4)
    y = rng.integers(0, 10, size=n, dtype=np.uint8)
    return {"x": x, "y": y}


def build(tmp_path: Path, n: int, fmt: str = "npy", shard_size: int | None = None, *, name: str | None = None,
          compression: str | None = None, seed: int = 0, test_n: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """Write ``n`` train samples (and ``test_n`` test samples) as a dataset; return it and the arrays."""
    arrays = make_arrays(n, seed)
    sources = {"train": ArraySource(**arrays)}
    if test_n:
        sources["test"] = ArraySource(**make_arrays(test_n, seed + 1))
    out = tmp_path / (name or f"{fmt}-{n}-{shard_size}-{compression}")
    build_dataset(sources, out, BuildOptions(format=fmt, shard_size=shard_size, compression=compression,
                                             progress=False))
    return out, arrays


def sample_ids(x: np.ndarray) -> np.ndarray:
    """The test arrays carry each sample's index in its first four pixels."""
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, :4]).view("<u4").ravel()


def raw(directory, **options):
    """A StreamingGenerator that returns the stored arrays as they are (uint8 pixels, integer labels)."""
    from streamload import StreamingGenerator

    return StreamingGenerator(directory, normalize=False, channel_axis=False, one_hot=False, **options)


def vm_flags_of_mappings(directory: Path) -> dict[str, list[set[str]]]:
    """File name -> the VmFlags of each of this process' mappings of it, for files under ``directory``."""
    import re

    flags: dict[str, list[set[str]]] = {}
    current = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):  # a mapping's first line; anonymous ones name no file
                current = fields[5] if len(fields) > 5 and fields[5].startswith(str(directory)) else None
            elif fields[0] == "VmFlags:" and current is not None:
                flags.setdefault(Path(current).name, []).append(set(fields[1:]))
    return flags


def shard_folder(directory: Path) -> Path:
    """Where the shard files of the dataset's current generation lie (``DIR/gen-NNNNNN``)."""
    from streamload.format.manifest import read_manifest
    from streamload.places.layout import shard_root

    return shard_root(directory, read_manifest(directory))


def make_writable(path: Path) -> Path:
    """Shards are written read-only (0444); a test that damages one on purpose first does what a user would."""
    import os

    os.chmod(path, 0o644)
    return path


def rehash_manifests(directory: Path) -> None:
    """Record every shard file's current size and hashes in the manifest and its generation copy, as a
    hostile dataset's author would: the dataset then passes every size and checksum check."""
    import hashlib
    import json
    import zlib

    from streamload.format.manifest import MANIFEST_NAME

    folder = shard_folder(directory)
    for manifest in (directory / MANIFEST_NAME, folder / MANIFEST_NAME):
        data = json.loads(manifest.read_text())
        for split in data["splits"].values():
            for shard in split["shards"]:
                for info in shard["files"].values():
                    content = (folder / info["name"]).read_bytes()
                    info.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                                crc32=zlib.crc32(content))
        manifest.write_text(json.dumps(data))


SECRET = b"a local secret, never training data\n"


def plant_foreign_hdf5(directory: Path, kind: str) -> bytes:
    """Replace the first train shard (an HDF5 file) with one whose ``x`` reads a file outside it, by HDF5
    ``external`` storage, a ``virtual`` dataset or an ``external_link``, and record it in the manifest as a
    hostile dataset's author would. Returns the outside bytes that a reader following it would serve."""
    import h5py

    folder = shard_folder(directory)
    shard = folder / "train-00000.h5"
    with h5py.File(shard, "r") as handle:
        x_shape, x_dtype, y = handle["x"].shape, handle["x"].dtype, handle["y"][()]
    size = int(np.prod(x_shape)) * x_dtype.itemsize
    secret = (SECRET * (size // len(SECRET) + 1))[:size]
    outside = directory.parent / f"outside-{kind}"
    outside.write_bytes(secret)
    with h5py.File(directory.parent / f"outside-{kind}.h5", "w") as other:
        other.create_dataset("data", data=np.frombuffer(secret, x_dtype).reshape(x_shape))
    shard.unlink()
    with h5py.File(shard, "w") as handle:
        handle.create_dataset("y", data=y)
        if kind == "external":
            handle.create_dataset("x", shape=x_shape, dtype=x_dtype, external=[(str(outside), 0, size)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=x_shape, dtype=x_dtype)
            layout[:] = h5py.VirtualSource(str(outside) + ".h5", "data", shape=x_shape)
            handle.create_virtual_dataset("x", layout)
        else:
            handle["x"] = h5py.ExternalLink(str(outside) + ".h5", "data")
    rehash_manifests(directory)
    return secret


def make_sequences(n: int, seed: int = 0, max_length: int = 40, row_shape: tuple[int, ...] = ()):  # noqa: ANN201
    """``n`` token-id records of lengths 0..max_length (record i starts with the id i + 1, so each is unique when
    not empty) as Records, and labels."""
    from streamload.format.records import Records

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_length + 1, n)
    records = [rng.integers(1, 1000, (length, *row_shape)).astype(np.int32) for length in lengths]
    for i, record in enumerate(records):
        if len(record):
            record.reshape(len(record), -1)[0, 0] = i + 1
    return Records.from_arrays(records, np.int32, row_shape), rng.integers(0, 3, n).astype(np.uint8)


def build_sequences(tmp_path: Path, n: int, fmt: str = "npy", shard_size: int | None = None, *,
                    compression: str | None = None, seed: int = 0, row_shape: tuple[int, ...] = (),
                    max_length: int = 40):  # noqa: ANN201
    """A dataset of ``make_sequences`` (``x`` ragged, ``y`` labels); returns it and the Records and labels."""
    x, y = make_sequences(n, seed, max_length, row_shape)
    out = tmp_path / f"seq-{fmt}-{n}-{shard_size}-{compression}-{seed}"
    build_dataset({"train": ArraySource(x=x, y=y)}, out,
                  BuildOptions(format=fmt, shard_size=shard_size, compression=compression, progress=False))
    return out, x, y


def folder_bytes(folder: Path) -> int:
    """The bytes of the files in ``folder`` now; a loader's fetching thread may evict one while they are summed."""
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size if entry.is_file() else 0
    return total
