"""Tests for streamload.images.batch: stored image files decoded into the batches Keras'
image_dataset_from_directory gives for the same files (compared with Keras itself, on TensorFlow),
augmentation that depends on (seed, epoch, index) alone, and refusals that name the sample."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import (
    ImageFolder,
    assert_keras_pixels,
    one_colour_png,
    random_pixels,
    smooth_pixels,
    truncated_jpeg,
)
from PIL import Image

from benchmarks.decoders import generate_jpegs
from streamload.errors import ImageDecodeError, InvalidOptionError
from streamload.images import ImageDecodeOptions, decode_batch
from streamload.images.resize_opencv import tolerance

# reduced_decode=True against Keras, measured on the benchmark's photo-like JPEGs (about 400x450) at
# 112x112: DCT scaling averages blocks where Keras' resize (no antialias) samples, so its noise differs
# most; measured max 73, mean 8.5 levels of 255 (224x224: 62, 2.0).
REDUCED_MAX, REDUCED_MEAN = 80.0, 10.0


def _keras(root: Path, **options: object) -> tuple[np.ndarray, list[str]]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(str(root), shuffle=False, batch_size=None, verbose=False,
                                                       labels=None, **options)
    return np.stack([x.numpy() for x in dataset]).astype(np.float32), list(dataset.file_paths)


def _records(paths: list[str]) -> list[memoryview]:
    """The files' bytes as memoryviews into one buffer, as the store hands them over."""
    blob = b"".join(Path(path).read_bytes() for path in paths)
    view, records, start = memoryview(blob), [], 0
    for path in paths:
        size = Path(path).stat().st_size
        records.append(view[start:start + size])
        start += size
    return records


def _ours(paths: list[str], threads: int = 2, **options: object) -> np.ndarray:
    return decode_batch(_records(paths), list(range(len(paths))), 0, 0, ImageDecodeOptions(**options), threads)


def _varied(root: Path, ext: str, channels: int = 3, **save: object) -> None:
    folder = ImageFolder(root, ["c"])
    for number, (height, width) in enumerate([(20, 30), (31, 17), (64, 64), (9, 50), (97, 61), (120, 160)]):
        folder.add(f"c/{number}.{ext}", smooth_pixels(height, width, channels, number), **save)


@pytest.mark.parametrize("ext", ["png", "jpg"])
@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_equals_keras_image_dataset_from_directory(tmp_path: Path, ext: str, crop: bool, interpolation: str,
                                                   color_mode: str) -> None:
    """Exact mode: JPEGs too (simplejpeg's fast IDCT is TensorFlow's), colour made gray as TensorFlow does;
    within the resize tolerance of Keras' pixels."""
    if ext == "jpg":
        _varied(tmp_path, ext, quality=90)
        for number, data in enumerate(generate_jpegs(2, seed=1)):  # photo-like: Pillow's IDCT would differ here
            (tmp_path / "c" / f"photo{number}.jpg").write_bytes(data)
    else:
        _varied(tmp_path, ext)
    for size in [(32, 32), (16, 24), (100, 90)]:
        options = {"image_size": size, "crop_to_aspect_ratio": crop, "interpolation": interpolation,
                   "color_mode": color_mode}
        expected, paths = _keras(tmp_path, **options)
        ours = _ours(paths, **options)
        assert ours.dtype == np.float32
        assert_keras_pixels(ours, expected)


def test_rgba_pngs_equal_keras_and_gray_pngs_become_rgb(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path, ["c"])
    folder.add("c/0.png", random_pixels(21, 13, 4, 0))
    folder.add("c/1.png", random_pixels(21, 13, 1, 1))
    folder.add("c/2.png", random_pixels(8, 30, 3, 2))
    for color_mode in ("rgba", "rgb", "grayscale"):
        expected, paths = _keras(tmp_path, image_size=(16, 16), color_mode=color_mode)
        assert_keras_pixels(_ours(paths, image_size=(16, 16), color_mode=color_mode), expected)


