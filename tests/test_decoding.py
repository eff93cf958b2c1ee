"""Tests for streamload.read.decoding: an encoded image store (``--store encoded``) read through BatchLoader,
StreamingGenerator and as_tf_dataset with Keras' options, compared with keras.utils.image_dataset_from_directory
itself, with the decoded store of the same folder, across threads, workers and resumes; and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, KERAS_BACKENDS, subprocess_env
from image_fixtures import ImageFolder, assert_keras_pixels, smooth_pixels
from shards import make_writable, rehash_manifests, shard_folder

from streamload.errors import ImageDecodeError, InvalidOptionError, ShardCorruptError
from streamload.format.manifest import read_manifest
from streamload.images import ImageDecodeOptions
from streamload.options import LoaderOptions
from streamload.read.decoding import resolve_options
from streamload.read.loader import BATCHES_IN_FLIGHT, BatchLoader
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.images import ImageOptions, image_folder_sources

SIZES = [(20, 30), (31, 17), (64, 64), (9, 50), (97, 61), (120, 160), (40, 40), (33, 70), (50, 25), (16, 16)]
AUGMENT = {"image_size": (24, 20), "random_resized_crop": True, "horizontal_flip": True}
FIT_SCRIPT = Path(__file__).with_name("keras_fit_images.py")


def _folder(root: Path, ext: str) -> ImageFolder:
    """Two classes of images of varied sizes, in ``ext`` (png or jpg)."""
    folder = ImageFolder(root, ["cat", "dog"])
    for number, (height, width) in enumerate(SIZES):
        folder.add(f"{'cat' if number < 6 else 'dog'}/{number:02}.{ext}", smooth_pixels(height, width, 3, number),
                   **({"quality": 90} if ext == "jpg" else {}))
    return folder


def _build(root: Path, out: Path, fmt: str = "npy", **options: object) -> Path:
    sources = image_folder_sources(root, ImageOptions(progress=False, jobs=1, **options))
    build_dataset(sources, out, BuildOptions(format=fmt, progress=False, shard_size=4))
    return out


@pytest.fixture(scope="module", params=["png", "jpg"])
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, its encoded store)."""
    base = tmp_path_factory.mktemp(request.param)
    folder = _folder(base / "images", request.param)
    return folder.root, _build(folder.root, base / "encoded", store="encoded")


