"""Shard readers: rows and byte ranges of one shard, checked against np.load, h5py and the raw file bytes."""

import mmap
import os
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from shards import build, make_writable, plant_foreign_hdf5, shard_folder, vm_flags_of_mappings

from streamload.errors import ShardFormatError
from streamload.format.dispatch import open_reader
from streamload.format.hdf5.reader import ChunkedArray
from streamload.format.manifest import ArraySpec, read_manifest
from streamload.format.npy.reader import npy_data_offset
from streamload.format.reader import MappedArray
from streamload.places.layout import shard_root

FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]
ROW_BYTES = 28 * 28


def _root(directory: Path) -> Path:
    """Where the shard files of the dataset's current generation lie."""
    return shard_root(directory, read_manifest(directory))


def first_reader(directory: Path):  # noqa: ANN201 - a ShardReader
    manifest = read_manifest(directory)
    split = manifest.split("train")
    return open_reader(manifest.format, _root(directory), split.shards[0], split.arrays)


def first_shard(directory: Path):  # noqa: ANN201
    manifest = read_manifest(directory)
    split = manifest.split("train")
    return manifest, split.shards[0], split.arrays


def open_descriptors_of(path: Path) -> int:
    """How many of this process' file descriptors point at ``path``."""
    target = str(path.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # the descriptor listdir itself used, already closed
            pass
    return count


def file_bytes(fd: int, start: int, end: int) -> bytes:
    return os.pread(fd, end - start, start)


@pytest.mark.parametrize("fmt,compression", FORMATS)
def test_take_equals_in_memory_indexing(tmp_path, fmt, compression) -> None:
    directory, arrays = build(tmp_path, 500, fmt, compression=compression)
    reader = first_reader(directory)
    assert reader.num_samples == 500
    rows = np.sort(np.random.default_rng(0).integers(0, 500, 200))  # sorted, with repeats
    for key in ("x", "y"):
        got = reader.take(key, rows)
        assert np.array_equal(got, arrays[key][rows]) and got.dtype == arrays[key].dtype
        assert reader.take(key, np.array([], dtype=np.int64)).shape == (0, *arrays[key].shape[1:])


@pytest.mark.parametrize("fmt,compression", FORMATS)
def test_take_writes_into_the_buffer_it_is_given(tmp_path, fmt, compression) -> None:
    directory, arrays = build(tmp_path, 400, fmt, compression=compression)
    reader = first_reader(directory)
    rows = np.array([3, 3, 80, 81, 82, 170, 399])
    whole = np.full((len(rows) + 4, 28, 28), 7, dtype=np.uint8)
    out = whole[2:2 + len(rows)]  # a slice of a larger array, as the dataset passes
    result = reader.take("x", rows, out=out)
    assert np.shares_memory(result, whole) and np.array_equal(out, arrays["x"][rows])
    assert (whole[:2] == 7).all() and (whole[2 + len(rows):] == 7).all()  # nothing written outside it


def test_contiguous_hdf5_is_memory_mapped_and_h5py_closed(tmp_path) -> None:
    directory, arrays = build(tmp_path, 300, "hdf5")
    path = next(shard_folder(directory).glob("train-*.h5"))
    reader = first_reader(directory)
    assert all(isinstance(array, MappedArray) for array in reader.arrays.values())
    # each map's own descriptor and the duplicate mmap keeps: h5py's (a fifth) was closed
    assert open_descriptors_of(path) == 4
    chunked_directory, _ = build(tmp_path, 300, "hdf5", compression="gzip")
    chunked = first_reader(chunked_directory)
    # h5py keeps its own, and each chunked dataset one for read hints and change checks
    assert open_descriptors_of(next(shard_folder(chunked_directory).glob("train-*.h5"))) == 3
    assert chunked.arrays["x"].fd is not None and chunked.arrays["x"].dataset.id.valid
    with h5py.File(path, "r") as handle:
        assert reader.arrays["x"].offset == handle["x"].id.get_offset()
    assert np.array_equal(reader.take("x", np.array([0, 5, 5, 299])), arrays["x"][[0, 5, 5, 299]])


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_hdf5_is_read_in_chunks(tmp_path, compression) -> None:
    directory, arrays = build(tmp_path, 500, "hdf5", compression=compression)
    reader = first_reader(directory)
    assert isinstance(reader.arrays["x"], ChunkedArray) and reader.arrays["x"].chunk_rows == 65536 // ROW_BYTES
    rows = np.sort(np.random.default_rng(0).integers(0, 500, 100))
    assert np.array_equal(reader.take("x", rows), arrays["x"][rows])


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_mapped_ranges_are_offset_plus_row_times_row_bytes(tmp_path, fmt) -> None:
    directory, arrays = build(tmp_path, 300, fmt)
    reader = first_reader(directory)
    _, shard, _ = first_shard(directory)
    if fmt == "npy":
        mapped = np.load(_root(directory) / shard.files["x"].name, mmap_mode="r")
        offset = mapped.offset
        del mapped
    else:
        with h5py.File(_root(directory) / shard.files["hdf5"].name, "r") as handle:
            offset = handle["x"].id.get_offset()
    rows = np.array([0, 7, 7, 150, 299])
    ranges = reader.ranges("x", rows)
    assert np.array_equal(ranges.starts, offset + rows * ROW_BYTES)
    assert np.array_equal(ranges.ends, ranges.starts + ROW_BYTES)
    for row, start, end in zip(rows, ranges.starts, ranges.ends):  # the bytes there are the sample's
        assert file_bytes(ranges.fd, int(start), int(end)) == arrays["x"][row].tobytes()
    span = reader.span("x", 10, 20)
    assert (span.starts.tolist(), span.ends.tolist()) == ([offset + 10 * ROW_BYTES], [offset + 20 * ROW_BYTES])
    assert file_bytes(span.fd, int(span.starts[0]), int(span.ends[0])) == arrays["x"][10:20].tobytes()


def test_npy_offset_is_numpys(tmp_path) -> None:
    directory, _ = build(tmp_path, 50, "npy")
    _, shard, specs = first_shard(directory)
    for key in ("x", "y"):
        path = _root(directory) / shard.files[key].name
        assert npy_data_offset(path, specs[key], 50) == np.load(path, mmap_mode="r").offset


def test_chunked_ranges_name_the_chunks_stored_bytes(tmp_path) -> None:
    directory, arrays = build(tmp_path, 1000, "hdf5", compression="gzip")
    reader = first_reader(directory)
    chunk_rows = reader.arrays["x"].chunk_rows
    rows = np.array([1, 2, 90, 500, 501, 999])
    ranges = reader.ranges("x", rows)
    chunks = np.unique(rows // chunk_rows)
    _, shard, _ = first_shard(directory)
    with h5py.File(_root(directory) / shard.files["hdf5"].name, "r") as handle:
        stored = [handle["x"].id.get_chunk_info_by_coord((int(c) * chunk_rows, 0, 0)) for c in chunks]
    assert ranges.starts.tolist() == [info.byte_offset for info in stored]
    assert ranges.ends.tolist() == [info.byte_offset + info.size for info in stored]
    for chunk, start, end in zip(chunks, ranges.starts, ranges.ends):  # deflate streams of the chunks' rows
        raw = np.frombuffer(zlib.decompress(file_bytes(ranges.fd, int(start), int(end))), np.uint8)
        first, last = chunk * chunk_rows, min((chunk + 1) * chunk_rows, 1000)
        assert np.array_equal(raw.reshape(-1, 28, 28)[:last - first], arrays["x"][first:last])
    span = reader.span("x", chunk_rows - 1, 3 * chunk_rows + 1)  # touches chunks 0 to 3
    assert len(span.starts) == 4 and span.starts[0] == stored[0].byte_offset


def test_truncated_npy_is_refused_naming_the_file(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy")
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x"].name
    os.truncate(make_writable(path), path.stat().st_size - 1)
    with pytest.raises(ShardFormatError, match=rf"{path}: truncated: {path.stat().st_size} bytes"):
        first_reader(directory)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_truncated_hdf5_is_refused_naming_the_file(tmp_path, compression) -> None:
    directory, _ = build(tmp_path, 100, "hdf5", compression=compression)
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["hdf5"].name
    os.truncate(make_writable(path), path.stat().st_size - 1000)
    with pytest.raises(ShardFormatError, match=f"^{path}: .*truncated"):
        first_reader(directory)


@pytest.mark.parametrize("stored,expected", [
    (np.zeros((99, 28, 28), np.uint8), "holds uint8 \\(99, 28, 28\\), the manifest says |u1 \\(100, 28, 28\\)"),
    (np.zeros((100, 28, 28), np.int16), "holds int16 \\(100, 28, 28\\)"),
    (np.asfortranarray(np.zeros((100, 28, 28), np.uint8)), "holds uint8 \\(100, 28, 28\\)"),
])
def test_npy_header_disagreeing_with_the_manifest_is_refused(tmp_path, stored, expected) -> None:
    directory, _ = build(tmp_path, 100, "npy")
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x"].name
    np.save(make_writable(path), stored)
    with pytest.raises(ShardFormatError, match=f"^{path}: {expected}"):
        first_reader(directory)


def test_a_file_that_is_not_npy_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"PK\x03\x04 not an array at all")
    with pytest.raises(ShardFormatError, match=rf"^{path}: not a valid .npy file"):
        npy_data_offset(path, ArraySpec("|u1", (28, 28)), 1)


def test_hdf5_dataset_missing_or_of_the_wrong_shape_is_refused(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "hdf5")
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["hdf5"].name
    with h5py.File(make_writable(path), "r+") as handle:
        del handle["y"]
    with pytest.raises(ShardFormatError, match=f"^{path}: no dataset 'y'"):
        first_reader(directory)
    with h5py.File(path, "r+") as handle:
        handle.create_dataset("y", data=np.zeros(100, np.int64))
    with pytest.raises(ShardFormatError, match=f"^{path}: dataset 'y' is int64 \\(100,\\), the manifest says"):
        first_reader(directory)


def test_a_file_that_is_not_hdf5_is_refused(tmp_path) -> None:
    directory, _ = build(tmp_path, 10, "hdf5")
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["hdf5"].name
    make_writable(path).write_bytes(b"\0" * 4096)
    with pytest.raises(ShardFormatError, match=f"^{path}: cannot open as HDF5"):
        first_reader(directory)


@pytest.mark.skipif(not hasattr(mmap, "MADV_RANDOM"), reason="madvise hints need Linux")
@pytest.mark.parametrize("advice,flag", [("MADV_RANDOM", "rr"), ("MADV_SEQUENTIAL", "sr")])
def test_advise_sets_the_flag_on_every_mapping_of_the_shard(tmp_path, advice, flag) -> None:
    directory, arrays = build(tmp_path, 100, "npy")
    reader = first_reader(directory)
    reader.advise(getattr(mmap, advice))
    assert np.array_equal(reader.take("y", np.array([3, 4])), arrays["y"][[3, 4]])
    mapped = vm_flags_of_mappings(directory.resolve())
    assert sorted(mapped) == ["train-00000.x.npy", "train-00000.y.npy"]
    assert all(flag in flags for maps in mapped.values() for flags in maps), mapped


def test_npy_headers_are_parsed_one_at_a_time_across_threads(tmp_path, monkeypatch) -> None:
    """numpy parses headers with ast.literal_eval, which CPython < 3.13 cannot run in two threads at once
    (gh-106905); the parse is wrapped so that at most one runs, whatever the number of threads opening shards."""
    import threading
    import time

    from streamload.read.dataset import ShardedDataset

    directory, _ = build(tmp_path, 1200, "npy", 100)  # 12 shards, 24 headers
    real, inside, most = np.lib.format.read_array_header_1_0, [0], [0]
    lock = threading.Lock()

    def slow_parse(stream, *args, **kwargs):  # noqa: ANN001, ANN202 - numpy's signature
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.005)  # long enough for other threads to arrive while this one parses
        try:
            return real(stream, *args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(np.lib.format, "read_array_header_1_0", slow_parse)
    dataset = ShardedDataset(directory)
    threads = [threading.Thread(target=lambda: [dataset.reader(s) for s in range(12)]) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and all(dataset.reader(s) is not None for s in range(12))


# --- shards that changed, lie outside the dataset or are damaged --------------------------------------

CUT_UNDER_THE_MAP = """
import os, sys
import numpy as np
from streamload.read.dataset import ShardedDataset
from streamload.errors import ShardChangedError
from streamload.places.layout import shard_root
from streamload.format.manifest import read_manifest
from streamload.format.dispatch import open_reader

directory, victim, via = sys.argv[1:]
if via == "reader":  # on its own: an fstat before every read
    manifest = read_manifest(directory)
    split = manifest.split("train")
    reader = open_reader(manifest.format, shard_root(directory, manifest), split.shards[0], split.arrays)
    read = lambda row: reader.take("x", np.array([row]))
else:  # under a dataset: inotify says when to fstat
    dataset = ShardedDataset(directory)
    read = lambda row: dataset.gather(np.array([row]))
read(0)  # mapped and read
os.chmod(victim, 0o644)
os.truncate(victim, 4096)
try:
    read(99)  # a row whose pages are gone
except ShardChangedError as exc:
    print(exc)
    sys.exit(3)
print("served")
"""


@pytest.mark.parametrize("via", ["reader", "dataset"])
@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_shard_cut_under_its_map_is_a_named_error_not_sigbus(tmp_path, fmt, via) -> None:
    """In a child process: touching the unmapped pages would kill it with SIGBUS (exit -7), not fail a test."""
    import subprocess
    import sys

    from conftest import subprocess_env

    directory, _ = build(tmp_path, 100, fmt)
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x" if fmt == "npy" else "hdf5"].name
    result = subprocess.run([sys.executable, "-c", CUT_UNDER_THE_MAP, str(directory), str(path), via],
                            capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith(f"{path}: the shard file changed while the dataset was reading it (cut from ")


@pytest.mark.parametrize("fmt,compression", FORMATS)
def test_a_shard_rewritten_in_place_after_opening_is_a_named_error(tmp_path, fmt, compression) -> None:
    from streamload.errors import ShardChangedError

    directory, arrays = build(tmp_path, 100, fmt, compression=compression)
    reader = first_reader(directory)
    assert np.array_equal(reader.take("x", np.array([5])), arrays["x"][[5]])
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x" if fmt == "npy" else "hdf5"].name
    with open(make_writable(path), "r+b") as stream:  # same size, other bytes: no crash, wrong data
        stream.seek(-10, os.SEEK_END)
        stream.write(b"0123456789")
    with pytest.raises(ShardChangedError, match=f"^{path}: the shard file changed .*written or touched in place"):
        reader.take("x", np.array([5, 99]))


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_a_chunk_that_fails_to_decompress_names_the_shard(tmp_path, compression) -> None:
    from streamload import ArraySource, BuildOptions, build_dataset
    from streamload.errors import ShardCorruptError, ShardDecodeError

    arrays = {"x": np.repeat(np.arange(300, dtype=np.uint8), 28 * 28).reshape(300, 28, 28),  # compressible
              "y": np.zeros(300, np.uint8)}
    directory = tmp_path / "ds"
    build_dataset({"train": ArraySource(**arrays)}, directory, BuildOptions(format="hdf5", compression=compression,
                                                                          progress=False))
    path = shard_folder(directory) / "train-00000.h5"
    with h5py.File(path, "r") as handle:
        chunk = handle["x"].id.get_chunk_info_by_coord((0, 0, 0))
        chunk_rows = handle["x"].chunks[0]
    assert chunk.filter_mask == 0  # stored compressed (a chunk that does not shrink is stored raw)
    with open(make_writable(path), "r+b") as stream:  # the file keeps its size: only the chunk is damaged
        stream.seek(chunk.byte_offset)
        stream.write(b"\xff" * chunk.size)
    reader = first_reader(directory)
    assert np.array_equal(reader.take("x", np.array([chunk_rows])), arrays["x"][[chunk_rows]])  # other chunks read
    with pytest.raises(ShardDecodeError, match=f"^{path}: dataset 'x', rows 0..{chunk_rows - 1}: a stored chunk "
                                               "cannot be read back .*the file is damaged") as caught:
        reader.take("x", np.array([1]))
    assert isinstance(caught.value, ShardCorruptError) and "\n" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_shard_that_is_a_symbolic_link_is_refused(tmp_path, fmt) -> None:
    directory, _ = build(tmp_path, 100, fmt)
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x" if fmt == "npy" else "hdf5"].name
    outside = tmp_path / "outside"
    path.rename(outside)  # the same bytes, reached through a link: a link could as well lead to /etc/passwd
    path.symlink_to(outside)
    expected = f"^{path}: is a symbolic link; shard files must be regular files inside the dataset folder$"
    with pytest.raises(ShardFormatError, match=expected):
        first_reader(directory)


OPEN_FIRST_SHARD = """
import sys
from streamload.read.dataset import ShardedDataset
from streamload.errors import ShardFormatError

try:
    ShardedDataset(sys.argv[1]).reader(0)
except ShardFormatError as exc:
    print(exc)
"""


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_shard_that_is_a_fifo_is_refused_without_waiting(tmp_path, fmt) -> None:
    """In a child process with a time limit: h5py waits in open() holding the GIL, so no thread could end it."""
    import json
    import subprocess
    import sys

    from conftest import subprocess_env

    from streamload.format.manifest import MANIFEST_NAME

    directory, _ = build(tmp_path, 100, fmt)
    _, shard, _ = first_shard(directory)
    path = _root(directory) / shard.files["x" if fmt == "npy" else "hdf5"].name
    path.unlink()
    os.mkfifo(path)
    for manifest in (directory / MANIFEST_NAME, _root(directory) / MANIFEST_NAME):  # its recorded size: a FIFO's
        data = json.loads(manifest.read_text())
        data["splits"]["train"]["shards"][0]["files"]["x" if fmt == "npy" else "hdf5"]["bytes"] = 0
        manifest.write_text(json.dumps(data))
    try:
        result = subprocess.run([sys.executable, "-c", OPEN_FIRST_SHARD, str(directory)], capture_output=True,
                                text=True, timeout=60, env=subprocess_env())
    except subprocess.TimeoutExpired:
        pytest.fail("opening a shard that is a FIFO waited for a writer")
    assert result.stdout.strip() == f"{path}: is not a regular file; shard files must be regular files inside the " \
                                    "dataset folder", result.stderr[-2000:]


@pytest.mark.parametrize("kind", ["external", "virtual", "external_link"])
def test_hdf5_data_stored_outside_the_shard_is_refused(tmp_path, kind) -> None:
    from streamload.read.dataset import ShardedDataset

    directory, _ = build(tmp_path, 100, "hdf5", name="ds")
    secret = plant_foreign_hdf5(directory, kind)
    words = {"external": "uses HDF5 external storage", "virtual": "is a virtual dataset",
             "external_link": "is an HDF5 ExternalLink to data elsewhere"}[kind]
    dataset = ShardedDataset(directory)
    with pytest.raises(ShardFormatError, match=f"^{shard_folder(directory) / 'train-00000.h5'}: dataset 'x' {words}"):
        served = dataset.gather(np.arange(100))["x"]
        assert served.tobytes() != secret  # what main did: the outside file as training data


def test_errors_never_quote_the_bytes_of_a_file(tmp_path) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ShardFormatError) as caught:
        npy_data_offset(path, ArraySpec("|u1", (28, 28)), 1)
    assert str(caught.value) == f"{path}: not a valid .npy file (no readable .npy magic and header)"