def test_rgba_of_a_jpeg_is_opaque(tmp_path: Path) -> None:
    """Keras refuses rgba for JPEGs; a stored JPEG read as rgba gets its rgb and an alpha of 255."""
    _varied(tmp_path, "jpg", quality=90)
    expected, paths = _keras(tmp_path, image_size=(24, 24))
    ours = _ours(paths, image_size=(24, 24), color_mode="rgba")
    assert_keras_pixels(ours[..., :3], expected)
    assert (ours[..., 3] == 255).all()


def test_reduced_decoding_stays_within_the_measured_bound(tmp_path: Path) -> None:
    for number, data in enumerate(generate_jpegs(12, seed=3)):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / f"{number:02d}.jpg").write_bytes(data)
    expected, paths = _keras(tmp_path, image_size=(112, 112))
    difference = np.abs(_ours(paths, image_size=(112, 112), reduced_decode=True) - expected)
    assert 1.0 < difference.mean() <= REDUCED_MEAN and difference.max() <= REDUCED_MAX  # reduced, and close
    assert_keras_pixels(_ours(paths, image_size=(112, 112)), expected)  # exact mode stays exact


def _augmenting_batch(tmp_path: Path) -> tuple[list[memoryview], list[int]]:
    paths = [str(tmp_path / f"{number}.jpg") for number in range(8)]
    for number, path in enumerate(paths):
        Image.fromarray(smooth_pixels(60 + 7 * number, 80, 3, number)).save(path, quality=90)
    return _records(paths), [101, 5, 77, 3, 64, 12, 9, 250]


AUGMENT = ImageDecodeOptions(image_size=(24, 24), random_resized_crop=True, horizontal_flip=True)


def test_augmentation_is_the_same_whatever_the_threads_or_the_order(tmp_path: Path) -> None:
    records, indices = _augmenting_batch(tmp_path)
    one = decode_batch(records, indices, 3, 42, AUGMENT, threads=1)
    two = decode_batch(records, indices, 3, 42, AUGMENT, threads=2)
    backwards = decode_batch(records[::-1], indices[::-1], 3, 42, AUGMENT, threads=2)[::-1]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, backwards)
    np.testing.assert_array_equal(one, decode_batch(records, indices, 3, 42, AUGMENT, threads=2))  # same seed


def test_epochs_seeds_and_indices_change_the_crops(tmp_path: Path) -> None:
    records, indices = _augmenting_batch(tmp_path)
    base = decode_batch(records, indices, 3, 42, AUGMENT)
    for other in (decode_batch(records, indices, 4, 42, AUGMENT), decode_batch(records, indices, 3, 43, AUGMENT),
                  decode_batch(records, [index + 1 for index in indices], 3, 42, AUGMENT)):
        assert all(not np.array_equal(mine, theirs) for mine, theirs in zip(base, other))


def test_batches_still_held_are_never_written_over(tmp_path: Path) -> None:
    """Keras holds batches in a queue: each keeps its pixels while later ones are decoded into reused arrays."""
    records, indices = _augmenting_batch(tmp_path)
    held = [decode_batch(records, indices, epoch, 42, AUGMENT) for epoch in range(6)]
    copies = [batch.copy() for batch in held]
    for epoch in range(6, 12):
        decode_batch(records, indices, epoch, 42, AUGMENT)  # dropped at once: its array is reused by the next
    for batch, copy in zip(held, copies):
        np.testing.assert_array_equal(batch, copy)
    assert not any(np.shares_memory(one, other) for number, one in enumerate(held) for other in held[number + 1:])


def test_a_flip_alone_mirrors_the_plain_output(tmp_path: Path) -> None:
    records, indices = _augmenting_batch(tmp_path)
    plain = decode_batch(records, indices, 0, 1, ImageDecodeOptions(image_size=(24, 24)))
    flipped = decode_batch(records, indices, 0, 1, ImageDecodeOptions(image_size=(24, 24), horizontal_flip=True))
    mirrored = [np.allclose(f, p[:, ::-1], rtol=0, atol=tolerance(80, 109)) for f, p in zip(flipped, plain)]
    assert all(m or np.array_equal(f, p) for m, f, p in zip(mirrored, flipped, plain)) and 0 < sum(mirrored) < 8


