"""Tests for streamload.write.sources: counts and specs come from headers, chunks reassemble the data exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MakeMnist, SyntheticMnist

from streamload.errors import IdxFormatError, InvalidOptionError, ShardFormatError, SourceMismatchError
from streamload.format.manifest import ArraySpec
from streamload.write.sources import ArraySource, AugmentedSource, IdxPairSource, NpzArraySource, SplitSource
from streamload.write.sources.idx import write_idx


def _collect(source: SplitSource, chunk_rows: int) -> tuple[list[int], dict[str, np.ndarray]]:
    chunks = list(source.iter_chunks(chunk_rows))
    sizes = [len(chunk["x"]) for chunk in chunks]
    assert all(len(chunk["y"]) == len(chunk["x"]) for chunk in chunks)
    return sizes, {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


# --- IDX pairs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 50, 203, 10_000])
def test_idx_pair_streams_both_files_in_step(synthetic_mnist: SyntheticMnist, chunk_rows: int) -> None:
    folder, train = synthetic_mnist.folder, synthetic_mnist.arrays["train"]
    suffix = ".gz" if (folder / "train-images-idx3-ubyte.gz").exists() else ""
    source = IdxPairSource(folder / f"train-images-idx3-ubyte{suffix}", folder / f"train-labels-idx1-ubyte{suffix}")
    assert isinstance(source, SplitSource)
    assert source.num_samples == 203
    assert source.specs == {"x": ArraySpec("|u1", (28, 28)), "y": ArraySpec("|u1", ())}
    sizes, data = _collect(source, chunk_rows)
    assert sizes == [min(chunk_rows, 203 - start) for start in range(0, 203, chunk_rows)]
    np.testing.assert_array_equal(data["x"], train["x"])
    np.testing.assert_array_equal(data["y"], train["y"])


def test_idx_pair_of_big_endian_floats_has_native_spec(tmp_path: Path) -> None:
    images = np.random.default_rng(0).standard_normal((9, 5, 2)).astype(">f4")
    labels = np.arange(9, dtype=">i2")
    source = IdxPairSource(write_idx(tmp_path / "x", images), write_idx(tmp_path / "y", labels))
    assert source.specs == {"x": ArraySpec("<f4", (5, 2)), "y": ArraySpec("<i2", ())}
    _, data = _collect(source, 4)
    assert data["x"].dtype.isnative and data["y"].dtype.isnative
    np.testing.assert_array_equal(data["x"], images)
    np.testing.assert_array_equal(data["y"], labels)


def test_idx_pair_count_mismatch_names_both_files(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", np.zeros((5, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(SourceMismatchError) as caught:
        IdxPairSource(images, labels)
    message = str(caught.value)
    assert str(images) in message and str(labels) in message and "5" in message and "4" in message


def test_idx_pair_rejects_bad_magic_before_reading_data(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", np.zeros((5, 2, 2), np.uint8))
    labels = tmp_path / "labels"
    labels.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 12)
    with pytest.raises(IdxFormatError, match=str(labels)):
        IdxPairSource(images, labels)


# --- arrays ------------------------------------------------------------------------------------


def test_array_source_chunks_and_specs() -> None:
    x = np.arange(10 * 3, dtype=np.float64).reshape(10, 3)
    y = np.arange(10, dtype=">i4")
    source = ArraySource("demo", x=x, y=y)
    assert source.num_samples == 10 and source.description == "demo"
    assert source.specs == {"x": ArraySpec("<f8", (3,)), "y": ArraySpec("<i4", ())}
    sizes, data = _collect(source, 4)
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(data["x"], x)
    np.testing.assert_array_equal(data["y"], y)


def test_array_source_accepts_memmaps(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.uint8).reshape(6, 2))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    _, data = _collect(ArraySource(x=mapped, y=np.zeros(6, np.uint8)), 5)
    np.testing.assert_array_equal(data["x"], mapped)


@pytest.mark.parametrize("arrays", [{}, {"x": np.zeros(3), "y": np.zeros(4)}], ids=["none", "unequal"])
def test_array_source_needs_equal_lengths(arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(SourceMismatchError, match="equal lengths"):
        ArraySource(**arrays)


# --- npz ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
def test_npz_source_streams_members(tmp_path: Path, save: object) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(23, 4, 4), dtype=np.uint8)
    y = np.arange(23, dtype=">i2")
    path = tmp_path / "data.npz"
    save(path, images=x, labels=y, other=np.zeros(2))  # type: ignore[operator]
    source = NpzArraySource(path, {"x": "images", "y": "labels"})
    assert source.num_samples == 23
    assert source.specs == {"x": ArraySpec("|u1", (4, 4)), "y": ArraySpec("<i2", ())}
    sizes, data = _collect(source, 10)
    assert sizes == [10, 10, 3]
    np.testing.assert_array_equal(data["x"], x)
    np.testing.assert_array_equal(data["y"], y)
    assert data["y"].dtype.isnative


def test_npz_source_errors_name_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, a=np.zeros((3, 2)), b=np.zeros(4), f=np.asfortranarray(np.zeros((3, 2))), s=np.float32(1))
    with pytest.raises(ShardFormatError, match=f"{path}.*no array 'missing'"):
        NpzArraySource(path, {"x": "missing"})
    with pytest.raises(SourceMismatchError, match=str(path)):
        NpzArraySource(path, {"x": "a", "y": "b"})
    with pytest.raises(ShardFormatError, match="C-ordered"):
        NpzArraySource(path, {"x": "f"})
    with pytest.raises(ShardFormatError, match=f"{path}: array 's' is 0-d .*no samples"):
        NpzArraySource(path, {"x": "s"})


# --- augmentation ------------------------------------------------------------------------------


def test_augmented_source_keeps_labels_cyclically(make_mnist: MakeMnist) -> None:
    train = make_mnist(n_train=30, n_test=2).arrays["train"]
    base = ArraySource(x=train["x"], y=train["y"])
    source = AugmentedSource(base, 100, seed=3)
    assert source.num_samples == 100 and source.specs == base.specs
    sizes, data = _collect(source, 32)
    assert sizes == [32, 32, 32, 4]
    np.testing.assert_array_equal(data["y"], train["y"][np.arange(100) % 30])
    assert data["x"].shape == (100, 28, 28) and data["x"].dtype == np.uint8
    assert not np.array_equal(data["x"][:30], train["x"])  # deformed, not copied
    _, again = _collect(AugmentedSource(base, 100, seed=3), 32)
    np.testing.assert_array_equal(again["x"], data["x"])
    _, other = _collect(AugmentedSource(base, 100, seed=4), 32)
    assert not np.array_equal(other["x"], data["x"])


def test_augmented_source_rejects_bad_options() -> None:
    base = ArraySource(x=np.zeros((3, 28, 28), np.uint8), y=np.zeros(3, np.uint8))
    for total in (0, -5):
        with pytest.raises(InvalidOptionError, match="--augment-to"):
            AugmentedSource(base, total)
    with pytest.raises(SourceMismatchError, match="'x' and 'y'"):
        AugmentedSource(ArraySource(images=np.zeros((3, 28, 28), np.uint8)), 10)
