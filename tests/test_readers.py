import mmap
import os

import h5py
import numpy as np
import pytest
from shards import build

from streamload.errors import ShardFormatError
from streamload.generations import shard_root
from streamload.manifest import read_manifest
from streamload.readers import Hdf5ShardReader, NpyShardReader, make_reader
from streamload.storage import MappedArray


def _root(directory):
    """Where the shard files of the dataset's current generation lie."""
    return shard_root(directory, read_manifest(directory))


def first_shard(directory):
    manifest = read_manifest(directory)
    split = manifest.split("train")
    return manifest, split.shards[0], split.arrays


def test_contiguous_hdf5_is_memory_mapped_and_file_closed(tmp_path) -> None:
    directory, arrays = build(tmp_path, 300, "hdf5")
    manifest, shard, specs = first_shard(directory)
    reader = Hdf5ShardReader(_root(directory), shard, specs)
    rows = np.array([0, 5, 5, 299])
    assert np.array_equal(reader.read("x", rows), arrays["x"][rows])
    assert isinstance(reader.source("x"), MappedArray)
    assert not any(isinstance(value, h5py.Dataset) for value in reader._resources().values())


def test_chunked_hdf5_reads_whole_chunks(tmp_path) -> None:
    directory, arrays = build(tmp_path, 500, "hdf5", compression="gzip")
    _, shard, specs = first_shard(directory)
    reader = Hdf5ShardReader(_root(directory), shard, specs)
    rows = np.sort(np.random.default_rng(0).integers(0, 500, 100))
    assert np.array_equal(reader.read("x", rows), arrays["x"][rows])
    assert isinstance(reader.source("x"), h5py.Dataset)


def test_readers_reopen_after_fork(tmp_path) -> None:
    directory, arrays = build(tmp_path, 100, "hdf5", compression="lzf")
    _, shard, specs = first_shard(directory)
    reader = Hdf5ShardReader(_root(directory), shard, specs)
    reader.read("x", np.array([1]))
    parent_handle = reader._opened
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must open its own handle, not reuse the parent's
        ok = reader._resources() is not parent_handle and np.array_equal(reader.read("x", np.array([7])),
                                                                         arrays["x"][[7]])
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"


def test_npy_reader_checks_the_file_against_the_manifest(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy")
    _, shard, specs = first_shard(directory)
    np.save(_root(directory) / shard.files["x"].name, np.zeros((99, 28, 28), np.uint8))
    with pytest.raises(ShardFormatError, match="train-00000.x.npy"):
        NpyShardReader(_root(directory), shard, specs).read("x", np.array([0]))


def test_truncated_shard_is_reported_not_mapped_past_its_end(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "hdf5")
    _, shard, specs = first_shard(directory)
    path = _root(directory) / shard.files["hdf5"].name
    with open(path, "r+b") as stream:
        stream.truncate(path.stat().st_size - 1000)
    with pytest.raises(ShardFormatError, match="train-00000.h5"):
        Hdf5ShardReader(_root(directory), shard, specs).read("x", np.array([99]))


@pytest.mark.skipif(not hasattr(mmap, "MADV_RANDOM"), reason="madvise hints need Linux")
def test_advice_applies_to_mappings_opened_later(tmp_path) -> None:
    directory, arrays = build(tmp_path, 100, "npy")
    manifest, shard, specs = first_shard(directory)
    reader = make_reader(manifest.format, _root(directory), shard, specs)
    reader.advise(mmap.MADV_RANDOM)
    assert np.array_equal(reader.read("y", np.array([3, 4])), arrays["y"][[3, 4]])
