"""Tests for streamload.write.values: what a build refuses in the values it streams (NaN, infinity, complex
numbers, splits normalised differently) and the one scale per input it records, on real builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import read_split

from streamload.errors import InvalidOptionError, SourceFormatError, SourceMismatchError
from streamload.format.manifest import read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource, CsvSource


def _build(out: Path, splits: dict[str, dict[str, np.ndarray]], **options: object) -> None:
    sources = {name: ArraySource(description=f"{name}.npz", **arrays) for name, arrays in splits.items()}
    build_dataset(sources, out, BuildOptions(progress=False, chunk_rows=4, **options))


def _features(count: int = 10) -> np.ndarray:
    return np.arange(count * 6, dtype=np.float32).reshape(count, 3, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs_are_refused_naming_split_sample_and_position(tmp_path: Path, bad: float) -> None:
    x = _features()
    x[7, 2, 1] = bad  # in the second chunk of 4 rows
    with pytest.raises(SourceFormatError, match=rf"^train\.npz \(split 'train'\): array 'x', sample 7 at \(2, 1\) "
                                                rf"holds {bad}; .*--allow-nonfinite"):
        _build(tmp_path / "ds", {"train": {"x": x, "y": np.zeros(10, np.uint8)}})
    assert not (tmp_path / "ds").exists()


def test_non_finite_targets_are_refused_too(tmp_path: Path) -> None:
    y = np.linspace(0, 1, 10).astype(np.float64)
    y[3] = np.nan
    with pytest.raises(SourceFormatError, match=r"split 'test'\): array 'y', sample 3 holds nan"):
        _build(tmp_path / "ds", {"train": {"x": _features(), "y": np.zeros(10)}, "test": {"x": _features(), "y": y}})


def test_allow_nonfinite_keeps_them_exactly(tmp_path: Path) -> None:
    x = _features()
    x[0, 0, 0], x[9, 1, 1] = np.nan, -np.inf
    _build(tmp_path / "ds", {"train": {"x": x, "y": np.zeros(10, np.uint8)}}, allow_nonfinite=True)
    assert np.array_equal(read_split(tmp_path / "ds", "train")["x"], x, equal_nan=True)


def test_complex_arrays_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError, match=r"train\.npz \(split 'train'\): array 'x' is complex \(<c16\)"):
        _build(tmp_path / "ds", {"train": {"x": np.ones((4, 2), np.complex128), "y": np.zeros(4, np.uint8)}})
    assert not (tmp_path / "ds").exists()


def test_a_csv_nan_is_refused_naming_its_column(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n1,2,0\n3,nan,1\n")
    with pytest.raises(SourceFormatError, match=rf"{table}.*array 'x', sample 1, column 'b' holds nan"):
        build_dataset({"train": CsvSource(table)}, tmp_path / "ds", BuildOptions(progress=False))


def test_splits_normalised_differently_are_refused(tmp_path: Path) -> None:
    images = np.arange(8 * 4, dtype=np.uint8).reshape(8, 4)
    splits = {"train": {"x": images, "y": np.zeros(8, np.uint8)},
              "test": {"x": images.astype(np.float32), "y": np.zeros(8, np.uint8)}}
    with pytest.raises(SourceMismatchError, match=r"input 'x' would be normalised differently per split: train "
                                                  r"uint8 \(scale 1/255\), test float32 \(scale 1\); .*--pixel-scale"):
        _build(tmp_path / "ds", splits)
    _build(tmp_path / "ds", splits, pixel_scale=1 / 255)  # declared: one scale for both
    assert {split.arrays["x"].scale for split in read_manifest(tmp_path / "ds").splits.values()} == {1 / 255}


def test_integer_splits_share_the_scale_of_their_common_range(tmp_path: Path) -> None:
    low = np.zeros((4, 2), np.int64)
    high = np.full((4, 2), 300, np.int32)  # 300 is beyond 0..255: both splits take 1/65535
    labels = np.zeros(4, np.uint8)
    _build(tmp_path / "ds", {"train": {"x": low, "y": labels}, "test": {"x": high, "y": labels}})
    assert {split.arrays["x"].scale for split in read_manifest(tmp_path / "ds").splits.values()} == {1 / 65535}


def test_uint8_and_wider_integers_beyond_its_range_are_refused_together(tmp_path: Path) -> None:
    splits = {"train": {"x": np.zeros((4, 2), np.uint8), "y": np.zeros(4, np.uint8)},
              "test": {"x": np.full((4, 2), 70_000, np.int64), "y": np.zeros(4, np.uint8)}}
    with pytest.raises(SourceMismatchError, match=r"train uint8 \(scale 1/255\), test int64 \(scale none fits\)"):
        _build(tmp_path / "ds", splits)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "1/255"], ids=repr)
def test_a_declared_scale_must_be_a_positive_finite_number(bad: object) -> None:
    with pytest.raises(InvalidOptionError, match="pixel scale must be a positive finite number"):
        BuildOptions(pixel_scale=bad)


def test_targets_and_weights_get_no_scale(tmp_path: Path) -> None:
    _build(tmp_path / "ds", {"train": {"x": np.zeros((4, 2), np.uint8), "y": np.zeros(4, np.uint8)}})
    arrays = read_manifest(tmp_path / "ds").split("train").arrays
    assert arrays["x"].scale == 1 / 255 and arrays["y"].scale is None
