"""Tests for streamload.write.sources.images and .imaging: real image files written by Pillow, built into real
shards and read back with plain numpy; pixels checked against the arrays written, TensorFlow's resize
and decoders, and keras.utils.image_dataset_from_directory itself."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, read_split, subprocess_env
from image_fixtures import (
    ImageFolder,
    eps_named_as_image,
    fake_ghostscript,
    one_colour_png,
    random_pixels,
    save_image,
    smooth_pixels,
    truncated_jpeg,
)
from PIL import Image

from streamload.errors import ImageDecodeError, InvalidOptionError, MissingDependencyError, SourceFormatError
from streamload.format.manifest import read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.base import label_dtype
from streamload.write.sources.images import (
    MAX_TASK_FILES,
    TASK_PATH_BYTES,
    ImageFolderSource,
    ImageOptions,
    _spans,
    image_folder_sources,
)
from streamload.write.sources.imaging import DEFAULT_MAX_IMAGE_PIXELS, fit_image, read_pixels, resize_bilinear

QUIET = {"progress": False, "jobs": 1}


def _read_all(source: ImageFolderSource, chunk_rows: int = 8192) -> dict[str, np.ndarray]:
    chunks = list(source.iter_chunks(chunk_rows))
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in ("x", "y")}


def _build(sources: dict, out: Path) -> dict[str, dict[str, np.ndarray]]:
    build_dataset(sources, out, BuildOptions(progress=False, shard_size=7))
    return {split: read_split(out, split) for split in sources}


def _mixed_folder(root: Path) -> ImageFolder:
    """Three classes of 12x10 images in several formats and modes, nested folders, files to ignore."""
    folder = ImageFolder(root, ["ant", "bee", "cat"])
    folder.add("ant/a0.png", random_pixels(12, 10, 3, 1))
    folder.add("ant/a1.PNG", random_pixels(12, 10, 1, 2))  # grayscale; upper-case extension
    folder.add("ant/deeper/a2.png", random_pixels(12, 10, 4, 3))  # RGBA, one level down: listed after ant/
    folder.add("bee/b0.bmp", random_pixels(12, 10, 3, 4))
    folder.add("bee/b1.png", random_pixels(12, 10, 3, 5))
    folder.add("cat/c0.png", random_pixels(12, 10, 1, 6))
    (root / "cat" / "notes.txt").write_text("not an image")
    save_image(root / ".hidden" / "x.png", random_pixels(12, 10, 3, 7))  # hidden folders are no class
    return folder


def _as_mode(pixels: np.ndarray, color_mode: str) -> np.ndarray:
    """The written pixels in a color mode, for conversions that are exact (gray to colour, alpha)."""
    if color_mode == "grayscale":
        assert pixels.shape[2] == 1, "only gray images have an exact grayscale oracle"
        return pixels
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[..., :3]
    if color_mode == "rgb":
        return rgb
    alpha = pixels[..., 3:] if pixels.shape[2] == 4 else np.full((*pixels.shape[:2], 1), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


@pytest.mark.parametrize("color_mode", ["rgb", "rgba"])
def test_images_at_their_own_size_round_trip_exactly(tmp_path: Path, color_mode: str) -> None:
    folder = _mixed_folder(tmp_path / "images")
    sources = image_folder_sources(folder.root, ImageOptions(image_size=(12, 10), color_mode=color_mode, **QUIET))
    source = sources["train"]
    assert list(sources) == ["train"]
    assert source.files == folder.files
    assert source.class_names == ("ant", "bee", "cat") and source.num_classes == 3 and source.skipped == 0
    channels = {"rgb": 3, "rgba": 4}[color_mode]
    assert source.specs["x"].shape == (12, 10, channels) and source.specs["y"].dtype == "|u1"
    back = _build(sources, tmp_path / "ds")["train"]
    np.testing.assert_array_equal(back["x"], np.stack([_as_mode(p, color_mode) for p in folder.pixels]))
    np.testing.assert_array_equal(back["y"], folder.labels)


def test_grayscale_pngs_and_16_bit_pngs_keep_their_values(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "gray", ["one", "two"])
    folder.add("one/g.png", random_pixels(5, 6, 1, 0))
    deep = np.random.default_rng(1).integers(0, 2**16, (5, 6), dtype=np.uint16)
    (tmp_path / "gray" / "two").mkdir()
    Image.fromarray(deep).save(tmp_path / "gray" / "two" / "deep.png")
    source = ImageFolderSource([*folder.files, str(tmp_path / "gray" / "two" / "deep.png")], [0, 1], ["one", "two"],
                               ImageOptions(image_size=(5, 6), color_mode="grayscale", **QUIET))
    chunk = _read_all(source)
    np.testing.assert_array_equal(chunk["x"][0], folder.pixels[0])
    np.testing.assert_array_equal(chunk["x"][1, ..., 0], deep >> 8)  # TensorFlow keeps the high byte too


def test_gif_palette_images_decode_to_their_palette_colours(tmp_path: Path) -> None:
    indices = np.random.default_rng(0).integers(0, 16, (7, 9), dtype=np.uint8)
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    (tmp_path / "g" / "only").mkdir(parents=True)
    image.save(tmp_path / "g" / "only" / "p.gif")
    (source,) = image_folder_sources(tmp_path / "g", ImageOptions(image_size=(7, 9), **QUIET)).values()
    chunk = _read_all(source)
    np.testing.assert_array_equal(chunk["x"][0], palette[indices])


@pytest.mark.parametrize(("in_shape", "size"), [((28, 28, 1), (32, 32)), ((100, 75, 3), (64, 64)),
                                                ((37, 53, 3), (256, 200)), ((7, 9, 4), (3, 2)),
                                                ((480, 640, 3), (224, 224)), ((1, 1, 3), (5, 4))])
def test_resize_equals_tensorflow_bilinear_bit_for_bit(in_shape: tuple[int, ...], size: tuple[int, int]) -> None:
    import tensorflow as tf

    image = np.random.default_rng(sum(in_shape)).integers(0, 256, in_shape, dtype=np.uint8)
    expected = tf.image.resize(image, size, method="bilinear", antialias=False).numpy()
    ours = resize_bilinear(image, size)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)  # same float32 operations in the same order
    stored = fit_image(image, size, crop_to_aspect_ratio=False)
    assert stored.dtype == np.uint8 and np.abs(stored - expected).max() <= 0.5


def _keras_dataset(root: Path, **options: object) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    import keras

    dataset = keras.utils.image_dataset_from_directory(str(root), shuffle=False, batch_size=None, verbose=False,
                                                       **options)
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return (np.stack([x for x, _ in pairs]), np.array([y for _, y in pairs]), list(dataset.class_names),
            list(dataset.file_paths))


def _varied_pngs(root: Path, channels: int) -> None:
    for number, (height, width) in enumerate([(20, 30), (31, 17), (64, 64), (9, 50), (40, 40), (33, 33)]):
        for name in ("xb", "xa"):
            save_image(root / name / f"{number}.png", smooth_pixels(height, width, channels, number))
    save_image(root / "xa" / "sub" / "9.png", smooth_pixels(15, 45, channels, 9))


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize(("channels", "color_mode"), [(3, "rgb"), (1, "grayscale")])
def test_equals_keras_image_dataset_from_directory(tmp_path: Path, crop: bool, channels: int,
                                                   color_mode: str) -> None:
    """Keras keeps float pixels; ours are those floats rounded to uint8, so within 0.5 of them."""
    _varied_pngs(tmp_path / "png", channels)
    for size in [(32, 32), (16, 24)]:
        x, y, class_names, paths = _keras_dataset(tmp_path / "png", image_size=size, color_mode=color_mode,
                                                  crop_to_aspect_ratio=crop)
        options = ImageOptions(image_size=size, color_mode=color_mode, crop_to_aspect_ratio=crop, **QUIET)
        (source,) = image_folder_sources(tmp_path / "png", options).values()
        ours = _read_all(source)
        assert source.files == paths and list(source.class_names) == class_names
        np.testing.assert_array_equal(ours["y"], y)
        assert np.abs(ours["x"] - x).max() <= 0.5


def test_jpeg_pixels_equal_tensorflows_accurate_decoder(tmp_path: Path) -> None:
    import tensorflow as tf

    for number, (height, width) in enumerate([(24, 32), (33, 17), (8, 8)]):
        path = save_image(tmp_path / f"{number}.jpg", smooth_pixels(height, width, 3, number), quality=85)
        data = path.read_bytes()
        for color_mode, channels in (("rgb", 3), ("grayscale", 1)):
            expected = tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE").numpy()
            np.testing.assert_array_equal(read_pixels(str(path), color_mode), expected)


def _folder_with_bad_files(root: Path) -> tuple[ImageFolder, list[str]]:
    folder = ImageFolder(root, ["a", "b"])
    folder.add("a/0.png", random_pixels(6, 5, 3, 0))
    bad = [str(truncated_jpeg(root / "a" / "1.jpg", smooth_pixels(40, 40, 3, 1)))]
    folder.add("a/2.png", random_pixels(6, 5, 3, 2))
    (root / "b").mkdir()
    (root / "b" / "0.png").write_bytes(b"this is not a png")
    bad.append(str(root / "b" / "0.png"))
    folder.add("b/1.png", random_pixels(6, 5, 3, 3))
    whole = (root / "b" / "1.png").read_bytes()
    (root / "b" / "2.png").write_bytes(whole[: len(whole) // 2])
    bad.append(str(root / "b" / "2.png"))
    return folder, bad


@pytest.mark.parametrize("jobs", [1, 2])
def test_unreadable_images_are_listed_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          jobs: int) -> None:
    folder, bad = _folder_with_bad_files(tmp_path / "images")
    Image.open(bad[0]).verify()  # the truncated JPEG passes verify(): only decoding can find it
    options = ImageOptions(image_size=(6, 5), jobs=jobs, progress=False)
    sources = image_folder_sources(folder.root, options)
    stderr = capsys.readouterr().err.splitlines()
    assert len(stderr) == 3
    for path, line in zip(bad, stderr):
        assert line.startswith(f"skipped unreadable image {path}: ")
    assert "truncated" in stderr[0] and "not a BMP, GIF, JPEG or PNG image" in stderr[1] and "truncated" in stderr[2]
    assert sources["train"].skipped == 3 and sources["train"].num_samples == 3
    back = _build(sources, tmp_path / "ds")["train"]
    assert read_manifest(tmp_path / "ds").split("train").skipped == 3
    np.testing.assert_array_equal(back["x"], np.stack(folder.pixels))
    np.testing.assert_array_equal(back["y"], folder.labels)


def test_strict_refuses_the_first_unreadable_image(tmp_path: Path) -> None:
    folder, bad = _folder_with_bad_files(tmp_path / "images")
    with pytest.raises(ImageDecodeError, match=f"^{re.escape(bad[0])}: cannot decode image .*truncated.*--strict"):
        image_folder_sources(folder.root, ImageOptions(strict=True, **QUIET))


def test_split_subfolders_share_the_training_classes(tmp_path: Path) -> None:
    train = ImageFolder(tmp_path / "data" / "train", ["cat", "dog", "owl"])
    for name in ("cat/0.png", "dog/0.png", "owl/0.png", "owl/1.png"):
        train.add(name, random_pixels(4, 4, 3, len(train.files)))
    test = ImageFolder(tmp_path / "data" / "test", ["cat", "dog", "owl"])
    test.add("cat/0.png", random_pixels(4, 4, 3, 10))
    test.add("owl/0.png", random_pixels(4, 4, 3, 11))  # no dog in the test split: owl is still label 2
    sources = image_folder_sources(tmp_path / "data", ImageOptions(image_size=(4, 4), **QUIET))
    assert list(sources) == ["train", "test"]
    back = _build(sources, tmp_path / "ds")
    for split, written in (("train", train), ("test", test)):
        assert sources[split].class_names == ("cat", "dog", "owl")
        np.testing.assert_array_equal(back[split]["y"], written.labels)
        np.testing.assert_array_equal(back[split]["x"], np.stack(written.pixels))
    save_image(tmp_path / "data" / "test" / "emu" / "0.png", random_pixels(4, 4, 3, 12))
    with pytest.raises(SourceFormatError, match="test/emu: class folder not among the training classes"):
        image_folder_sources(tmp_path / "data", ImageOptions(**QUIET))


def test_validation_split_cuts_the_file_list(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "images", ["a", "b"])
    for number in range(23):
        folder.add(f"{'ab'[number % 2]}/{number:02d}.png", random_pixels(3, 3, 3, number))
    order = sorted(range(23), key=lambda i: folder.files[i])  # listing order: a/ first, then b/
    listed = [folder.files[i] for i in order]

    def split(seed: int) -> dict[str, ImageFolderSource]:
        return image_folder_sources(folder.root, ImageOptions(image_size=(3, 3), **QUIET), validation_split=0.3,
                                    seed=seed)

    first, again, other = split(4), split(4), split(5)
    assert first["validation"].num_samples == round(0.3 * 23) and first["train"].num_samples == 23 - 7
    assert sorted(first["train"].files + first["validation"].files) == sorted(listed)
    for part in first.values():
        assert part.files == [file for file in listed if file in set(part.files)]  # order kept
    assert first["validation"].files == again["validation"].files != other["validation"].files
    with pytest.raises(InvalidOptionError, match="leaves no validation sample"):
        image_folder_sources(folder.root, ImageOptions(**QUIET), validation_split=0.01)


def test_parallel_decoding_equals_decoding_in_process(tmp_path: Path) -> None:
    for number in range(30):
        save_image(tmp_path / "i" / f"c{number % 4}" / f"{number}.png", smooth_pixels(20 + number, 31, 3, number))
    built = {}
    for jobs in (1, 3):
        options = ImageOptions(image_size=(16, 16), crop_to_aspect_ratio=True, jobs=jobs, progress=False)
        (source,) = image_folder_sources(tmp_path / "i", options).values()
        chunks = list(source.iter_chunks(chunk_rows=4))
        assert all(len(chunk["x"]) <= 4 for chunk in chunks)
        built[jobs] = np.concatenate([chunk["x"] for chunk in chunks])
    np.testing.assert_array_equal(built[1], built[3])


def test_labels_take_the_smallest_unsigned_type(tmp_path: Path) -> None:
    assert [label_dtype(n) for n in (1, 2, 256, 257, 65536, 65537)] == [np.uint8] * 3 + [np.uint16] * 2 + [np.uint32]
    for number in range(257):
        save_image(tmp_path / "many" / f"k{number:03d}" / "0.png", random_pixels(1, 1, 3, number))
    (source,) = image_folder_sources(tmp_path / "many", ImageOptions(image_size=(1, 1), **QUIET)).values()
    chunk = _read_all(source)
    assert chunk["y"].dtype == np.uint16
    np.testing.assert_array_equal(chunk["y"], np.arange(257))


@pytest.mark.parametrize(("options", "message"), [
    ({"color_mode": "cmyk"}, "--color-mode 'cmyk': choose one of grayscale, rgb, rgba"),
    ({"image_size": (0, 5)}, "--image-size needs two positive integers"),
    ({"jobs": 0}, "--jobs must be at least 1"),
])
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        ImageOptions(**options)


def test_folders_without_classes_or_images_are_refused(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    save_image(tmp_path / "flat" / "loose.png", random_pixels(2, 2, 3, 0))
    with pytest.raises(SourceFormatError, match="flat: no class subfolders"):
        image_folder_sources(tmp_path / "flat", ImageOptions(**QUIET))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(SourceFormatError, match=r"empty: no images \(.bmp, .gif, .jpeg, .jpg, .png\)"):
        image_folder_sources(tmp_path / "empty", ImageOptions(**QUIET))


def test_missing_pillow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(tmp_path / "i" / "c" / "0.png", random_pixels(2, 2, 3, 0))
    monkeypatch.setitem(sys.modules, "PIL", None)  # what `import PIL` meets when Pillow is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install streamload\[images\]"):
        image_folder_sources(tmp_path / "i", ImageOptions(**QUIET))


@pytest.mark.slow
def test_cli_builds_hundreds_of_images_with_two_jobs(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "images", [f"class{c}" for c in range(5)])
    for number in range(300):
        folder.add(f"class{number % 5}/{number:03d}.png", smooth_pixels(16, 16, 3, number))
    (tmp_path / "images" / "class4" / "999.png").write_bytes(b"broken")
    out = tmp_path / "ds"
    command = [*BUILD_SCRIPT, "--source", str(folder.root), "--out", str(out), "--image-size", "16", "16",
               "--jobs", "2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"skipped unreadable image {tmp_path / 'images' / 'class4' / '999.png'}: "
                                          "not a BMP, GIF, JPEG or PNG image (the formats Keras reads)"]
    manifest = read_manifest(out)
    assert manifest.split("train").skipped == 1
    order = sorted(range(300), key=lambda i: folder.files[i])
    back = read_split(out, "train")
    np.testing.assert_array_equal(back["x"], np.stack([folder.pixels[i] for i in order]))
    np.testing.assert_array_equal(back["y"], [folder.labels[i] for i in order])


def test_manifest_records_the_class_names(tmp_path: Path) -> None:
    folder = _mixed_folder(tmp_path / "images")
    _build(image_folder_sources(folder.root, ImageOptions(image_size=(12, 10), **QUIET)), tmp_path / "ds")
    labels = read_manifest(tmp_path / "ds").labels
    assert labels.class_names == ("ant", "bee", "cat") and labels.num_classes == 3
    assert (labels.minimum, labels.maximum) == (0, 2)


def test_batches_of_long_paths_fit_in_a_task_message(tmp_path: Path) -> None:
    long_folder = tmp_path / ("d" * 200) / ("e" * 200)
    folder = ImageFolder(long_folder, ["c"])
    for number in range(120):
        folder.add(f"c/{'f' * 150}{number:03d}.png", random_pixels(2, 2, 3, number))
    spans = _spans(folder.files, MAX_TASK_FILES)
    assert [start for start, _ in spans][1:] == [stop for _, stop in spans][:-1] and spans[-1][1] == 120
    assert len(spans) > 1 and all(sum(len(f) + 8 for f in folder.files[a:b]) <= TASK_PATH_BYTES for a, b in spans)
    options = ImageOptions(image_size=(2, 2), jobs=2, progress=False)
    (source,) = image_folder_sources(long_folder, options).values()
    np.testing.assert_array_equal(_read_all(source)["x"], np.stack(folder.pixels))


def _skip_lines(stderr: str) -> dict[str, str]:
    """File -> reason of every ``skipped unreadable image FILE: REASON`` line."""
    return dict(line.removeprefix("skipped unreadable image ").split(": ", 1) for line in stderr.splitlines())


def test_an_eps_named_png_never_reaches_ghostscript(tmp_path: Path) -> None:
    """Pillow would pick its EPS decoder from the content and run ``gs``; only Keras' decoders are offered."""
    folder = ImageFolder(tmp_path / "images", ["cat"])
    folder.add("cat/0.png", random_pixels(4, 4, 3, 0))
    eps = eps_named_as_image(tmp_path / "images" / "cat" / "1.png")
    assert Image.open(eps).format == "EPS"  # what Pillow makes of it when asked to guess
    bin_folder, marker = fake_ghostscript(tmp_path / "bin")
    command = [*BUILD_SCRIPT, "--source", str(folder.root), "--out", str(tmp_path / "ds"), "--image-size", "4", "4",
               "--jobs", "1", "--quiet"]
    env = subprocess_env(PATH=f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), f"Ghostscript ran: {marker.read_text()}"
    assert _skip_lines(result.stderr) == {str(eps): "not a BMP, GIF, JPEG or PNG image (the formats Keras reads)"}
    np.testing.assert_array_equal(read_split(tmp_path / "ds", "train")["x"], np.stack(folder.pixels))


