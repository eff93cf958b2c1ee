"""Tests for streamload.write.sources.numpy_files: .npz archives with any names and .npy pairs, built into real
shards and read back with plain numpy; dtypes and shapes kept exactly; memory bounded by a chunk."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import read_split

from streamload.errors import ShardFormatError, SourceFormatError, SourceMismatchError, SourceNotFoundError
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import NpyPairSource, numpy_sources, split_validation

RNG = np.random.default_rng(0)


def _arrays(count: int, x_shape: tuple[int, ...] = (4, 3), x_dtype: str = "<f2") -> tuple[np.ndarray, np.ndarray]:
    x = RNG.standard_normal((count, *x_shape)).astype(x_dtype)
    return x, RNG.integers(0, 10, count).astype(np.int64)  # signed storage, class labels 0..9


def _round_trip(sources: dict, out: Path, fmt: str = "npy") -> dict[str, dict[str, np.ndarray]]:
    build_dataset(sources, out, BuildOptions(format=fmt, progress=False, shard_size=13))
    return {split: read_split(out, split) for split in sources}


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_npz_with_keras_names_gives_train_and_test(tmp_path: Path, compressed: bool, fmt: str) -> None:
    (x_train, y_train), (x_test, y_test) = _arrays(40), _arrays(9)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, extra=np.zeros(3))
    sources = numpy_sources(tmp_path / "data.npz")
    assert list(sources) == ["train", "test"]
    back = _round_trip(sources, tmp_path / "ds", fmt)
    for split, (x, y) in (("train", (x_train, y_train)), ("test", (x_test, y_test))):
        assert back[split]["x"].dtype == np.float16 and back[split]["y"].dtype == np.int64
        np.testing.assert_array_equal(back[split]["x"], x)
        np.testing.assert_array_equal(back[split]["y"], y)


def test_npz_with_chosen_keys_and_big_endian_data(tmp_path: Path) -> None:
    images = RNG.integers(0, 2**16, (25, 2, 5, 1)).astype(">u2")
    targets = RNG.standard_normal((25, 3)).astype(">f8")
    np.savez(tmp_path / "mine.npz", images=images, targets=targets)
    with pytest.raises(SourceFormatError, match=r"no arrays 'x' and 'y'.*holds \['images', 'targets'\].*--x-key"):
        numpy_sources(tmp_path / "mine.npz")
    sources = numpy_sources(tmp_path / "mine.npz", x_key="images", y_key="targets")
    assert sources["train"].specs["x"].dtype == "<u2" and sources["train"].specs["y"].shape == (3,)
    back = _round_trip(sources, tmp_path / "ds")["train"]
    np.testing.assert_array_equal(back["x"], images)  # same values, native byte order
    np.testing.assert_array_equal(back["y"], targets)


def test_npy_folder_pairs_by_keras_names_or_plain_names(tmp_path: Path) -> None:
    (x_train, y_train), (x_val, y_val) = _arrays(30, (7,), "<i1"), _arrays(6, (7,), "<i1")
    folder = tmp_path / "keras"
    folder.mkdir()
    for name, array in (("x_train", x_train), ("y_train", y_train), ("x_val", x_val), ("y_val", y_val)):
        np.save(folder / f"{name}.npy", array)
    sources = numpy_sources(folder)
    assert list(sources) == ["train", "validation"]
    back = _round_trip(sources, tmp_path / "ds")
    np.testing.assert_array_equal(back["validation"]["x"], x_val)
    np.testing.assert_array_equal(back["train"]["y"], y_train)
    plain = tmp_path / "plain"
    plain.mkdir()
    np.save(plain / "x.npy", x_train)
    np.save(plain / "y.npy", y_train)
    assert list(numpy_sources(plain)) == ["train"]


def test_single_npy_file_names_its_targets_with_y_key(tmp_path: Path) -> None:
    x, y = _arrays(12)
    np.save(tmp_path / "inputs.npy", np.asfortranarray(x))  # Fortran order is copied out row by row
    np.save(tmp_path / "labels.npy", y)
    with pytest.raises(SourceFormatError, match="name its targets file beside it with --y-key"):
        numpy_sources(tmp_path / "inputs.npy")
    back = _round_trip(numpy_sources(tmp_path / "inputs.npy", y_key="labels"), tmp_path / "ds")["train"]
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["y"], y)


def test_npy_pair_errors_name_the_files(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(SourceMismatchError, match=r"x.npy has 5 rows but .*y.npy has 4"):
        NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy")
    np.save(tmp_path / "objects.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    with pytest.raises(SourceFormatError, match=r"objects.npy: cannot memory-map .*Python objects"):
        NpyPairSource(tmp_path / "objects.npy", tmp_path / "y.npy")
    np.save(tmp_path / "words.npy", np.array(["a", "b", "c", "d"]))
    with pytest.raises(SourceFormatError, match="array 'y' has dtype <U1; shards hold numbers and booleans"):
        NpyPairSource(tmp_path / "y.npy", tmp_path / "words.npy")
    with pytest.raises(SourceNotFoundError, match="missing.npy: no such .npy file"):
        NpyPairSource(tmp_path / "missing.npy", tmp_path / "y.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceFormatError, match="junk.npz: not an .npz archive"):
        numpy_sources(tmp_path / "junk.npz")


def test_npy_streams_without_loading_the_arrays(tmp_path: Path) -> None:
    """64 MB of rows go through a 1000-row chunk loop while Python allocates a small fraction of that."""
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(16_384, 1024))
    x[:] = 1.5
    x.flush()
    del x
    np.save(tmp_path / "y.npy", np.arange(16_384, dtype=np.int32))
    source = NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy")
    tracemalloc.start()
    try:
        total = 0.0
        for chunk in source.iter_chunks(chunk_rows=1000):
            total += float(chunk["x"][:, 0].sum())
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 1.5 * 16_384
    assert peak < 10 * 2**20  # one chunk is 4 MB; the arrays are 64 MB


def test_validation_split_of_an_npz_streams_both_parts(tmp_path: Path) -> None:
    x, y = _arrays(200)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(200))
    sources = split_validation(numpy_sources(tmp_path / "d.npz"), 0.2, seed=2)
    back = _round_trip(sources, tmp_path / "ds")
    assert len(back["validation"]["y"]) == 40 and len(back["train"]["y"]) == 160
    assert sorted([*back["train"]["y"], *back["validation"]["y"]]) == list(range(200))
    np.testing.assert_array_equal(back["validation"]["x"], x[back["validation"]["y"]])


def _npz_member(path: Path, name: str, shape: tuple[int, ...], data: bytes, dtype: str = "|u1") -> Path:
    """An .npz whose member ``name`` has a header claiming ``shape`` over ``data``: what a hostile archive holds."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}.npy", header.getvalue() + data)  # the header writer adds the magic
        archive.writestr("y.npy", _npy_bytes(np.zeros(1, np.uint8)))
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def test_an_empty_npz_is_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(SourceFormatError, match=rf"^{tmp_path / 'empty.npz'}: the .npz archive holds no arrays$"):
        numpy_sources(tmp_path / "empty.npz")


