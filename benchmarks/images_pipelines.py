"""One image pipeline of the image benchmark, run for one pass in its own process:
``python3 -m benchmarks.images_pipelines --pipeline NAME --case resize|augment --data DIR --result FILE``.

A fresh process per pass, polled from outside for RssAnon (:func:`benchmarks.common.run_sampled`):
TensorFlow, once imported, stays in a process's heap, so it is charged to the pipelines that import it
and to no other. Each pipeline is written as a user of its library would write it, every one ending in
``(x, y)`` batches of ``batch_size`` float32 images of 224x224x3 in 0..255 (streamload's decoded store:
0..1, its default normalising) and integer or one-hot labels:

* streamload encoded: ``BatchLoader(DATA, "train", batch_size=B, image_size=(224, 224),
  random_resized_crop=..., horizontal_flip=..., shuffle=True)``, ``for x, y in loader``; in the resize case
  also with ``reduced_decode=True`` (JPEGs decoded at the DCT scale the target allows: not Keras' pixels, so
  it is an extra row, measured against the chosen decoder's pixels; with random crops it is the default);
* streamload decoded: ``BatchLoader`` over shards of 224x224 pixels decoded at build time (resize only:
  a random-resized crop of an already resized 224x224 image is not the same task);
* Keras: ``keras.utils.image_dataset_from_directory(image_size=(224, 224))`` + ``prefetch(AUTOTUNE)``; for
  augmentation ``image_size=(256, 256)``, then ``keras.layers.RandomCrop(224, 224)`` and
  ``keras.layers.RandomFlip("horizontal")`` mapped over the batches (``num_parallel_calls=AUTOTUNE``): what the
  Keras guides show. It is a fixed-size crop of a resized image, not a random-resized crop (Keras has no such
  layer), so it is the cheaper task;
* tf.data TFRecord: parallel interleave of the files, a shuffle buffer of ``SHUFFLE_BUFFER`` records,
  ``parse_single_example`` + ``tf.io.decode_jpeg`` + ``tf.image.resize`` mapped with AUTOTUNE, batch,
  prefetch; for augmentation the Inception preprocessing: ``tf.image.sample_distorted_bounding_box`` on the
  header's shape, ``tf.image.decode_and_crop_jpeg`` (crop during decode), resize, ``random_flip_left_right``;
* Grain: ``grain.python.MapDataset.source(ArrayRecordDataSource(files)).shuffle(seed).map(decode)``
  (``random_map`` for augmentation: Grain's per-record RNG) ``.to_iter_dataset(ReadOptions(num_threads=T))
  .batch(B)``;
* WebDataset: ``wds.WebDataset(tars, shardshuffle=...).shuffle(SHUFFLE_BUFFER).to_tuple("jpg", "cls")
  .batched(B).map(decode_batch)``, each batch decoded in a pool of T threads (without PyTorch there are no
  DataLoader workers; the decoder releases the GIL);
* the bounds, from RAM, no I/O, no shuffle: the chosen decoder (simplejpeg with reduced-size decoding +
  TensorFlow's bilinear resize re-implemented, :func:`benchmarks.decoders._simplejpeg`) in a pool of T
  threads, and ``tf.io.decode_jpeg`` + ``tf.image.resize`` in a parallel ``tf.data`` map over the bytes
  (the augmentation case: the same decoders with the random-resized crop and flip of Grain's and TFRecord's).

Grain, WebDataset and the simplejpeg bound decode with the same function, the chosen decoder; Keras,
TFRecord and the tf.data bound with TensorFlow's. Each pass is timed from its first batch to its last, so
imports, tracing and thread start-up are left out of the rate (and reported apart). With ``--passes 2`` the
process makes its pipeline afresh and runs a second pass, the steady state of a training run (which decodes
millions of images in one process), where nothing is started or imported any more; the first pass is
reported too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import read_io, read_memory

SIZE = (224, 224)
AUGMENT_LOAD_SIZE = (256, 256)  # what the Keras user loads before RandomCrop(224, 224)
CASES = ("resize", "augment")
SHUFFLE_BUFFER = 1_000  # records: ~110 MB of JPEGs held by TFRecord's and WebDataset's shuffle buffers
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # Inception's ranges, as streamload's and torchvision's
ENCODED_WARM, ENCODED_COLD = "streamload encoded, warm", "streamload encoded, cold"
ENCODED_REDUCED = "streamload encoded, reduced decode"
DECODED = "streamload decoded 224x224"
KERAS = "Keras image_dataset_from_directory"
TFRECORD = "tf.data TFRecord"
GRAIN = "Grain ArrayRecord"
WEBDATASET = "WebDataset tar"
BOUND_SIMPLEJPEG = "bound: simplejpeg threads, RAM"
BOUND_TFDATA = "bound: tf.data map, RAM"
ENCODED = (ENCODED_WARM, ENCODED_COLD, ENCODED_REDUCED)
PIPELINES = (*ENCODED, DECODED, KERAS, TFRECORD, GRAIN, WEBDATASET, BOUND_SIMPLEJPEG, BOUND_TFDATA)
BOUNDS = (BOUND_SIMPLEJPEG, BOUND_TFDATA)
# which decoder makes each pipeline's resize-case pixels: TensorFlow's (Keras' pixels) or the chosen one
# (simplejpeg with reduced-size decoding); streamload's decoded store is Pillow's accurate IDCT, rounded to uint8
DECODER_OF = {ENCODED_WARM: "tensorflow", ENCODED_COLD: "tensorflow", ENCODED_REDUCED: "reduced", DECODED: "pillow",
              KERAS: "tensorflow", TFRECORD: "tensorflow", BOUND_TFDATA: "tensorflow", GRAIN: "reduced",
              WEBDATASET: "reduced", BOUND_SIMPLEJPEG: "reduced"}
Result = dict[str, Any]
Batches = Iterable[Any]


class Layout:
    """Where one generated set and its copies live under ``root``; ``files.json`` lists the images in order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.photos, self.encoded, self.decoded = root / "photos", root / "encoded", root / "decoded"
        self.tfrecord, self.arrayrecord, self.webdataset = root / "tfrecord", root / "arrayrecord", root / "webdataset"
        self.listing = root / "files.json"

    def files(self) -> list[tuple[str, int]]:
        """(path relative to photos/, label) of every image, classes sorted then file names: Keras' order."""
        return [(name, label) for name, label in json.loads(self.listing.read_text())["files"]]

    def parts(self, folder: Path, suffix: str) -> list[Path]:
        return sorted(folder.glob(f"part-*.{suffix}"))


