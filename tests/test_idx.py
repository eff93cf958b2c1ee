"""Tests for streamload.write.sources.idx: the IDX byte layout, gzip by magic, streaming in chunks, every bad file."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_split, subprocess_env

from streamload.errors import IdxFormatError, SourceMismatchError
from streamload.write.sources.idx import (
    IDX_DTYPES,
    IdxPairSource,
    iter_idx_rows,
    open_idx,
    read_idx,
    read_idx_header,
    write_idx,
)

ALL_DTYPES = ["u1", "i1", ">i2", ">i4", ">f4", ">f8", "<i2", "<f4"]  # little-endian inputs are stored big-endian


def _array(dtype: str, shape: tuple[int, ...] = (11, 3, 4), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape) * 100
    return values.astype(dtype)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_round_trip_keeps_values_and_returns_native_endian(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = _array(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    back = read_idx(path)
    assert back.shape == array.shape
    assert back.dtype == np.dtype(dtype).newbyteorder("=")
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_bytes_on_disk_follow_the_idx_specification(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 5, dtype="<i2").reshape(2, 3, 5) - 7
    path = write_idx(tmp_path / "a.idx", array)
    data = path.read_bytes()
    assert data[:4] == bytes([0, 0, 0x0B, 3])
    assert struct.unpack(">3I", data[4:16]) == (2, 3, 5)
    assert data[16:] == array.astype(">i2").tobytes()
    header = read_idx_header(path)
    assert (header.dtype, header.shape, header.header_bytes) == (np.dtype(">i2"), (2, 3, 5), 16)
    assert (header.num_rows, header.row_shape, header.row_bytes) == (2, (3, 5), 30)


def test_mnist_style_headers(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", np.zeros((4, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    assert images.read_bytes()[:4] == bytes.fromhex("00000803")
    assert labels.read_bytes()[:4] == bytes.fromhex("00000801")
    assert read_idx_header(labels).row_shape == () and read_idx_header(labels).row_bytes == 1


def test_gzip_is_detected_by_content_not_by_name(tmp_path: Path) -> None:
    array = _array("u1")
    zipped_without_suffix = write_idx(tmp_path / "plain-name", array, compress=True)
    raw_with_suffix = write_idx(tmp_path / "looks.gz", array, compress=False)
    assert zipped_without_suffix.read_bytes()[:2] == b"\x1f\x8b"
    assert raw_with_suffix.read_bytes()[:2] == b"\x00\x00"
    np.testing.assert_array_equal(read_idx(zipped_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), array)
    with open_idx(zipped_without_suffix) as stream:
        assert stream.read(4) == bytes([0, 0, 0x08, 3])


@pytest.mark.parametrize("chunk_rows", [1, 3, 4, 11, 100])
def test_iter_rows_yields_bounded_chunks_that_concatenate_to_the_file(tmp_path: Path, chunk_rows: int) -> None:
    array = _array(">f4")
    path = write_idx(tmp_path / "a.gz", array)
    chunks = list(iter_idx_rows(path, chunk_rows))
    sizes = [len(chunk) for chunk in chunks]
    expected = [min(chunk_rows, 11 - start) for start in range(0, 11, chunk_rows)]
    assert sizes == expected
    assert all(chunk.dtype == np.dtype("=f4") for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), array)


def test_empty_file_reads_as_empty_array_of_its_shape(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "empty", np.zeros((0, 5), ">i4"))
    back = read_idx(path)
    assert back.shape == (0, 5) and back.dtype == np.dtype("=i4")
    assert list(iter_idx_rows(path, 4)) == []


@pytest.mark.parametrize("magic", ["01000801", "00010801", "00000a01", "00000700", "00000800", "08030000"])
def test_wrong_magic_number_is_rejected_naming_the_file(tmp_path: Path, magic: str) -> None:
    path = tmp_path / "bad-magic"
    path.write_bytes(bytes.fromhex(magic) + struct.pack(">I", 1) + b"\x00" * 16)
    with pytest.raises(IdxFormatError, match="wrong IDX magic number") as caught:
        read_idx_header(path)
    assert str(path) in str(caught.value)
    with pytest.raises(IdxFormatError):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("keep", [0, 3, 9], ids=["empty", "half-magic", "half-dims"])
def test_truncated_header_is_rejected(tmp_path: Path, keep: int, gz: bool) -> None:
    data = struct.pack(">HBB3I", 0, 8, 3, 2, 28, 28)[:keep]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IdxFormatError, match="truncated") as caught:
        read_idx_header(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_payload_is_rejected_naming_the_file(tmp_path: Path, gz: bool) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    whole = write_idx(tmp_path / "whole", array, compress=gz).read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(whole[: len(whole) // 2])
    assert read_idx_header(path).shape == (50, 28, 28)  # the header alone is fine
    with pytest.raises(IdxFormatError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)
    assert "IDX payload" in str(caught.value)
    with pytest.raises(IdxFormatError):
        for _ in iter_idx_rows(path, 7):
            pass


def test_raw_payload_one_byte_short_is_rejected(tmp_path: Path) -> None:
    whole = write_idx(tmp_path / "whole", np.ones((3, 4), np.uint8)).read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(whole[:-1])
    with pytest.raises(IdxFormatError, match=r"expected 12 bytes, found 11"):
        read_idx(path)


@pytest.mark.parametrize("array", [np.zeros(3, bool), np.zeros(3, np.complex64), np.zeros(3, np.uint16),
                                   np.zeros(3, np.int64), np.array(5, np.uint8)],
                         ids=["bool", "complex", "uint16", "int64", "scalar"])
def test_write_rejects_what_idx_cannot_store(tmp_path: Path, array: np.ndarray) -> None:
    with pytest.raises(IdxFormatError, match="cannot store"):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


def test_dtype_table_is_big_endian_for_multibyte_types() -> None:
    for dtype in IDX_DTYPES.values():
        assert dtype.itemsize == 1 or dtype.byteorder == ">"


# --- read to the end: the gzip trailer, trailing bytes, impossible headers -----------------------


def _images(n: int = 20) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(n, 5, 4), dtype=np.uint8)


def _read_all(path: Path) -> None:
    for _ in iter_idx_rows(path, 7):
        pass


def test_gzip_trailer_cut_off_is_rejected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.gz", _images())
    path.write_bytes(path.read_bytes()[:-8])  # payload complete, CRC-32 and length gone
    assert read_idx_header(path).shape == (20, 5, 4)
    with pytest.raises(IdxFormatError, match="cannot read the end of the gzip stream .*ended before") as caught:
        _read_all(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("offset", [-8, -5, -4, -1], ids=["crc-low", "crc-high", "length-low", "length-high"])
def test_gzip_trailer_that_disagrees_with_the_data_is_rejected(tmp_path: Path, offset: int) -> None:
    path = write_idx(tmp_path / "a.gz", _images())
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match="CRC check failed|Incorrect length") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_last_chunk_is_not_yielded_before_the_crc_is_checked(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.gz", _images())
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x10
    path.write_bytes(bytes(data))
    chunks = []
    with pytest.raises(IdxFormatError):
        for chunk in iter_idx_rows(path, 7):
            chunks.append(chunk)
    assert [len(chunk) for chunk in chunks] == [7, 7]  # rows 14..19 never reached the caller


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_trailing_bytes_are_rejected(tmp_path: Path, gz: bool) -> None:
    whole = write_idx(tmp_path / "whole", _images(), compress=False).read_bytes() + b"\x00" * 5
    path = tmp_path / "long"
    path.write_bytes(gzip.compress(whole) if gz else whole)
    with pytest.raises(IdxFormatError, match="trailing bytes after the IDX payload") as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")
    if not gz:
        assert "5 trailing bytes" in str(caught.value) and "the file has 421" in str(caught.value)


def test_a_second_gzip_member_is_trailing_data(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.gz", _images())
    path.write_bytes(path.read_bytes() + gzip.compress(b"more"))
    with pytest.raises(IdxFormatError, match="trailing bytes"):
        read_idx(path)


def test_header_with_too_many_dimensions_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "deep"
    path.write_bytes(struct.pack(">HBB", 0, 8, 40) + struct.pack(">40I", *[1] * 40))
    with pytest.raises(IdxFormatError, match="declares 40 dimensions; at most 32"):
        read_idx_header(path)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_header_claiming_terabytes_fails_without_allocating(tmp_path: Path, gz: bool) -> None:
    data = struct.pack(">HBB3I", 0, 0x0E, 3, 2**32 - 1, 2**20, 2**10) + b"\x00" * 64  # 2**65 bytes of float64
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IdxFormatError, match="more than any file holds"):
        read_idx(path)
    data = struct.pack(">HBB2I", 0, 0x08, 2, 2**31, 2**20) + b"\x00" * 64  # 2 TiB: a valid header, no data
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IdxFormatError, match="truncated IDX payload"):
        read_idx(path)


# --- images and labels that cannot pair up -------------------------------------------------------


def test_swapped_images_and_labels_are_refused(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", _images())
    labels = write_idx(tmp_path / "labels", np.arange(20, dtype=np.uint8))
    with pytest.raises(SourceMismatchError) as caught:
        IdxPairSource(labels, images)
    message = str(caught.value)
    assert f"{labels}: images must have rank >= 2 (samples, then pixels), this file has shape (20,)" in message
    assert f"{images}: labels must have rank 1 (one per sample), this file has shape (20, 5, 4)" in message
    assert message.endswith("(are the images and labels files swapped?)")


def test_labels_of_higher_rank_are_refused(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", _images())
    labels = write_idx(tmp_path / "labels", np.zeros((20, 2), np.uint8))
    with pytest.raises(SourceMismatchError, match=r"labels must have rank 1 .* shape \(20, 2\)"):
        IdxPairSource(images, labels)


def test_raw_source_with_trailing_bytes_is_refused_before_reading(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", _images())
    labels = write_idx(tmp_path / "labels", np.arange(20, dtype=np.uint8))
    labels.write_bytes(labels.read_bytes() + b"\x01")
    with pytest.raises(IdxFormatError, match="1 trailing bytes after the IDX payload"):
        IdxPairSource(images, labels)


def _write_large_images(path: Path, count: int, side: int) -> None:
    """``count`` uint8 images of side x side, image i all of value i % 251, streamed: never all in memory."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(struct.pack(">HBB3I", 0, 0x08, 3, count, side, side))
        for number in range(count):
            out.write(bytes([number % 251]) * (side * side))