def test_only_keras_formats_decode_whatever_the_name_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A TIFF named .jpg is refused, as Keras refuses it; a PNG named .jpg decodes, as Keras decodes it."""
    pixels = random_pixels(5, 4, 3, 1)
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", random_pixels(5, 4, 3, 0))
    (tmp_path / "images" / "a" / "1.jpg").write_bytes((tmp_path / "images" / "a" / "0.png").read_bytes())
    folder.files.append(str(tmp_path / "images" / "a" / "1.jpg"))
    folder.labels.append(0)
    folder.pixels.append(folder.pixels[0])
    tiff = tmp_path / "images" / "a" / "2.jpg"
    Image.fromarray(pixels).save(tiff, format="TIFF")
    assert Image.open(tiff).format == "TIFF"
    (source,) = image_folder_sources(folder.root, ImageOptions(image_size=(5, 4), **QUIET)).values()
    assert _skip_lines(capsys.readouterr().err) == {str(tiff): "not a BMP, GIF, JPEG or PNG image "
                                                                 "(the formats Keras reads)"}
    assert source.files == folder.files and source.skipped == 1
    np.testing.assert_array_equal(_read_all(source)["x"], np.stack(folder.pixels))


def _special_files(folder: Path) -> list[Path]:
    """A FIFO, a link to it and a socket, under image names: opening the first two blocks forever."""
    fifo, link, sock = folder / "pipe.png", folder / "link.jpg", folder / "sock.png"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()  # the socket file stays
    return [link, fifo, sock]  # listing order


def test_fifos_links_to_them_and_sockets_are_skipped_unopened(tmp_path: Path) -> None:
    """Run in a subprocess with a timeout: on a FIFO, a build that opens it never returns."""
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", random_pixels(3, 3, 3, 0))
    special = _special_files(tmp_path / "images" / "a")
    command = [*BUILD_SCRIPT, "--source", str(folder.root), "--out", str(tmp_path / "ds"), "--image-size", "3", "3",
               "--jobs", "2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    kinds = ["a FIFO", "a FIFO", "a socket"]
    assert _skip_lines(result.stderr) == {str(path): f"not a regular file but {kind}; left unopened"
                                          for path, kind in zip(special, kinds)}
    np.testing.assert_array_equal(read_split(tmp_path / "ds", "train")["x"], np.stack(folder.pixels))
    strict = subprocess.run([*command, "--strict"], capture_output=True, text=True, timeout=120,
                            env=subprocess_env())
    assert strict.returncode == 2 and strict.stderr.strip() == (
        f"build_shards.py: error: {special[0]}: cannot decode image (not a regular file but a FIFO; left unopened); "
        "--strict refuses it")


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """13000x13000 of one colour is 20 KB on disk, 169 M pixels decoded: skipped, named, never decoded."""
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", random_pixels(10, 10, 1, 0))
    huge = one_colour_png(tmp_path / "images" / "a" / "1.png", 13000, 13000)
    assert huge.stat().st_size < 100_000
    assert ImageOptions().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == 67_108_864  # docs/your-own-data.md
    options = ImageOptions(image_size=(10, 10), color_mode="grayscale", **QUIET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (source,) = image_folder_sources(folder.root, options).values()
    assert not [warning for warning in caught if "decompression bomb" in str(warning.message)]  # names no file
    assert _skip_lines(capsys.readouterr().err) == {
        str(huge): "13000x13000 is 169,000,000 pixels, over the limit of 67,108,864 (max_image_pixels, "
                   "--max-image-pixels)"}
    assert source.files == folder.files[:1]


def test_the_pixel_limit_is_settable_and_inclusive(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", random_pixels(10, 10, 3, 0))
    folder.add("a/1.png", random_pixels(10, 11, 3, 1))
    (source,) = image_folder_sources(folder.root, ImageOptions(image_size=(10, 10), max_image_pixels=100,
                                                               progress=False, jobs=2)).values()
    assert source.files == folder.files[:1] and source.skipped == 1
    with pytest.raises(ImageDecodeError, match=r"1.png: cannot decode image \(11x10 is 110 pixels, over the limit "
                                               r"of 100 .*--strict refuses it$"):
        image_folder_sources(folder.root, ImageOptions(max_image_pixels=100, strict=True, **QUIET))
    assert ImageOptions(max_image_pixels=np.int64(100)).max_image_pixels == 100
    for bad in (0, -1, 1.5, True, "100"):
        with pytest.raises(InvalidOptionError, match="--max-image-pixels must be a positive integer"):
            ImageOptions(max_image_pixels=bad)


def test_control_characters_in_file_names_are_escaped_in_messages(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A newline in a name must not forge a second line (here: a fake second "skipped" entry)."""
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", random_pixels(3, 3, 3, 0))
    forged = tmp_path / "images" / "a" / "1.png\nskipped unreadable image \x1b[2Kall fine.png"
    forged.write_bytes(b"not an image")
    image_folder_sources(folder.root, ImageOptions(image_size=(3, 3), **QUIET))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"skipped unreadable image {tmp_path / 'images' / 'a'}/1.png\\nskipped unreadable image "
                     "\\x1b[2Kall fine.png: not a BMP, GIF, JPEG or PNG image (the formats Keras reads)"]
    with pytest.raises(ImageDecodeError, match=r"^[^\n\x1b]*1\.png\\nskipped[^\n\x1b]*$"):
        image_folder_sources(folder.root, ImageOptions(strict=True, **QUIET))


