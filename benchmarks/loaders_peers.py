"""The peers of the loader benchmark (issue 19 §4), each over its own copy of the same MNIST train split,
read through its own documented API and finished as streamload finishes a batch (float32 images times 1/255
with a channel axis, one-hot float32 labels), so every row of the table delivers the same thing:

* Grain: ``grain.python.MapDataset.source(ArrayRecordDataSource(files)).shuffle(seed).batch(B)
  .map(parse)`` over ArrayRecord files of one record per sample (785 bytes: the image, then the label;
  ``group_size:1``, Grain's advice for random access), a new shuffle seed per epoch;
* WebDataset: ``wds.WebDataset(tars, shardshuffle=...).shuffle(SHUFFLE_BUFFER).to_tuple("x", "cls")
  .batched(B)`` over tar shards of one ``.x`` (784 raw bytes) and ``.cls`` file per sample (no PyTorch, so
  no DataLoader workers: one process, as a Keras user without PyTorch runs it);
* Hugging Face ``datasets``: ``load_from_disk`` of an Arrow dataset (``x`` as ``Array2D(uint8)``, ``y``
  int64), ``with_format("numpy")``, ``.shuffle(seed).iter(batch_size=B)``: batched access;
* Lance (``pylance``): ``LanceDataset.take(indices)`` of each batch of a per-epoch permutation (its random
  access), ``x`` a fixed-size list of 784 uint8.

Each is set up (its copy written once under the benchmark's folder) and then checked to serve, over one
epoch, every sample of the split exactly once (image and label), before it is timed; a peer whose
library is not installed is left out of the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamload.errors import StreamloadError

from .loaders_data import BenchData

Result = dict[str, Any]
EpochBatches = Callable[[int], Any]
GRAIN, WEBDATASET, HF_DATASETS, LANCE = ("Grain ArrayRecord", "WebDataset tar", "Hugging Face datasets (Arrow)",
                                         "Lance")
SHUFFLE_BUFFER = 10_000  # WebDataset's sample buffer: the same as the TFRecord baseline's
SAMPLES_PER_FILE = 10_000
MODULES = {GRAIN: ("grain", "array_record"), WEBDATASET: ("webdataset",), HF_DATASETS: ("datasets",),
           LANCE: ("lance", "pyarrow")}


def installed(name: str) -> bool:
    try:
        for module in MODULES[name]:
            __import__(module)
    except ImportError:
        return False
    return True


class Finisher:
    """streamload's finishing of a uint8 batch: ``x * float32(1/255)`` with a channel axis, one-hot ``y``."""

    def __init__(self, data: BenchData) -> None:
        self.eye = np.eye(int(data.arrays["y"].max()) + 1, dtype=np.float32)
        self.shape = data.arrays["x"].shape[1:]

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = x.reshape(-1, *self.shape).astype(np.float32)
        images *= np.float32(1 / 255)
        return images[..., np.newaxis], self.eye[np.asarray(y, np.int64)]


def _once(folder: Path, write: Callable[[Path], None], data: BenchData) -> Path:
    """``folder`` written by ``write`` unless a marker says it already holds exactly this split."""
    marker, expected = folder / "complete.json", {"samples": int(len(data.arrays["y"]))}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        return folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write(folder)
    marker.write_text(json.dumps(expected))
    return folder


def _chunks(data: BenchData) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    x, y = data.arrays["x"], data.arrays["y"]
    for first in range(0, len(y), SAMPLES_PER_FILE):
        yield first, x[first:first + SAMPLES_PER_FILE], y[first:first + SAMPLES_PER_FILE]


def _grain(data: BenchData) -> EpochBatches:
    import grain.python as grain

    def write(folder: Path) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        for first, x, y in _chunks(data):
            writer = ArrayRecordWriter(str(folder / f"part-{first // SAMPLES_PER_FILE:05d}.array_record"),
                                       "group_size:1")
            for image, label in zip(x, y):
                writer.write(image.tobytes() + bytes([int(label)]))
            writer.close()

    folder = _once(data.npy.parent / "arrayrecord", write, data)
    source = grain.ArrayRecordDataSource([str(path) for path in sorted(folder.glob("part-*.array_record"))])
    finish, size = Finisher(data), int(np.prod(data.arrays["x"].shape[1:]))

    def parse(records: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        joined = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), size + 1)
        return finish(joined[:, :size], joined[:, size])

    def epoch_batches(epoch: int) -> Any:
        dataset = grain.MapDataset.source(source).shuffle(seed=data.seed + epoch)
        return dataset.batch(data.batch_size, batch_fn=list).map(parse)

    return epoch_batches