# ---------------------------------------------------------------- the chosen decoder, as peers use it

def decode_resize(data: bytes) -> np.ndarray:
    """The chosen decoder: simplejpeg at the largest DCT scale that keeps the target, then bilinear resize."""
    from .decoders import _simplejpeg

    return _simplejpeg(data, True)


def random_resized_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an Inception crop, drawn as torchvision's RandomResizedCrop draws it."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height  # fallback: the central crop of the ratio clamped into range
    if ratio < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif ratio > RRC_RATIO[1]:
        h, w = height, round(height * RRC_RATIO[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def decode_augment(data: bytes, rng: np.random.Generator) -> np.ndarray:
    """The chosen decoder with a random-resized crop (decoded at the scale the crop allows) and a random flip."""
    import simplejpeg

    from streamload.images.decode import dct_scale
    from streamload.images.resize_opencv import resize_bilinear_fast

    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    top, left, h, w = random_resized_box(rng, height, width)
    factor = dct_scale(h, w, SIZE)
    scale = {"min_height": height // factor, "min_width": width // factor} if factor > 1 else {}
    pixels = simplejpeg.decode_jpeg(data, "RGB", fastdct=True, **scale)
    dh, dw = pixels.shape[:2]
    top, left = top * dh // height, left * dw // width
    h, w = max(1, min(dh - top, round(h * dh / height))), max(1, min(dw - left, round(w * dw / width)))
    out = resize_bilinear_fast(pixels[top:top + h, left:left + w], SIZE)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def decode_in_threads(pool: ThreadPoolExecutor, encoded: Sequence[bytes], augment: bool, seed: int,
                      first: int = 0) -> np.ndarray:
    """A float32 batch of ``encoded`` decoded by the chosen decoder in ``pool``."""
    if augment:
        rngs = [np.random.default_rng((seed, first + position)) for position in range(len(encoded))]
        return np.stack(list(pool.map(decode_augment, encoded, rngs)))
    return np.stack(list(pool.map(decode_resize, encoded)))


# ---------------------------------------------------------------- TensorFlow's decoders

def tf_decode_resize(data: Any) -> Any:
    import tensorflow as tf

    return tf.image.resize(tf.io.decode_jpeg(data, channels=3), SIZE)


def tf_decode_augment(data: Any) -> Any:
    """Inception preprocessing: a distorted box drawn from the header, decoded cropped, resized, flipped."""
    import tensorflow as tf

    shape = tf.io.extract_jpeg_shape(data)
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), min_object_covered=0.0,
        aspect_ratio_range=RRC_RATIO, area_range=RRC_SCALE, max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    return tf.image.random_flip_left_right(tf.image.resize(image, SIZE))


def _tf_threads(dataset: Any, threads: int) -> Any:
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    return dataset.with_options(options)


# ---------------------------------------------------------------- the pipelines: (layout, args) -> batches

def _streamload_encoded(layout: Layout, args: argparse.Namespace) -> Batches:
    from streamload import BatchLoader

    augment = args.case == "augment"
    return BatchLoader(layout.encoded, "train", batch_size=args.batch_size, image_size=SIZE,
                       random_resized_crop=augment, horizontal_flip=augment, shuffle=args.shuffle, seed=args.seed,
                       reduced_decode=True if args.pipeline == ENCODED_REDUCED else None,
                       normalize=False)  # Keras' 0..255 floats, as every other pipeline here delivers


def _streamload_decoded(layout: Layout, args: argparse.Namespace) -> Batches:
    from streamload import BatchLoader

    return BatchLoader(layout.decoded, "train", batch_size=args.batch_size, shuffle=args.shuffle, seed=args.seed)


def _keras(layout: Layout, args: argparse.Namespace) -> Batches:
    import keras
    import tensorflow as tf

    augment = args.case == "augment"
    dataset = keras.utils.image_dataset_from_directory(
        layout.photos, image_size=AUGMENT_LOAD_SIZE if augment else SIZE, batch_size=args.batch_size,
        shuffle=args.shuffle, seed=args.seed, verbose=False)
    if augment:
        crop, flip = keras.layers.RandomCrop(*SIZE, seed=args.seed), keras.layers.RandomFlip("horizontal",
                                                                                            seed=args.seed)
        dataset = dataset.map(lambda x, y: (flip(crop(x, training=True), training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _tfrecord(layout: Layout, args: argparse.Namespace) -> Batches:
    import tensorflow as tf

    features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    decode = tf_decode_augment if args.case == "augment" else tf_decode_resize

    def parse(record: Any) -> Any:
        example = tf.io.parse_single_example(record, features)
        return decode(example["image"]), example["label"]

    files = [str(path) for path in layout.parts(layout.tfrecord, "tfrecord")]
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if args.shuffle:
        dataset = dataset.shuffle(len(files), seed=args.seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), args.threads),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=not args.shuffle)
    if args.shuffle:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=args.seed)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not args.shuffle)
    return dataset.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)