def test_encoded_store_holds_each_file_as_found_and_nothing_more(tmp_path: Path) -> None:
    """--store encoded: one record per readable file, its bytes exactly; shard data bytes == the files' sizes;
    unreadable files listed and left out (or refused with strict) exactly as for the decoded store."""
    folder = ImageFolder(tmp_path / "images", ["a", "b"])
    for number in range(9):
        folder.add(f"{'ab'[number % 2]}/{number}.{'jpg' if number % 3 else 'png'}",
                   smooth_pixels(20 + number, 30 - number, 3, number))
    truncated_jpeg(tmp_path / "images" / "b" / "z.jpg", smooth_pixels(16, 16, 3, 0))
    options = ImageOptions(store="encoded", **QUIET)
    with pytest.raises(ImageDecodeError, match="z.jpg: cannot decode image .*--strict refuses it"):
        image_folder_sources(folder.root, ImageOptions(store="encoded", strict=True, **QUIET))
    sources = image_folder_sources(folder.root, options)
    assert sources["train"].skipped == 1 and sources["train"].num_samples == 9
    build_dataset(sources, tmp_path / "ds", BuildOptions(progress=False, shard_size=4))
    manifest = read_manifest(tmp_path / "ds")
    split = manifest.split("train")
    assert split.arrays["x"].encoding == "image" and split.skipped == 1
    order = sorted(range(9), key=lambda i: folder.files[i])
    root = tmp_path / "ds" / str(manifest.generation)
    ends = [int(np.load(root / shard.files["x.offsets"].name)[-1]) for shard in split.shards]
    stored = b"".join((root / shard.files["x"].name).read_bytes()[-end:] for shard, end in zip(split.shards, ends))
    assert stored == b"".join(Path(folder.files[i]).read_bytes() for i in order)
    data_bytes = sum(int(np.load(root / shard.files["x"].name, mmap_mode="r").nbytes) for shard in split.shards)
    assert data_bytes == sum(Path(folder.files[i]).stat().st_size for i in order)
    np.testing.assert_array_equal(read_split(tmp_path / "ds", "train")["y"], [folder.labels[i] for i in order])


