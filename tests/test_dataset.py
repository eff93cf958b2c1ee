import pickle

import numpy as np
import pytest
from shards import build

from streamload.dataset import ShardedDataset
from streamload.errors import ManifestError

FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("shard_size", [None, 1, 333])
def test_gather_equals_in_memory_indexing(tmp_path, fmt, compression, shard_size) -> None:
    directory, arrays = build(tmp_path, 1000, fmt, shard_size, compression=compression)
    dataset = ShardedDataset(directory, "train")
    indices = np.random.default_rng(1).integers(0, 1000, size=300)  # unsorted, with repeats
    got = dataset.gather(indices)
    for key in ("x", "y"):
        assert np.array_equal(got[key], arrays[key][indices])
        assert got[key].flags.c_contiguous and got[key].base is None  # a fresh array, never a view of a map


def test_gather_only_requested_keys_and_empty(tmp_path) -> None:
    directory, arrays = build(tmp_path, 50, "npy", 7)
    dataset = ShardedDataset(directory)
    assert set(dataset.gather(np.array([3, 1]), ("x",))) == {"x"}
    assert dataset.gather(np.array([], dtype=np.int64))["x"].shape == (0, 28, 28)


def test_out_of_range_index_raises(tmp_path) -> None:
    directory, _ = build(tmp_path, 10, "npy")
    with pytest.raises(IndexError):
        ShardedDataset(directory).gather(np.array([10]))


def test_opening_reads_only_the_manifest(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy", 10)
    dataset = ShardedDataset(directory)
    assert all(reader is None for reader in dataset._readers)
    dataset.gather(np.array([55]))
    opened = [i for i, reader in enumerate(dataset._readers) if reader is not None]
    assert opened == [5]


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_pickles_as_paths_not_data(tmp_path, fmt) -> None:
    directory, arrays = build(tmp_path, 20_000, fmt)  # 15.7 MB of images
    dataset = ShardedDataset(directory)
    dataset.gather(np.arange(0, 20_000, 97))  # open every mapping first
    blob = pickle.dumps(dataset)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert np.array_equal(clone.gather(np.array([19_999]))["x"], arrays["x"][[19_999]])


def test_missing_split_and_missing_manifest(tmp_path) -> None:
    directory, _ = build(tmp_path, 5, "npy")
    with pytest.raises(KeyError, match="test"):
        ShardedDataset(directory, "test")
    with pytest.raises(ManifestError, match="manifest.json"):
        ShardedDataset(tmp_path / "nowhere")


def test_span_hints_cover_a_span_across_shards(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "npy", 300)
    dataset = ShardedDataset(directory)
    hints = dataset.span_hints(250, 700, ("x",))
    covered = [(holder.path.name, start, start + length) for holder, start, length in hints]
    assert [name for name, _, _ in covered] == ["train-00000.x.npy", "train-00001.x.npy", "train-00002.x.npy"]
    rows = [(250, 300), (0, 300), (0, 100)]
    for (_, start, end), (first, last), (holder, _, _) in zip(covered, rows, hints):
        assert start <= holder.offset + first * 784 < start + 4096 and end == holder.offset + last * 784
    assert dataset.span_hints(990, 2000, ("y",))[0][2] >= 10 and dataset.span_hints(5, 5) == []