def test_a_0d_array_in_an_npz_says_it_has_no_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "scalar.npz", x=np.float32(3), y=np.zeros(1, np.uint8))
    with pytest.raises(ShardFormatError, match=r"scalar.npz: array 'x' is 0-d \(a single value\): it has no samples"):
        numpy_sources(tmp_path / "scalar.npz")


def test_a_header_claiming_a_3_gib_sample_is_refused_before_reading(tmp_path: Path) -> None:
    path = _npz_member(tmp_path / "huge.npz", "x", (1, 3 * 2**30), b"\0" * 64)  # 64 bytes, not 3 GiB
    with pytest.raises(ShardFormatError, match=rf"^{path}: one sample of array 'x' is 3.0 GiB .*more than 1 GiB"):
        numpy_sources(path)


def test_a_header_claiming_more_than_the_member_holds_is_refused_before_reading(tmp_path: Path) -> None:
    path = _npz_member(tmp_path / "short.npz", "x", (1, 1000), b"\0" * 10)
    with pytest.raises(ShardFormatError, match=rf"^{path}: array 'x''s header claims \(1, 1000\) of uint8 \(1000 bytes"
                                               r"\), but the member holds 10$"):
        numpy_sources(path)


def test_a_npy_file_with_a_3_gib_sample_is_refused(tmp_path: Path) -> None:
    big = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(1, 3 * 2**30))  # sparse
    del big
    np.save(tmp_path / "y.npy", np.zeros(1, np.uint8))
    with pytest.raises(ShardFormatError, match=r"x.npy: one sample of array 'x' is 3.0 GiB"):
        NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy")


def test_a_garbled_npz_header_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbled.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", np.lib.format.magic(1, 0) + b"\xff\x00{'descr'")  # claims a 255-byte header
        archive.writestr("y.npy", _npy_bytes(np.zeros(1, np.uint8)))
    with pytest.raises(ShardFormatError, match=rf"^{path}: array 'x' has no readable .npy header"):
        numpy_sources(path)


def test_int64_pixels_from_an_npz_reach_the_model_as_the_uint8_pixels_do(tmp_path: Path) -> None:
    from streamload import BatchLoader

    pixels = RNG.integers(0, 256, (40, 6, 6))  # np.array of Python ints: int64, the case
    pixels[0, 0, :2] = (0, 255)
    labels = RNG.integers(0, 10, 40).astype(np.uint8)
    batches = {}
    for name, dtype in (("u8", np.uint8), ("i64", np.int64)):
        np.savez(tmp_path / f"{name}.npz", x_train=pixels.astype(dtype), y_train=labels,
                 x_test=pixels[:8].astype(dtype), y_test=labels[:8])
        build_dataset(numpy_sources(tmp_path / f"{name}.npz"), tmp_path / name, BuildOptions(progress=False))
        batches[name] = [BatchLoader(tmp_path / name, split, batch_size=16, shuffle=False).load(0, 0)[0]
                         for split in ("train", "test")]
    for u8, i64 in zip(batches["u8"], batches["i64"]):
        assert i64.dtype == np.float32 and np.array_equal(i64, u8) and u8.max() == 1.0