@pytest.mark.parametrize("given", [{"image_size": (8, 8)}, {"color_mode": "grayscale"}, {"crop_to_aspect_ratio": True}])
def test_encoded_store_refuses_build_time_pixel_options(given: dict) -> None:
    flag = "--" + next(iter(given)).replace("_", "-")
    with pytest.raises(InvalidOptionError, match=f"{flag} applies to --store decoded"):
        ImageOptions(store="encoded", **given)
    with pytest.raises(InvalidOptionError, match="--store 'png'"):
        ImageOptions(store="png")
    assert ImageOptions().image_size == (256, 256) and ImageOptions().color_mode == "rgb"  # decoded: as before


def test_cli_store_encoded_builds_and_refuses_image_size_in_one_line(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "images", ["a"])
    folder.add("a/0.png", smooth_pixels(9, 7, 3, 0))
    bad = subprocess.run([*BUILD_SCRIPT, "--source", str(folder.root), "--out", str(tmp_path / "bad"), "--store",
                          "encoded", "--image-size", "8", "8", "--quiet"], capture_output=True, text=True,
                         env=subprocess_env())
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("build_shards.py: error: --image-size applies to --store decoded")
    assert not (tmp_path / "bad").exists()
    ok = subprocess.run([*BUILD_SCRIPT, "--source", str(folder.root), "--out", str(tmp_path / "ds"), "--store",
                         "encoded", "--quiet"], capture_output=True, text=True, env=subprocess_env())
    assert ok.returncode == 0, ok.stderr
    assert read_manifest(tmp_path / "ds").split("train").arrays["x"].encoding == "image"
