"""The "well-tuned tf.data TFRecord pipeline with a 10k shuffle buffer" baseline.

This is what TensorFlow's performance guide recommends, so the benchmarks compare streamload with
the best conventional streaming setup, not a strawman: files are read in parallel and interleaved,
records are shuffled through a buffer, then batched *before* parsing, so that ``parse_example`` and
``decode_raw`` run once per batch (vectorised) instead of once per record, and batches are prefetched.

Its known limit, which the benchmarks measure: a shuffle buffer only shuffles approximately. A
record can only move about ``shuffle_buffer`` places from where the interleaved file order puts
it, so with 60k records and a 10k buffer, the first batches of an epoch come from the start of the
files, and class-sorted data stays largely sorted. Order is also not reproducible (parallel
interleave with ``deterministic=False``), even with a seed.

TensorFlow is imported at module level: only the benchmarks import this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from streamload.errors import DatasetExistsError, InvalidOptionError, SourceMismatchError

_FEATURES = {
    "x": tf.io.FixedLenFeature([], tf.string),
    "y": tf.io.FixedLenFeature([], tf.int64),
}


def _example(image: np.ndarray, label: int) -> bytes:
    """One tf.train.Example: the raw uint8 image bytes and the int64 label."""
    feature = {
        "x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _check_chunk(chunk: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if "x" not in chunk or "y" not in chunk:
        raise InvalidOptionError(f"each chunk needs keys 'x' and 'y', got {sorted(chunk)}")
    x, y = np.asarray(chunk["x"]), np.asarray(chunk["y"])
    if x.dtype != np.uint8:
        raise InvalidOptionError(f"images must be uint8 (stored as raw bytes), got {x.dtype}")
    if len(x) != len(y):
        raise SourceMismatchError(f"chunk has {len(x)} images but {len(y)} labels")
    return x, y


def _records(chunks: Iterable[dict[str, np.ndarray]]) -> Iterator[bytes]:
    for chunk in chunks:
        x, y = _check_chunk(chunk)
        for image, label in zip(x, y):
            yield _example(image, label)


def write_tfrecords(
    chunks: Iterable[dict[str, np.ndarray]],
    out_dir: str | os.PathLike,
    *,
    samples_per_file: int = 50_000,
    overwrite: bool = False,
) -> list[Path]:
    """Write chunks of ``{"x": uint8 images, "y": labels}`` as ``part-NNNNN.tfrecord`` files.

    Chunks are streamed, so a dataset larger than RAM can be converted; a file is closed every
    ``samples_per_file`` records, whatever the chunk boundaries. Existing part files are refused
    unless ``overwrite``, so a stale file can never silently join a new dataset.
    """
    if samples_per_file <= 0:
        raise InvalidOptionError(f"samples_per_file must be positive, got {samples_per_file}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("part-*.tfrecord"))
    if stale and not overwrite:
        raise DatasetExistsError(f"{out} already holds {len(stale)} TFRecord part files; pass overwrite=True")
    for path in stale:
        path.unlink()
    paths: list[Path] = []
    writer: tf.io.TFRecordWriter | None = None
    try:
        for count, record in enumerate(_records(chunks)):
            if count % samples_per_file == 0:
                if writer is not None:
                    writer.close()
                paths.append(out / f"part-{len(paths):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(paths[-1]))
            writer.write(record)
    finally:
        if writer is not None:
            writer.close()
    return paths


def _parser(
    normalize: bool, one_hot: bool, num_classes: int, image_shape: tuple[int, ...]
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Build the per-*batch* parse function: one parse_example and one decode_raw per batch."""

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_example(serialized, _FEATURES)
        x = tf.reshape(tf.io.decode_raw(features["x"], tf.uint8), (-1, *image_shape))
        if normalize:
            x = tf.cast(x, tf.float32) / 255.0
        y = features["y"]
        if one_hot:
            y = tf.one_hot(y, num_classes, dtype=tf.float32)
        return x, y

    return parse


def tfrecord_dataset(
    files: Sequence[str | os.PathLike],
    *,
    batch_size: int = 64,
    shuffle_buffer: int = 10_000,
    seed: int | None = 0,
    normalize: bool = True,
    one_hot: bool = True,
    num_classes: int = 10,
    image_shape: tuple[int, ...] = (28, 28, 1),
) -> tf.data.Dataset:
    """The tuned pipeline: parallel interleave, shuffle buffer, batch, vectorised parse, prefetch.

    Yields ``(x, y)``: x float32 in [0, 1] (uint8 if not ``normalize``), y one-hot float32 (int64 if
    not ``one_hot``). The last batch may be short, so an epoch serves every record exactly once.
    ``shuffle_buffer`` of 0 or 1 disables shuffling (file order is still shuffled when it is > 1).
    """
    if batch_size <= 0 or shuffle_buffer < 0:
        raise InvalidOptionError(f"need batch_size > 0 and shuffle_buffer >= 0, got {batch_size}, {shuffle_buffer}")
    names = [str(Path(f)) for f in files]
    if not names:
        raise InvalidOptionError("no TFRecord files given")
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(names)
    if shuffle_buffer > 1:
        ds = ds.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(names), os.cpu_count() or 1),
        num_parallel_calls=autotune,
        deterministic=False,
    )
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(_parser(normalize, one_hot, num_classes, tuple(image_shape)), num_parallel_calls=autotune)
    return ds.prefetch(autotune)