def test_reduced_random_crops_show_the_same_region(tmp_path: Path) -> None:
    """The crop is drawn at full size, so reduced decoding changes the pixels' detail, not what they show."""
    grid = np.random.default_rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grid).resize((640, 480), Image.BICUBIC).save(buffer, "JPEG", quality=90)  # smooth, large
    data = buffer.getvalue()
    options = {"image_size": (32, 32), "random_resized_crop": ((0.5, 1.0), (0.75, 1.33))}
    exact = decode_batch([data] * 4, [0, 1, 2, 3], 0, 7, ImageDecodeOptions(**options, reduced_decode=False))
    reduced = decode_batch([data] * 4, [0, 1, 2, 3], 0, 7, ImageDecodeOptions(**options))  # random crops: reduced
    assert not np.array_equal(exact, reduced)
    own = [np.abs(exact[i] - reduced[i]).mean() for i in range(4)]
    others = [np.abs(exact[i] - reduced[j]).mean() for i in range(4) for j in range(4) if i != j]
    assert max(own) < 0.25 * min(others)


def _bad_record(kind: str, tmp_path: Path) -> bytes:
    if kind == "text":
        return b"this is not an image at all"
    if kind == "truncated jpeg":
        return truncated_jpeg(tmp_path / "t.jpg", smooth_pixels(64, 64, 3, 0)).read_bytes()
    if kind == "truncated png":
        buffer = io.BytesIO()
        Image.fromarray(random_pixels(40, 40, 3, 0)).save(buffer, "PNG")
        return buffer.getvalue()[:300]
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(8, 8, 3, 0)).save(buffer, "TIFF")  # a TIFF stored where a JPEG was listed
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["text", "truncated jpeg", "truncated png", "tiff"])
@pytest.mark.parametrize("threads", [1, 2])
def test_an_undecodable_record_is_refused_naming_its_sample(tmp_path: Path, kind: str, threads: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(smooth_pixels(30, 30, 3, 1)).save(buffer, "JPEG")
    good = buffer.getvalue()
    with pytest.raises(ImageDecodeError, match=r"^sample 1234: cannot decode its image \(") as caught:
        decode_batch([good, _bad_record(kind, tmp_path), good], [7, 1234, 8], 0, 0,
                     ImageDecodeOptions(image_size=(16, 16)), threads)
    assert "\n" not in str(caught.value)
    if kind == "tiff":
        assert "not a BMP, GIF, JPEG or PNG image" in str(caught.value)


@pytest.mark.parametrize("threads", [2, 3])
def test_of_several_undecodable_records_the_first_in_batch_order_is_named(tmp_path: Path, threads: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(smooth_pixels(300, 300, 3, 1)).save(buffer, "JPEG")
    records = [buffer.getvalue()] * 8 + [_bad_record("tiff", tmp_path), b"", _bad_record("text", tmp_path)]
    for _ in range(3):
        with pytest.raises(ImageDecodeError, match=r"^sample 108: .*not a BMP, GIF, JPEG or PNG image"):
            decode_batch(records, list(range(100, 111)), 0, 0, ImageDecodeOptions(image_size=(16, 16)), threads)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = one_colour_png(tmp_path / "bomb.png", 3000, 3000).read_bytes()
    with pytest.raises(ImageDecodeError, match=r"sample 5: .*3000x3000 is 9,000,000 pixels, over the limit of 1,0"):
        decode_batch([bomb], [5], 0, 0, ImageDecodeOptions(image_size=(8, 8), max_pixels=10**6))
    buffer = io.BytesIO()
    Image.fromarray(smooth_pixels(1200, 1000, 3, 0)).save(buffer, "JPEG")
    with pytest.raises(ImageDecodeError, match=r"sample 6: .*1000x1200 is 1,200,000 pixels"):
        decode_batch([buffer.getvalue()], [6], 0, 0, ImageDecodeOptions(image_size=(8, 8), max_pixels=10**6))


def test_bad_calls_are_refused() -> None:
    options = ImageDecodeOptions(image_size=(8, 8))
    with pytest.raises(InvalidOptionError, match="2 records for 1 sample indices"):
        decode_batch([b"", b""], [0], 0, 0, options)
    with pytest.raises(InvalidOptionError, match="threads must be a positive integer"):
        decode_batch([], [], 0, 0, options, threads=0)
    assert decode_batch([], [], 0, 0, options).shape == (0, 8, 8, 3)