def _grain(layout: Layout, args: argparse.Namespace) -> Batches:
    import grain.python as grain

    source = grain.ArrayRecordDataSource([str(path) for path in layout.parts(layout.arrayrecord, "array_record")])
    dataset = grain.MapDataset.source(source)
    if args.shuffle:
        dataset = dataset.shuffle(seed=args.seed)
    dataset = dataset.map(pickle.loads)
    if args.case == "augment":
        dataset = dataset.random_map(lambda record, rng: (decode_augment(record["image"], rng), record["label"]),
                                     seed=args.seed)
    else:
        dataset = dataset.map(lambda record: (decode_resize(record["image"]), record["label"]))
    read = grain.ReadOptions(num_threads=args.threads, prefetch_buffer_size=2 * args.batch_size)
    return dataset.to_iter_dataset(read).batch(args.batch_size)


def _webdataset(layout: Layout, args: argparse.Namespace) -> Batches:
    import webdataset as wds

    tars = [str(path) for path in layout.parts(layout.webdataset, "tar")]
    dataset = wds.WebDataset(tars, shardshuffle=len(tars) if args.shuffle else False, seed=args.seed,
                             empty_check=False)
    if args.shuffle:
        dataset = dataset.shuffle(SHUFFLE_BUFFER)
    pool, augment, counter = ThreadPoolExecutor(args.threads), args.case == "augment", [0]

    def decode(batch: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        first, counter[0] = counter[0], counter[0] + len(batch)
        x = decode_in_threads(pool, [jpeg for jpeg, _ in batch], augment, args.seed, first)
        return x, np.array([int(label) for _, label in batch])

    return dataset.to_tuple("jpg", "cls").batched(args.batch_size, collation_fn=list).map(decode)


def _in_ram(layout: Layout) -> tuple[list[bytes], np.ndarray]:
    files = layout.files()
    return [(layout.photos / name).read_bytes() for name, _ in files], np.array([label for _, label in files])


def _bound_simplejpeg(layout: Layout, args: argparse.Namespace) -> Batches:
    encoded, labels = _in_ram(layout)
    pool, augment, size = ThreadPoolExecutor(args.threads), args.case == "augment", args.batch_size
    return ((decode_in_threads(pool, encoded[start:start + size], augment, args.seed, start),
             labels[start:start + size]) for start in range(0, len(encoded), size))


def _bound_tfdata(layout: Layout, args: argparse.Namespace) -> Batches:
    import tensorflow as tf

    encoded, labels = _in_ram(layout)
    decode = tf_decode_augment if args.case == "augment" else tf_decode_resize
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(encoded), labels))
    dataset = dataset.map(lambda data, label: (decode(data), label), num_parallel_calls=tf.data.AUTOTUNE)
    return _tf_threads(dataset.batch(args.batch_size).prefetch(tf.data.AUTOTUNE), args.threads)


