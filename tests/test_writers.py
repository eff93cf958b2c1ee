"""Tests for the shard writers (streamload/format: writer.py, npy/writer.py, hdf5/writer.py): any chunking
of the input cuts into the same shards, every format stores the samples exactly, and a source that breaks its
promises is caught."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from streamload.errors import InvalidOptionError, SourceMismatchError
from streamload.format.dispatch import make_writer
from streamload.format.hdf5.writer import HDF5_CHUNK_BYTES, Hdf5ShardWriter
from streamload.format.manifest import SHARD_NAME, ArraySpec, ShardInfo
from streamload.format.npy.writer import NpyShardWriter
from streamload.format.writer import TARGET_SHARD_BYTES, default_shard_size

N = 23
SPECS = {"x": ArraySpec("<i2", (3, 4)), "y": ArraySpec("|u1", ())}
FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]


def _arrays(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.integers(-30000, 30000, size=(n, 3, 4)).astype(">i2"),  # big-endian in, native out
            "y": rng.integers(0, 10, size=n).astype(np.uint8)}


def _write(directory: Path, fmt: str, compression: str | None, shard_size: int, cuts: list[int],
           arrays: dict[str, np.ndarray]) -> tuple[ShardInfo, ...]:
    seen: list[int] = []
    writer = make_writer(fmt, directory, "train", SPECS, len(arrays["y"]), shard_size, compression, on_rows=seen.append)
    for start, stop in zip([0, *cuts], [*cuts, len(arrays["y"])]):
        writer.write({key: array[start:stop] for key, array in arrays.items()})
    shards = writer.close()
    assert seen == [stop - start for start, stop in zip([0, *cuts], [*cuts, len(arrays["y"])])]
    return shards


def _read(directory: Path, fmt: str, shards: tuple[ShardInfo, ...]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {"x": [], "y": []}
    for shard in shards:
        if fmt == "npy":
            for key in parts:
                mapped = np.load(directory / shard.files[key].name, mmap_mode="r")
                assert isinstance(mapped, np.memmap) and len(mapped) == shard.num_samples
                parts[key].append(np.array(mapped))
        else:
            with h5py.File(directory / shard.files["hdf5"].name, "r") as handle:
                for key in parts:
                    assert handle[key].shape[0] == shard.num_samples
                    parts[key].append(handle[key][()])
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


@pytest.mark.parametrize("fmt, compression", FORMATS, ids=["npy", "hdf5", "hdf5-gzip", "hdf5-lzf"])
@pytest.mark.parametrize("shard_size", [1, 5, 23, 100])
@pytest.mark.parametrize("cuts", [[], [1, 2, 10, 22], [7, 14, 21]], ids=["whole", "ragged", "sevens"])
def test_shards_concatenate_to_the_input(tmp_path: Path, fmt: str, compression: str | None, shard_size: int,
                                         cuts: list[int]) -> None:
    arrays = _arrays()
    shards = _write(tmp_path, fmt, compression, shard_size, cuts, arrays)
    expected = [min(shard_size, N - start) for start in range(0, N, shard_size)]
    assert [shard.num_samples for shard in shards] == expected
    back = _read(tmp_path, fmt, shards)
    assert back["x"].dtype == np.dtype("<i2") and back["y"].dtype == np.uint8
    np.testing.assert_array_equal(back["x"], arrays["x"])
    np.testing.assert_array_equal(back["y"], arrays["y"])
    on_disk = {path.name for path in tmp_path.iterdir()}
    assert on_disk == {info.name for shard in shards for info in shard.files.values()}
    for shard in shards:
        for info in shard.files.values():
            data = (tmp_path / info.name).read_bytes()
            assert (info.bytes, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_file_names_follow_split_and_shard_number(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    npy = _write(tmp_path / "a", "npy", None, 10, [], _arrays())
    assert [sorted(info.name for info in shard.files.values()) for shard in npy] == [
        [f"train-{i:05d}.x.npy", f"train-{i:05d}.y.npy"] for i in range(3)]
    (tmp_path / "b").mkdir()
    h5 = _write(tmp_path / "b", "hdf5", None, 10, [], _arrays())
    assert [shard.files["hdf5"].name for shard in h5] == [f"train-{i:05d}.h5" for i in range(3)]
    names = [info.name for shard in npy + h5 for info in shard.files.values()]
    assert all(SHARD_NAME.fullmatch(name)["split"] == "train" for name in names)  # what manifests may name


@pytest.mark.parametrize("fmt, compression", FORMATS, ids=["npy", "hdf5", "hdf5-gzip", "hdf5-lzf"])
def test_finished_shards_are_read_only(tmp_path: Path, fmt: str, compression: str | None) -> None:
    """Readers map shards: a file cut short under a map kills the reader (SIGBUS), so none is left writable."""
    shards = _write(tmp_path, fmt, compression, 10, [], _arrays())
    modes = {stat.S_IMODE((tmp_path / info.name).stat().st_mode) for shard in shards for info in shard.files.values()}
    assert modes == {0o444}


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_hdf5_storage_layout(tmp_path: Path, compression: str | None) -> None:
    arrays = {"x": np.zeros((300, 28, 28), np.uint8), "y": np.zeros(300, np.uint8)}
    writer = Hdf5ShardWriter(tmp_path, "train", {"x": ArraySpec("|u1", (28, 28)), "y": ArraySpec("|u1", ())}, 300,
                             200, compression=compression)
    writer.write(arrays)
    shards = writer.close()
    with h5py.File(tmp_path / shards[0].files["hdf5"].name, "r") as handle:
        x = handle["x"]
        assert x.compression == compression and x.dtype == np.uint8 and x.shape == (200, 28, 28)
        if compression is None:
            assert x.chunks is None  # contiguous: a sample is one read
        else:
            assert x.chunks == (HDF5_CHUNK_BYTES // 784, 28, 28)
            assert handle["y"].chunks == (200,)


def test_default_shard_size_is_about_64_mb() -> None:
    assert default_shard_size({"x": ArraySpec("|u1", (28, 28)), "y": ArraySpec("|u1", ())}) == TARGET_SHARD_BYTES // 785
    assert default_shard_size({"x": ArraySpec("<f8", (4096, 4096))}) == 1
    assert default_shard_size({"x": ArraySpec("|u1", ())}) == TARGET_SHARD_BYTES


def test_empty_split_has_no_shards(tmp_path: Path) -> None:
    writer = make_writer("npy", tmp_path, "test", SPECS, 0, 10)
    assert writer.close() == ()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, compression, size, match", [
    ("npy", None, 0, "shard size"),
    ("hdf5", None, -1, "shard size"),
    ("csv", None, 10, "unknown shard format"),
    ("npy", "gzip", 10, "hdf5 only"),
    ("hdf5", "zstd", 10, "unknown HDF5 compression"),
])
def test_bad_options_raise_before_writing(tmp_path: Path, fmt: str, compression: str | None, size: int,
                                          match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        make_writer(fmt, tmp_path, "train", SPECS, N, size, compression)
    assert list(tmp_path.iterdir()) == []


def test_direct_writer_construction_checks_shard_size(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError):
        NpyShardWriter(tmp_path, "train", SPECS, N, 0)


def _chunk(n: int, **changes: np.ndarray) -> dict[str, np.ndarray]:
    chunk = {key: value[:n] for key, value in _arrays().items()}
    chunk.update(changes)
    return chunk


@pytest.mark.parametrize("chunk, match", [
    (_chunk(5, z=np.zeros(5)), "chunk has arrays"),
    ({"x": _arrays()["x"][:5]}, "chunk has arrays"),
    (_chunk(5, y=np.zeros(4, np.uint8)), "differ in length"),
    (_chunk(5, x=np.zeros((5, 3, 4), np.int32)), "array 'x'"),
    (_chunk(5, x=np.zeros((5, 4, 3), np.int16)), "array 'x'"),
    (_chunk(5, y=np.zeros((5, 1), np.uint8)), "array 'y'"),
])
def test_chunks_that_do_not_match_the_specs_are_rejected(tmp_path: Path, chunk: dict[str, np.ndarray],
                                                         match: str) -> None:
    writer = make_writer("npy", tmp_path, "train", SPECS, N, 10)
    with pytest.raises(SourceMismatchError, match=match):
        writer.write(chunk)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_source_delivering_too_few_or_too_many_samples(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "few").mkdir()
    writer = make_writer(fmt, tmp_path / "few", "train", SPECS, N, 10)
    writer.write(_chunk(N - 1))
    with pytest.raises(SourceMismatchError, match=f"announced {N} samples but delivered {N - 1}"):
        writer.close()
    (tmp_path / "many").mkdir()
    writer = make_writer(fmt, tmp_path / "many", "train", SPECS, N - 1, 10)
    with pytest.raises(SourceMismatchError, match=f"more than {N - 1}"):
        writer.write(_chunk(N))