_BUILD_AND_MEASURE = """
import sys
from streamload.write.build import BuildOptions, build_dataset
from streamload.base.procstats import PeakMemorySampler
from streamload.write.sources.idx import IdxPairSource
sampler = PeakMemorySampler(interval=0.005).start()
before = sampler.peak.rss_anon
build_dataset({"train": IdxPairSource(sys.argv[1], sys.argv[2])}, sys.argv[3], BuildOptions(progress=False))
print(sampler.stop().rss_anon - before)
"""


@pytest.mark.slow
def test_building_large_images_holds_chunks_of_bytes_not_of_rows(tmp_path: Path) -> None:
    """300 images of 1000x1000 (286 MiB): 8,192 rows a chunk held all of them, twice (579 MiB). Chunks of 64 MiB
    read into one buffer: the one being read and the one being written (128 MiB; 139 MiB measured)."""
    count, side = 300, 1000
    _write_large_images(tmp_path / "images.gz", count, side)
    write_idx(tmp_path / "labels", (np.arange(count) % 251).astype(np.uint8))  # image i's value, as its label
    command = [sys.executable, "-c", _BUILD_AND_MEASURE, str(tmp_path / "images.gz"), str(tmp_path / "labels"),
               str(tmp_path / "ds")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    heap_growth = int(result.stdout)
    # two 64 MiB chunks and room; a third (a copy of either) fails
    assert heap_growth < 192 * 2**20, f"peak heap grew by {heap_growth / 2**20:.0f} MiB"
    back = read_split(tmp_path / "ds", "train")
    assert back["x"].shape == (count, side, side)
    np.testing.assert_array_equal(back["y"], np.arange(count) % 251)
    for corner in (back["x"][:, 0, 0], back["x"][:, -1, -1], back["x"][:, 517, 333]):  # every row where it belongs
        np.testing.assert_array_equal(corner, back["y"])
