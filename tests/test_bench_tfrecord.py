"""The TFRecord baseline must round-trip every sample exactly once per epoch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from benchmarks.tfrecord import tfrecord_dataset, write_tfrecords  # noqa: E402
from streamload.errors import DatasetExistsError, InvalidOptionError, SourceMismatchError  # noqa: E402

N = 250


@pytest.fixture()
def source() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=N)


def _chunks(images: np.ndarray, labels: np.ndarray, size: int = 70) -> list[dict[str, np.ndarray]]:
    return [{"x": images[i : i + size], "y": labels[i : i + size]} for i in range(0, len(images), size)]


def _fingerprints(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, str]]:
    """Sorted (label, image hash) pairs: equal lists mean the same multiset of samples."""
    flat = images.reshape(len(images), -1)
    return sorted((int(label), hashlib.sha1(row.tobytes()).hexdigest()) for row, label in zip(flat, labels))


def test_one_epoch_serves_every_sample_exactly_once(tmp_path: Path, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    files = write_tfrecords(_chunks(images, labels), tmp_path, samples_per_file=100)
    assert [f.name for f in files] == ["part-00000.tfrecord", "part-00001.tfrecord", "part-00002.tfrecord"]
    ds = tfrecord_dataset(files, batch_size=32, shuffle_buffer=64, normalize=False, one_hot=False)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    assert xs.dtype == np.uint8 and xs.shape == (N, 28, 28, 1) and ys.dtype == np.int64
    assert _fingerprints(xs, ys) == _fingerprints(images, labels)
    assert not np.array_equal(ys, labels), "records came back in file order: nothing was shuffled"


def test_default_output_is_normalised_float32_one_hot(tmp_path: Path, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    files = write_tfrecords(_chunks(images, labels), tmp_path)
    assert len(files) == 1
    xs, ys = [], []
    for x, y in tfrecord_dataset(files, batch_size=64):
        assert x.dtype == tf.float32 and y.dtype == tf.float32
        assert x.shape[1:] == (28, 28, 1) and y.shape[1:] == (10,)
        xs.append(x.numpy())
        ys.append(y.numpy())
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    np.testing.assert_array_equal(y_all.sum(axis=1), 1.0)
    restored = np.rint(x_all * 255).astype(np.uint8)
    assert _fingerprints(restored, y_all.argmax(axis=1)) == _fingerprints(images, labels)
    np.testing.assert_array_equal(x_all, restored.astype(np.float32) / np.float32(255))  # exactly image / 255


def test_unshuffled_dataset_keeps_file_order(tmp_path: Path, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    files = write_tfrecords(_chunks(images, labels), tmp_path)
    ys = np.concatenate([y.numpy() for _, y in tfrecord_dataset(files, shuffle_buffer=0, one_hot=False)])
    np.testing.assert_array_equal(ys, labels)


def test_writer_refuses_stale_files_and_bad_chunks(tmp_path: Path, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    write_tfrecords(_chunks(images, labels), tmp_path, samples_per_file=100)
    with pytest.raises(DatasetExistsError):
        write_tfrecords(_chunks(images, labels), tmp_path)
    assert len(write_tfrecords(_chunks(images, labels), tmp_path, overwrite=True)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.tfrecord"]
    with pytest.raises(SourceMismatchError):
        write_tfrecords([{"x": images, "y": labels[:-1]}], tmp_path / "a")
    with pytest.raises(InvalidOptionError):
        write_tfrecords([{"x": images.astype(np.float32), "y": labels}], tmp_path / "b")
    with pytest.raises(InvalidOptionError):
        tfrecord_dataset([], batch_size=8)
