"""The data every loader of the loader benchmark reads: one train split as npy shards, HDF5 shards,
TFRecords and in RAM, built once under the benchmark's folder and checked to serve equal batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamload.errors import StreamloadError
from streamload.options import LoaderOptions
from streamload.read.dataset import ShardedDataset
from streamload.read.loader import BatchLoader
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource, SplitSource

SourcesFn = Callable[[], Mapping[str, SplitSource]]
TFRECORD_SAMPLES_PER_FILE = 10_000
TFRECORD_CHUNK = 8192  # samples handed to the TFRecord writer at a time


@dataclass
class BenchData:
    """The datasets every loader reads (same samples, in the same order) and the in-RAM copy."""

    npy: Path
    hdf5: Path
    tfrecords: list[Path]
    arrays: dict[str, np.ndarray]  # the train split as stored: x uint8 images, y labels
    batch_size: int = 64
    seed: int = 0

    def options(self, shuffle: str = "exact", **overrides: object) -> LoaderOptions:
        return LoaderOptions(batch_size=self.batch_size, shuffle=shuffle, seed=self.seed, **overrides)


def ensure_dataset(directory: Path, fmt: str, sources: SourcesFn) -> Path:
    """Build ``directory`` in ``fmt`` from ``sources()`` unless a dataset is already there."""
    if not (directory / "manifest.json").is_file():
        build_dataset(sources(), directory, BuildOptions(format=fmt, progress=False))
    return directory


def ensure_subset(folder: Path, arrays: Mapping[str, np.ndarray], samples: int) -> Path:
    """A npy dataset of the first ``samples`` samples of ``arrays`` (built once)."""
    subset = {key: np.asarray(value[:samples]) for key, value in arrays.items()}
    return ensure_dataset(folder, "npy", lambda: {"train": ArraySource(f"first {samples} samples", **subset)})


def ensure_tfrecords(folder: Path, arrays: Mapping[str, np.ndarray]) -> list[Path]:
    """TFRecord copies of ``arrays``, rewritten unless a marker says they hold exactly these samples."""
    marker = folder / "complete.json"
    expected = {"samples": int(len(arrays["y"])), "samples_per_file": TFRECORD_SAMPLES_PER_FILE}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        return sorted(folder.glob("part-*.tfrecord"))
    from .tfrecord import write_tfrecords

    chunks = ({"x": arrays["x"][i:i + TFRECORD_CHUNK], "y": arrays["y"][i:i + TFRECORD_CHUNK]}
              for i in range(0, len(arrays["y"]), TFRECORD_CHUNK))
    files = write_tfrecords(chunks, folder, samples_per_file=TFRECORD_SAMPLES_PER_FILE, overwrite=True)
    marker.write_text(json.dumps(expected))
    return files


def prepare_data(root: Path, sources: SourcesFn, batch_size: int = 64, seed: int = 0) -> BenchData:
    """npy, HDF5 and TFRecord copies of the same train split under ``root`` (built once), and it in RAM."""
    npy = ensure_dataset(root / "npy", "npy", sources)
    hdf5 = ensure_dataset(root / "hdf5", "hdf5", sources)
    dataset = ShardedDataset(npy, "train")
    arrays = dataset.gather(np.arange(len(dataset)))
    hdf5_dataset = ShardedDataset(hdf5, "train")
    if len(hdf5_dataset) != len(dataset):
        raise StreamloadError(f"{hdf5} holds {len(hdf5_dataset)} train samples, {npy} holds {len(dataset)}")
    return BenchData(npy, hdf5, ensure_tfrecords(root / "tfrecord", arrays), arrays, batch_size, seed)


def check_identical_batches(data: BenchData, batches: int = 3, epoch: int = 0) -> int:
    """Refuse to time loaders that disagree: npy, HDF5 and in-RAM batches must be equal."""
    npy, hdf5 = (BatchLoader(path, "train", data.options()) for path in (data.npy, data.hdf5))
    count = min(batches, npy.num_batches)
    for number in range(count):
        reference = npy.reference(data.arrays, epoch, number)
        for loader in (npy, hdf5):
            for got, want in zip(loader.load(epoch, number), reference):
                if not np.array_equal(got, want):
                    raise StreamloadError(f"{loader.dataset!r}: batch {number} differs from the in-RAM batch")
    return count