def _all(loader: BatchLoader, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    batches = [loader.load(epoch, number) for number in range(loader.num_batches)]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _keras(root: Path, **options: object) -> tuple[np.ndarray, np.ndarray]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(str(root), shuffle=False, batch_size=None, verbose=False,
                                                       **options)
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return np.stack([x for x, _ in pairs]).astype(np.float32), np.array([y for _, y in pairs])


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_encoded_store_equals_keras_image_dataset_from_directory(stores: tuple[Path, Path], crop: bool,
                                                                 interpolation: str) -> None:
    """Exact mode, JPEG too: Keras' pixels (within the resize tolerance), in Keras' file order, with its labels."""
    root, encoded = stores
    keras_x, keras_y = _keras(root, image_size=(24, 20), crop_to_aspect_ratio=crop, interpolation=interpolation)
    loader = BatchLoader(encoded, batch_size=3, shuffle=False, normalize=False, one_hot=False, image_size=(24, 20),
                         crop_to_aspect_ratio=crop, interpolation=interpolation)
    x, y = _all(loader)
    assert x.dtype == np.float32 and x.shape == (len(SIZES), 24, 20, 3)
    np.testing.assert_array_equal(y, keras_y)
    assert_keras_pixels(x, keras_x)


@pytest.mark.parametrize("crop", [False, True])
def test_encoded_store_equals_the_decoded_store_to_the_uint8_rounding(stores: tuple[Path, Path], tmp_path: Path,
                                                                      crop: bool) -> None:
    """normalize=True scales both stores alike: the same model trains on either (PNG: the same decoder, so the
    only difference is the decoded store's rounding to uint8)."""
    root, encoded = stores
    decoded = _build(root, tmp_path / "decoded", image_size=(24, 20), crop_to_aspect_ratio=crop)
    x_decoded, y_decoded = _all(BatchLoader(decoded, batch_size=4, shuffle=False))
    x, y = _all(BatchLoader(encoded, batch_size=4, shuffle=False, image_size=(24, 20), crop_to_aspect_ratio=crop))
    np.testing.assert_array_equal(y, y_decoded)
    assert x.shape == x_decoded.shape and 0 <= x.min() and x.max() <= 1
    if root.parent.name.startswith("png"):
        assert np.abs(x - x_decoded).max() <= 0.5 / 255 + 1e-6
    else:  # the decoded store's JPEGs come from Pillow's accurate IDCT, Keras' (and ours) the fast one
        assert np.abs(x - x_decoded).max() <= 8 / 255


def test_normalize_false_gives_keras_range_and_true_scales_it_by_the_recorded_scale(stores) -> None:
    _, encoded = stores
    raw = BatchLoader(encoded, batch_size=5, seed=2, image_size=(8, 8), normalize=False).load(1, 0)[0]
    scaled = BatchLoader(encoded, batch_size=5, seed=2, image_size=(8, 8)).load(1, 0)[0]
    assert raw.max() > 1.5
    np.testing.assert_array_equal(scaled, raw * np.float32(1 / 255))


def test_augmented_batches_depend_on_seed_epoch_and_index_alone(stores: tuple[Path, Path]) -> None:
    """1 or 3 decode threads, loaded in any order, the same batches; another epoch or seed, other crops."""
    _, encoded = stores
    one = BatchLoader(encoded, batch_size=4, seed=5, decode_threads=1, **AUGMENT)
    three = BatchLoader(encoded, batch_size=4, seed=5, decode_threads=3, **AUGMENT)
    first = [one.load(1, number)[0] for number in range(one.num_batches)]
    for number in reversed(range(three.num_batches)):
        np.testing.assert_array_equal(three.load(1, number)[0], first[number])
    assert not np.array_equal(one.load(2, 0)[0], first[0])  # the epoch changes the sample order and the draws
    plain = BatchLoader(encoded, batch_size=4, seed=5, image_size=(24, 20)).load(1, 0)[0]
    assert not np.array_equal(plain, first[0])
    by_two = _all(BatchLoader(encoded, batch_size=2, shuffle=False, seed=5, **AUGMENT), epoch=1)[0]
    by_five = _all(BatchLoader(encoded, batch_size=5, shuffle=False, seed=5, **AUGMENT), epoch=1)[0]
    np.testing.assert_array_equal(by_two, by_five)  # a sample's draws follow its index, not its place in a batch
    unshuffled = BatchLoader(encoded, batch_size=10, shuffle=False, seed=5, **AUGMENT)
    assert not np.array_equal(unshuffled.load(0, 0)[0], unshuffled.load(1, 0)[0])  # same samples, new draws


def test_a_resumed_loader_gives_the_rest_of_the_epoch_exactly(stores: tuple[Path, Path]) -> None:
    _, encoded = stores
    loader = BatchLoader(encoded, batch_size=3, seed=9, **AUGMENT)
    whole = [x for x, _ in loader]  # epoch 0
    stopped = BatchLoader(encoded, batch_size=3, seed=9, **AUGMENT)
    for _ in stopped:  # epoch 0, whole
        pass
    for _ in zip(range(2), stopped):  # epoch 1, interrupted after 2 batches
        pass
    resumed = BatchLoader(encoded, batch_size=3, seed=9, **AUGMENT)
    resumed.load_state_dict(json.loads(json.dumps(stopped.state_dict())))
    rest = [x for x, _ in resumed]
    expected = [loader.load(1, number)[0] for number in range(2, loader.num_batches)]
    assert len(rest) == len(expected) and all(np.array_equal(a, b) for a, b in zip(rest, expected))
    assert all(np.array_equal(a, loader.load(0, n)[0]) for n, a in enumerate(whole))


class _CountingLoader(BatchLoader):
    """A BatchLoader that notes how many of its loads run at once, and the most seen."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def load(self, epoch: int, batch: int, offset: int = 0):  # noqa: ANN201 - BatchLoader.load's Batch
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)  # long enough for the loop to start the next load meanwhile
            return super().load(epoch, batch, offset)
        finally:
            with self.lock:
                self.running -= 1


def test_a_for_loop_keeps_two_batches_decoding_and_hands_them_out_in_order(stores: tuple[Path, Path]) -> None:
    _, encoded = stores
    loader = _CountingLoader(encoded, batch_size=2, seed=3, **AUGMENT)
    handed = [x for x, _ in loader]
    assert loader.most == BATCHES_IN_FLIGHT == 2
    assert len(handed) == loader.num_batches and all(
        np.array_equal(x, loader.load(0, number)[0]) for number, x in enumerate(handed))
    assert loader.state_dict()["epoch"] == 1


def test_a_loop_stopped_or_moved_mid_epoch_goes_on_from_its_cursor(stores: tuple[Path, Path]) -> None:
    _, encoded = stores
    loader = BatchLoader(encoded, batch_size=2, seed=3, **AUGMENT)
    moved = BatchLoader(encoded, batch_size=2, seed=3, **AUGMENT)
    for _ in zip(range(3), moved):  # three batches handed out, a fourth was loading
        pass
    loop = iter(loader)
    first = next(loop)[0]
    loader.load_state_dict(moved.state_dict())  # while batch 1 loads: the loop goes on from batch 3
    rest = [x for x, _ in loop]
    assert np.array_equal(first, loader.load(0, 0)[0]) and len(rest) == loader.num_batches - 3
    assert all(np.array_equal(x, loader.load(0, number)[0]) for number, x in enumerate(rest, start=3))


def test_generator_and_tf_dataset_give_the_loaders_batches(stores: tuple[Path, Path]) -> None:
    from streamload.adapters.generator import StreamingGenerator
    from streamload.adapters.tfdata import as_tf_dataset

    _, encoded = stores
    loader = BatchLoader(encoded, batch_size=4, seed=3, **AUGMENT)
    generator = StreamingGenerator(encoded, batch_size=4, seed=3, **AUGMENT)
    dataset = as_tf_dataset(encoded, batch_size=4, seed=3, epochs=2, **AUGMENT)
    assert tuple(dataset.element_spec[0].shape) == (None, 24, 20, 3)
    assert dataset.element_spec[0].dtype.name == "float32"
    batches = [x.numpy() for x, _ in dataset]
    expected = [loader.load(epoch, number)[0] for epoch in (0, 1) for number in range(loader.num_batches)]
    assert len(batches) == len(expected) and all(np.array_equal(a, b) for a, b in zip(batches, expected))
    for number in range(len(generator)):
        np.testing.assert_array_equal(generator[number][0], expected[number])


def test_hdf5_shards_hold_the_same_records(stores: tuple[Path, Path], tmp_path: Path) -> None:
    root, encoded = stores
    hdf5 = _build(root, tmp_path / "hdf5", fmt="hdf5", store="encoded")
    options = {"batch_size": 4, "seed": 1, **AUGMENT}
    np.testing.assert_array_equal(_all(BatchLoader(hdf5, **options))[0], _all(BatchLoader(encoded, **options))[0])


@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_model_fit_trains_on_the_same_batches_with_threads_and_processes(stores: tuple[Path, Path], tmp_path: Path,
                                                                         backend: str) -> None:
    """A tiny CNN records the batches fit trains on: 1 worker, 2 threads and 2 processes give the loader's."""
    _, encoded = stores
    if encoded.parent.name.startswith("jpg"):
        pytest.skip("one format is enough through fit; the loaders are compared on both")
    out = tmp_path / "fit.json"
    result = subprocess.run([sys.executable, str(FIT_SCRIPT), str(encoded), str(out)], capture_output=True, text=True,
                            timeout=600, env=subprocess_env(KERAS_BACKEND=backend))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(out.read_text())
    assert runs["backend"] == backend
    loader = BatchLoader(encoded, batch_size=4, seed=11, **AUGMENT)
    expected = [[_digest(loader.load(epoch, number)[0]) for number in range(loader.num_batches)] for epoch in (0, 1)]
    assert runs["one"]["epochs"] == expected
    for name in ("threads", "processes"):
        if backend == "tensorflow":
            assert runs[name]["epochs"] == expected, name
        else:  # Keras' enqueuer serves its model-building probe's batches first (tests/test_generator.py), so the
            # order shifts; every batch trained is still exactly the loader's batch of that (epoch, number)
            served = {_digest(loader.load(epoch, number)[0]) for epoch in (0, 1, 2)
                      for number in range(loader.num_batches)}
            assert all(digest in served for epoch in runs[name]["epochs"] for digest in epoch), name
            assert [len(epoch) for epoch in runs[name]["epochs"]] == [loader.num_batches] * 2
    for name in ("one", "threads", "processes"):
        assert all(np.isfinite(runs[name]["loss"])), name


def _digest(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


def test_verify_covers_the_encoded_records(stores: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = stores
    encoded = _build(root, tmp_path / "encoded", store="encoded")
    ok = subprocess.run([*BUILD_SCRIPT, "--verify", str(encoded), "--quiet"], capture_output=True,
                        text=True, env=subprocess_env())
    assert ok.returncode == 0, ok.stderr
    data = shard_folder(encoded) / "train-00001.x.npy"
    content = bytearray(make_writable(data).read_bytes())
    content[-5] ^= 0xFF
    data.write_bytes(bytes(content))
    bad = subprocess.run([*BUILD_SCRIPT, "--verify", str(encoded), "--quiet"],
                         capture_output=True, text=True, env=subprocess_env())
    assert bad.returncode == 1 and "train-00001.x.npy" in bad.stderr
    loader = BatchLoader(encoded, batch_size=len(SIZES), shuffle=False, verify="once", image_size=(8, 8))
    with pytest.raises(ShardCorruptError, match="train-00001.x.npy"):
        loader.load(0, 0)


def test_an_undecodable_record_with_valid_checksums_names_its_shard_and_sample(stores, tmp_path: Path) -> None:
    """A file whose bytes are stored and checksummed but are no image: one line naming where it lies."""
    from streamload.adapters.generator import StreamingGenerator

    root, _ = stores
    encoded = _build(root, tmp_path / "encoded", store="encoded")
    data = shard_folder(encoded) / "train-00001.x.npy"  # samples 4..7
    offsets = np.load(shard_folder(encoded) / "train-00001.x.offsets.npy")
    header = data.stat().st_size - int(offsets[-1])
    content = bytearray(make_writable(data).read_bytes())
    first, last = header + int(offsets[1]), header + int(offsets[2])  # sample 5, record 1 of the shard
    content[first + 2:last] = bytes(last - first - 2)  # its magic bytes kept, the rest zeroed
    data.write_bytes(bytes(content))
    rehash_manifests(encoded)
    loader = BatchLoader(encoded, batch_size=3, shuffle=False, verify="once", image_size=(8, 8))
    loader.load(0, 0)  # samples 0..2 decode
    with pytest.raises(ImageDecodeError) as raised:
        loader.load(0, 1)
    message = str(raised.value)
    assert "\n" not in message and str(data) in message
    assert "sample 5 of split 'train' (record 1 of its shard)" in message
    generator = StreamingGenerator(encoded, batch_size=3, shuffle=False, image_size=(8, 8))
    with pytest.raises(ImageDecodeError, match="sample 5 of split"):
        generator[1]
    handed = []
    with pytest.raises(ImageDecodeError, match="sample 5 of split"):  # raised in its turn, in a for loop too
        handed.extend(loader)
    assert len(handed) == 1 and loader.state_dict()["sample"] == 3  # batch 1 was not handed out


def test_refusals_are_one_line_at_construction(stores: tuple[Path, Path], tmp_path: Path) -> None:
    root, encoded = stores
    refusals = [({}, "holds encoded image files; pass image_size"),
                ({"horizontal_flip": True}, "horizontal_flip needs image_size"),
                ({"image_size": (0, 4)}, "image_size needs two positive integers"),
                ({"image_size": (4, 4), "interpolation": "bicubic"}, "interpolation 'bicubic'"),
                ({"image_size": (4, 4), "random_resized_crop": True, "crop_to_aspect_ratio": True}, "pass one"),
                ({"image_size": (4, 4), "decode_threads": 0}, "decode_threads must be at least 1")]
    for options, match in refusals:
        with pytest.raises(InvalidOptionError, match=match) as raised:
            BatchLoader(encoded, **options)
        assert "\n" not in str(raised.value)
    decoded = _build(root, tmp_path / "decoded", image_size=(8, 8))
    with pytest.raises(InvalidOptionError, match="stores none"):
        BatchLoader(decoded, image_size=(8, 8))
    with pytest.raises(InvalidOptionError, match="image must be an ImageDecodeOptions"):
        LoaderOptions(image={"image_size": (8, 8)})


def test_image_keywords_fold_into_one_options_object() -> None:
    resolved = resolve_options(None, batch_size=4, image_size=[6, 5], color_mode="grayscale", horizontal_flip=True)
    assert resolved.image == ImageDecodeOptions(image_size=(6, 5), color_mode="grayscale", horizontal_flip=True)
    again = resolve_options(resolved, interpolation="nearest")  # keywords update a given object
    assert again.image == ImageDecodeOptions(image_size=(6, 5), color_mode="grayscale", horizontal_flip=True,
                                             interpolation="nearest")
    assert resolve_options(None, batch_size=4).image is None


def test_grayscale_reads_one_channel(stores: tuple[Path, Path]) -> None:
    root, encoded = stores
    x, _ = _all(BatchLoader(encoded, batch_size=4, shuffle=False, normalize=False, image_size=(10, 12),
                            color_mode="grayscale"))
    keras_x, _ = _keras(root, image_size=(10, 12), color_mode="grayscale")
    assert x.shape == (len(SIZES), 10, 12, 1)
    assert_keras_pixels(x, keras_x)


def test_manifest_marks_the_encoded_array(stores: tuple[Path, Path]) -> None:
    _, encoded = stores
    spec = read_manifest(encoded).split("train").arrays["x"]
    assert (spec.dtype, spec.shape, spec.encoding, spec.scale) == ("|u1", (None,), "image", 1 / 255)


def test_a_forked_worker_decodes_in_threads_of_its_own(stores: tuple[Path, Path]) -> None:
    """Keras' worker processes are forked after the parent decoded: the parent's pool has no threads there."""
    import os

    _, encoded = stores
    loader = BatchLoader(encoded, batch_size=5, seed=4, decode_threads=2, **AUGMENT)
    parent = loader.load(0, 0)[0]
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit status is the result
        import signal

        signal.alarm(60)  # a hang fails the test instead of stalling it
        os._exit(0 if np.array_equal(loader.load(0, 0)[0], parent) else 3)
    assert os.waitpid(child, 0)[1] == 0