MAKERS: dict[str, Callable[[Layout, argparse.Namespace], Batches]] = {
    ENCODED_WARM: _streamload_encoded, ENCODED_COLD: _streamload_encoded, ENCODED_REDUCED: _streamload_encoded,
    DECODED: _streamload_decoded,
    KERAS: _keras, TFRECORD: _tfrecord, GRAIN: _grain, WEBDATASET: _webdataset,
    BOUND_SIMPLEJPEG: _bound_simplejpeg, BOUND_TFDATA: _bound_tfdata}


def runs_case(name: str, case: str) -> bool:
    """Whether ``name`` runs in ``case``: the decoded store has no full-size pixels to crop from, and random
    crops are decoded reduced by default (the reduced row would be the warm row again)."""
    return not (name in (DECODED, ENCODED_REDUCED) and case == "augment")


def _arrays(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = batch[0], batch[1]
    return np.asarray(x), np.asarray(y)


def one_pass(batches: Batches, keep: int = 0) -> Result:
    """Consume one pass; the rate counts the images after the first batch, over the time (and the CPU time, for
    images per CPU second) after it."""
    started, started_cpu = time.perf_counter(), time.process_time()
    io_before = read_io().read_bytes
    images = first_images = 0
    first_seconds = None
    kept_x: list[np.ndarray] = []
    kept_y: list[np.ndarray] = []
    for batch in batches:
        x, y = _arrays(batch)
        if x.shape[1:] != (*SIZE, 3) or x.dtype != np.float32:
            raise ValueError(f"a batch of {x.dtype} {x.shape}, not float32 (B, {SIZE[0]}, {SIZE[1]}, 3)")
        images += len(x)
        if keep > sum(map(len, kept_x)):
            kept_x.append(x[:keep - sum(map(len, kept_x))])
            kept_y.append((y.argmax(-1) if y.ndim == 2 else y)[:len(kept_x[-1])])
        if first_seconds is None:
            first_seconds, first_images, first_at = time.perf_counter() - started, images, time.perf_counter()
            first_cpu = time.process_time()
    ended, ended_cpu = time.perf_counter(), time.process_time()
    timed = ended - first_at if first_seconds is not None else 0.0
    result = {"images": images, "seconds": ended - started, "first_batch_seconds": first_seconds,
              "timed_images": images - first_images, "timed_seconds": timed,
              "images_per_s": (images - first_images) / timed if timed > 0 else float("nan"),
              "cpu_seconds": ended_cpu - started_cpu,
              "timed_cpu_seconds": ended_cpu - first_cpu if first_seconds is not None else 0.0,
              "read_bytes": read_io().read_bytes - io_before}
    if keep:
        result["kept"] = (np.concatenate(kept_x), np.concatenate(kept_y))
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="images_pipelines", description="one pass of one image pipeline")
    parser.add_argument("--pipeline", choices=PIPELINES, required=True)
    parser.add_argument("--case", choices=CASES, default="resize")
    parser.add_argument("--data", type=Path, required=True, help="the set's folder (files.json, photos/, ...)")
    parser.add_argument("--result", type=Path, required=True, help="JSON file this process writes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", type=int, default=0,
                        help="no shuffle; save the first CHECK images and labels beside --result (.npz)")
    parser.add_argument("--passes", type=int, default=1,
                        help="passes, each over a pipeline made afresh in this process (default: 1)")
    args = parser.parse_args(argv)
    args.shuffle = not args.check
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    imported = read_memory().rss_anon
    passes = []
    for number in range(args.passes):
        started = time.perf_counter()
        batches = MAKERS[args.pipeline](Layout(args.data), args)
        passes.append({"setup_seconds": time.perf_counter() - started,
                       **one_pass(batches, args.check if number == 0 else 0)})
        del batches
    if args.check:
        x, y = passes[0].pop("kept")
        np.savez(args.result.with_suffix(".npz"), x=x, y=y)
    result = {**passes[-1], "passes": passes}  # the last pass's figures, and every pass's
    result.update(rss_anon_after_imports=imported, rss_anon_end=read_memory().rss_anon)
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