def _webdataset(data: BenchData) -> EpochBatches:
    import webdataset as wds

    def write(folder: Path) -> None:
        for first, x, y in _chunks(data):
            with wds.TarWriter(str(folder / f"part-{first // SAMPLES_PER_FILE:05d}.tar")) as writer:
                for offset, (image, label) in enumerate(zip(x, y)):
                    writer.write({"__key__": f"{first + offset:08d}", "x": image.tobytes(), "cls": int(label)})

    tars = [str(path) for path in sorted(_once(data.npy.parent / "webdataset", write, data).glob("part-*.tar"))]
    finish = Finisher(data)

    def collate(samples: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.frombuffer(b"".join(image for image, _ in samples), np.uint8)
        return finish(x, [int(label) for _, label in samples])

    def epoch_batches(epoch: int) -> Any:
        dataset = wds.WebDataset(tars, shardshuffle=len(tars), seed=data.seed + epoch, empty_check=False)
        return dataset.shuffle(SHUFFLE_BUFFER).to_tuple("x", "cls").batched(data.batch_size, collation_fn=collate)

    return epoch_batches


def _hf_datasets(data: BenchData) -> EpochBatches:
    import datasets

    def write(folder: Path) -> None:
        datasets.disable_progress_bars()
        x, y = data.arrays["x"], data.arrays["y"]
        features = datasets.Features({"x": datasets.Array2D(x.shape[1:], "uint8"), "y": datasets.Value("int64")})
        table = datasets.Dataset.from_dict({"x": x, "y": y.astype(np.int64)}, features=features)
        table.save_to_disk(str(folder / "arrow"))

    folder = _once(data.npy.parent / "hf-datasets", write, data)
    dataset = datasets.load_from_disk(str(folder / "arrow")).with_format("numpy")
    finish = Finisher(data)

    def epoch_batches(epoch: int) -> Any:
        shuffled = dataset.shuffle(seed=data.seed + epoch)
        return (finish(batch["x"], batch["y"]) for batch in shuffled.iter(batch_size=data.batch_size))

    return epoch_batches


def _lance(data: BenchData) -> EpochBatches:
    import lance
    import pyarrow as pa

    size = int(np.prod(data.arrays["x"].shape[1:]))

    def write(folder: Path) -> None:
        x, y = data.arrays["x"], data.arrays["y"]
        images = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.uint8()), size)
        lance.write_dataset(pa.table({"x": images, "y": pa.array(y.astype(np.int64))}), str(folder / "mnist.lance"))

    dataset = lance.dataset(str(_once(data.npy.parent / "lance", write, data) / "mnist.lance"))
    finish, count = Finisher(data), dataset.count_rows()

    def epoch_batches(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng((data.seed, epoch)).permutation(count)
        for start in range(0, count, data.batch_size):
            table = dataset.take(order[start:start + data.batch_size].tolist(), columns=["x", "y"])
            x = table.column("x").combine_chunks().flatten().to_numpy()
            yield finish(x, table.column("y").to_numpy())

    return epoch_batches


PEERS: dict[str, Callable[[BenchData], EpochBatches]] = {GRAIN: _grain, WEBDATASET: _webdataset,
                                                         HF_DATASETS: _hf_datasets, LANCE: _lance}


def check_same_samples(name: str, data: BenchData, batches: Any) -> int:
    """Consume one epoch of ``batches``: every sample of the split exactly once, image and label; its length."""
    x_parts, y_parts = [], []
    for x, y in batches:
        x_parts.append(np.rint(np.asarray(x) * 255).astype(np.uint8).reshape(len(x), -1))
        y_parts.append(np.asarray(y).argmax(-1).astype(np.uint8)[:, np.newaxis])
    served = np.concatenate([np.concatenate(x_parts), np.concatenate(y_parts)], axis=1)
    stored = np.concatenate([data.arrays["x"].reshape(len(data.arrays["y"]), -1),
                             data.arrays["y"].astype(np.uint8)[:, np.newaxis]], axis=1)

    def rows(array: np.ndarray) -> np.ndarray:
        return np.sort(np.ascontiguousarray(array).view(np.dtype((np.void, array.shape[1]))).ravel())

    if served.shape != stored.shape or not np.array_equal(rows(served), rows(stored)):
        raise StreamloadError(f"{name}: one epoch does not serve every sample of the split exactly once "
                              f"({len(served)} served, {len(stored)} stored)")
    return len(served)
