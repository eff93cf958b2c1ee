"""Tests for streamload.write.sources.select: what --source is taken for, which options apply to it, and the
real scripts/build_shards.py building each kind of source or failing with one line and exit status 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, MakeMnist, read_split, subprocess_env
from image_fixtures import ImageFolder, random_pixels, save_image

from streamload.cli import parse_args
from streamload.errors import SourceFormatError, SourceNotFoundError
from streamload.format.manifest import read_manifest
from streamload.write.sources.augment import AugmentedSource
from streamload.write.sources.select import detect_source_type, sources_from_args
from streamload.write.sources.splits import MaskedSource


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUILD_SCRIPT, *args], capture_output=True, text=True, timeout=120, env=subprocess_env())


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build_shards.py: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_detection_by_name_and_contents(tmp_path: Path, make_mnist: MakeMnist) -> None:
    assert detect_source_type(None) == "idx"
    assert detect_source_type(make_mnist().folder) == "idx"
    for name, kind in (("a.npz", "npz"), ("b.NPY", "npy"), ("c.csv", "csv"), ("d.csv.gz", "csv"), ("e.tsv", "csv")):
        (tmp_path / name).write_bytes(b"")
        assert detect_source_type(tmp_path / name) == kind
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "mnist.npz").write_bytes(b"")
    assert detect_source_type(tmp_path / "keras") == "idx"
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "x.npy", np.zeros(2))
    assert detect_source_type(tmp_path / "arrays") == "npy"
    save_image(tmp_path / "pictures" / "cats" / "0.png", random_pixels(2, 2, 3, 0))
    assert detect_source_type(tmp_path / "pictures") == "images"
    (tmp_path / "data.bin").write_bytes(b"")
    with pytest.raises(SourceFormatError, match="data.bin: cannot tell what this file holds"):
        detect_source_type(tmp_path / "data.bin")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SourceFormatError, match="nothing: holds no IDX files, mnist.npz, .npy files or class"):
        detect_source_type(tmp_path / "nothing")
    with pytest.raises(SourceNotFoundError, match="missing: no such file or folder"):
        detect_source_type(tmp_path / "missing")


def test_validation_is_cut_before_augmenting(make_mnist: MakeMnist, tmp_path: Path) -> None:
    args = parse_args(["--source", str(make_mnist().folder), "--out", str(tmp_path / "ds"), "--augment-to", "500",
                       "--validation-split", "0.1", "--seed", "4"])
    sources = sources_from_args(args)
    assert list(sources) == ["train", "validation", "test"]
    assert isinstance(sources["train"], AugmentedSource) and isinstance(sources["train"].base, MaskedSource)
    assert sources["train"].num_samples == 500 and sources["validation"].num_samples == round(0.1 * 203)
    assert isinstance(sources["validation"], MaskedSource) and sources["test"].num_samples == 37


def test_cli_builds_an_image_folder_with_keras_options(tmp_path: Path) -> None:
    folder = ImageFolder(tmp_path / "images", ["a", "b"])
    for number in range(20):
        folder.add(f"{'ab'[number // 10]}/{number:02d}.png", random_pixels(8, 6, 1, number))
    result = _run("--source", str(folder.root), "--out", str(tmp_path / "ds"), "--image-size", "8", "6",
                  "--color-mode", "grayscale", "--jobs", "2", "--validation-split", "0.25", "--seed", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path / "ds")
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {"train": 15, "validation": 5}
    assert manifest.split("train").arrays["x"].shape == (8, 6, 1)
    back = {split: read_split(tmp_path / "ds", split) for split in ("train", "validation")}
    pixels = np.concatenate([back["train"]["x"], back["validation"]["x"]])
    labels = np.concatenate([back["train"]["y"], back["validation"]["y"]])
    order = [int(np.flatnonzero((np.stack(folder.pixels) == image).all(axis=(1, 2, 3)))[0]) for image in pixels]
    assert sorted(order) == list(range(20))  # every image exactly once, pixel for pixel
    np.testing.assert_array_equal(labels, [folder.labels[i] for i in order])


def test_cli_builds_an_npz_with_named_keys_and_a_csv(tmp_path: Path) -> None:
    x, y = np.random.default_rng(0).standard_normal((30, 2, 2)).astype(np.float32), np.arange(30, dtype=np.int16)
    np.savez(tmp_path / "d.npz", inputs=x, outputs=y)
    result = _run("--source", str(tmp_path / "d.npz"), "--out", str(tmp_path / "a"), "--x-key", "inputs",
                  "--y-key", "outputs", "--format", "hdf5", "--quiet")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(read_split(tmp_path / "a", "train")["x"], x)
    np.testing.assert_array_equal(read_split(tmp_path / "a", "train")["y"], y)
    (tmp_path / "t.csv").write_text("kind,w,h\ncat,1.5,2\ndog,3,4.25\ncat,5,6\n")
    result = _run("--source", str(tmp_path / "t.csv"), "--out", str(tmp_path / "b"), "--label-column", "kind",
                  "--quiet")
    assert result.returncode == 0, result.stderr
    back = read_split(tmp_path / "b", "train")
    np.testing.assert_array_equal(back["x"], [[1.5, 2], [3, 4.25], [5, 6]])
    np.testing.assert_array_equal(back["y"], [0, 1, 0])


def test_cli_errors_are_one_line_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,label\n1,2\n")
    _assert_one_line_error(_run("--source", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"), "--image-size",
                                "4", "4"), "--image-size applies only to images sources", "t.csv")
    _assert_one_line_error(_run("--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")),
                           f"{tmp_path / 'nope'}: no such file or folder")
    _assert_one_line_error(_run("--source-type", "images", "--out", str(tmp_path / "o")),
                           "--source-type images needs --source")
    _assert_one_line_error(_run("--source", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"),
                                "--validation-split", "1.5"), "--validation-split must lie strictly between 0 and 1")
    assert not (tmp_path / "o").exists()


def test_cli_strict_refuses_a_corrupt_image_and_writes_nothing(tmp_path: Path) -> None:
    save_image(tmp_path / "images" / "a" / "0.png", random_pixels(4, 4, 3, 0))
    (tmp_path / "images" / "b").mkdir()
    (tmp_path / "images" / "b" / "0.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    result = _run("--source", str(tmp_path / "images"), "--out", str(tmp_path / "ds"), "--strict", "--quiet")
    _assert_one_line_error(result, f"{tmp_path / 'images' / 'b' / '0.jpg'}: cannot decode image", "--strict")
    assert not (tmp_path / "ds").exists()


def test_cli_max_image_pixels_skips_larger_images_and_applies_to_images_only(tmp_path: Path,
                                                                            make_mnist: MakeMnist) -> None:
    save_image(tmp_path / "images" / "a" / "0.png", random_pixels(5, 10, 3, 0))  # 50 pixels: kept
    big = save_image(tmp_path / "images" / "a" / "1.png", random_pixels(6, 10, 3, 1))  # 60: over the limit
    result = _run("--source", str(tmp_path / "images"), "--out", str(tmp_path / "ds"), "--image-size", "5", "10",
                  "--max-image-pixels", "50", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"skipped unreadable image {big}: 10x6 is 60 pixels, over the limit of 50 "
                             "(max_image_pixels, --max-image-pixels)\n")
    assert read_manifest(tmp_path / "ds").split("train").skipped == 1
    _assert_one_line_error(_run("--source", str(make_mnist().folder), "--out", str(tmp_path / "o"),
                                "--max-image-pixels", "50"), "--max-image-pixels applies only to images sources")


def test_cli_refuses_an_idx_file_present_raw_and_gzipped(make_mnist: MakeMnist, tmp_path: Path) -> None:
    mnist = make_mnist(gz=True)
    (mnist.folder / "t10k-labels-idx1-ubyte").write_bytes(b"anything")
    _assert_one_line_error(_run("--source", str(mnist.folder), "--out", str(tmp_path / "o")),
                           f"{mnist.folder}: holds t10k-labels-idx1-ubyte and t10k-labels-idx1-ubyte.gz")
    assert not (tmp_path / "o").exists()
