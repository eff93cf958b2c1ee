"""BatchLoader: batches read from disk equal the same batches gathered from the arrays in memory."""

import gc
import math
import pickle

import numpy as np
import pytest
from shards import build, make_writable, shard_folder, vm_flags_of_mappings

from streamload.errors import InvalidOptionError, LabelRangeError
from streamload.options import LoaderOptions
from streamload.read.loader import BatchLoader, access_advice, batches_per_epoch

FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]
RAW = {"one_hot": False, "normalize": False, "channel_axis": False}


def same(a, b) -> bool:  # noqa: ANN001 - batches: tuples of arrays
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def sample_ids(x: np.ndarray) -> np.ndarray:
    """build() writes each sample's index into its first four bytes (raw uint8 batches)."""
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, :4]).view("<u4").ravel()


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("shuffle", ["exact", "block", "none"])
def test_load_equals_the_in_memory_reference(tmp_path, fmt, compression, shuffle) -> None:
    directory, arrays = build(tmp_path, 500, fmt, 128, compression=compression)
    loader = BatchLoader(directory, "train", batch_size=32, seed=3, shuffle=shuffle, block_size=64, window_blocks=2)
    assert loader.num_batches == 16
    for epoch in (0, 1):
        for batch in range(loader.num_batches):
            got, want = loader.load(epoch, batch), loader.reference(arrays, epoch, batch)
            assert same(got, want) and got[0].shape[1:] == (28, 28, 1) and got[1].shape[1:] == (10,)
    loader.close()


def test_batch_holds_the_samplers_samples(tmp_path) -> None:
    """An oracle beside reference(): the raw pixels carry their sample number."""
    directory, arrays = build(tmp_path, 300, "npy", 100)
    loader = BatchLoader(directory, "train", batch_size=50, seed=1, **RAW)
    for batch in range(loader.num_batches):
        x, y = loader.load(2, batch)
        indices = loader.indices(2, batch)
        assert np.array_equal(sample_ids(x), indices) and np.array_equal(y, arrays["y"][indices].astype(np.int32))


def test_a_resumed_epoch_reads_the_batches_counted_from_its_offset(tmp_path) -> None:
    directory, arrays = build(tmp_path, 300, "hdf5", 100)
    loader = BatchLoader(directory, "train", batch_size=32, seed=4, **RAW)
    order = loader.sampler.epoch_indices(1)
    for batch in range(math.ceil((300 - 70) / 32)):
        x, y = loader.load(1, batch, offset=70)
        assert np.array_equal(np.sort(sample_ids(x)), np.sort(order[70 + 32 * batch:70 + 32 * (batch + 1)]))
        assert np.array_equal(y, arrays["y"][sample_ids(x)].astype(np.int32))
    with pytest.raises(IndexError):
        loader.load(1, math.ceil((300 - 70) / 32), offset=70)


def test_block_shuffle_reads_each_sample_once_per_epoch(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "npy", 256)
    loader = BatchLoader(directory, "train", batch_size=64, shuffle="block", block_size=100, window_blocks=3, **RAW)
    epochs = []
    for epoch in (0, 1):
        ids = np.concatenate([sample_ids(loader.load(epoch, b)[0]) for b in range(loader.num_batches)])
        assert np.array_equal(np.sort(ids), np.arange(1000))
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    loader.close()


def test_transform_is_applied_to_every_batch(tmp_path) -> None:
    directory, arrays = build(tmp_path, 100, "npy")
    loader = BatchLoader(directory, "train", batch_size=30, transform=lambda x, y: (x[:, ::2], y * 3))
    plain = BatchLoader(directory, "train", batch_size=30)
    for batch in range(loader.num_batches):
        x, y = loader.load(0, batch)
        px, py = plain.load(0, batch)
        assert np.array_equal(x, px[:, ::2]) and np.array_equal(y, py * 3)
        assert same((x, y), loader.reference(arrays, 0, batch))


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_loader_pickles_small_and_a_clone_reads_the_same_batches(tmp_path, fmt) -> None:
    directory, _ = build(tmp_path, 20_000, fmt, 5000)
    loader = BatchLoader(directory, "train", batch_size=64, seed=2)
    for batch in range(0, loader.num_batches, 10):  # fill caches, open maps, start hint state
        loader.load(0, batch)
    blob = pickle.dumps(loader)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert clone.options == loader.options
    for epoch, batch in [(0, 0), (0, 312), (1, 5), (3, 100)]:
        assert same(clone.load(epoch, batch), loader.load(epoch, batch))
    loader.close()
    clone.close()


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("shuffle,flag", [("exact", "rr"), ("block", "rr"), ("none", "sr")])
def test_every_mapping_gets_the_access_hint_also_after_pickling(tmp_path, fmt, shuffle, flag) -> None:
    directory, _ = build(tmp_path, 2000, fmt, 300)  # 7 shards
    gc.collect()  # the writer's own maps
    loader = BatchLoader(directory, "train", batch_size=100, shuffle=shuffle, seed=1)
    clone = pickle.loads(pickle.dumps(loader))  # what a spawned worker gets: no open maps, only the hint
    for reader in (loader, clone):
        for batch in range(reader.num_batches):
            reader.load(0, batch)
    mapped = vm_flags_of_mappings(directory.resolve())
    assert len(mapped) == (14 if fmt == "npy" else 7)  # x and y of every shard, or every HDF5 file
    per_file = 2 if fmt == "npy" else 4  # the loader's and the clone's; HDF5 maps x and y from one file
    assert all(len(maps) == per_file and all(flag in flags for flags in maps) for maps in mapped.values()), mapped
    loader.close()
    clone.close()


def test_without_hints_block_mode_keeps_kernel_readahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 600, "npy", 300)
    gc.collect()
    loader = BatchLoader(directory, "train", shuffle="block", prefetch_batches=0)
    assert loader.hints is None and access_advice("block", hinting=False) is None
    loader.load(0, 0)
    mapped = vm_flags_of_mappings(directory.resolve())
    assert mapped and not any({"rr", "sr"} & flags for maps in mapped.values() for flags in maps)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_a_corrupt_label_names_its_shard_file_sample_and_verify(tmp_path, fmt) -> None:
    directory, _ = build(tmp_path, 300, fmt, 100)
    index, row = 117, 17  # row 17 of the second shard
    if fmt == "npy":
        path = shard_folder(directory) / "train-00001.y.npy"
        position = np.load(path, mmap_mode="r").offset + row  # uint8 labels: one byte each
    else:
        import h5py

        path = shard_folder(directory) / "train-00001.h5"
        with h5py.File(path, "r") as handle:
            position = handle["y"].id.get_offset() + row
    with open(make_writable(path), "r+b") as stream:  # one flipped byte, as a bad disk would
        stream.seek(position)
        stream.write(bytes([200]))
    loader = BatchLoader(directory, "train", batch_size=32, seed=5)
    bad_batch = next(b for b in range(loader.num_batches) if index in loader.sampler.batch_indices(0, b))
    with pytest.raises(LabelRangeError) as caught:
        loader.load(0, bad_batch)
    message = str(caught.value)
    assert message.startswith(str(path)) and f"sample {index} of split 'train' (row {row} of its shard)" in message
    assert path.name in message and "has label 200, outside [0, 10)" in message
    assert f"--verify {directory}" in message
    assert isinstance(caught.value, ValueError) and caught.value.__cause__ is None
    for batch in range(loader.num_batches):  # every other batch still reads
        if batch != bad_batch:
            assert len(loader.load(0, batch)[1]) > 0


@pytest.mark.parametrize("bad,name", [({"prefetch_batches": -1}, "prefetch_batches"), ({"batch_size": 0}, "batch_size"),
                                      ({"shuffle": "random"}, "shuffle"), ({"batchsize": 8}, "batchsize"),
                                      ({"seed": 1.0}, "seed")])
def test_bad_options_are_refused_naming_them(tmp_path, bad, name) -> None:
    directory, _ = build(tmp_path, 10, "npy")
    with pytest.raises(InvalidOptionError, match=name):
        BatchLoader(directory, **bad)


def test_options_object_and_keywords_combine(tmp_path) -> None:
    directory, _ = build(tmp_path, 10, "npy")
    loader = BatchLoader(directory, "train", LoaderOptions(batch_size=4, seed=9), shuffle=False)
    assert (loader.options.batch_size, loader.options.seed, loader.options.shuffle) == (4, 9, "none")


@pytest.mark.parametrize("n,batch,drop,pipelines", [(1000, 64, False, 1), (1000, 64, True, 1), (1003, 50, False, 3),
                                                    (1003, 50, True, 3), (10, 64, True, 1)])
def test_batches_per_epoch_counts_the_loaders_batches(tmp_path, n, batch, drop, pipelines) -> None:
    directory, _ = build(tmp_path, n, "npy", name=f"n{n}")
    options = dict(batch_size=batch, drop_remainder=drop, num_pipelines=pipelines, pipeline_index=pipelines - 1)
    share = n // pipelines
    expected = share // batch if drop else math.ceil(share / batch)
    assert batches_per_epoch(directory, "train", **options) == BatchLoader(directory, **options).num_batches == expected


def test_a_for_loop_serves_the_rest_of_the_epoch_and_its_state_names_exactly_the_next_batch(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "npy", 300)  # 20 batches of 50
    loader = BatchLoader(directory, batch_size=50, seed=6, **RAW)
    served = []
    for x, _ in loader:
        served.append(sample_ids(x))
        if len(served) == 12:
            break
    state = loader.state_dict()
    assert (state["epoch"], state["sample"]) == (0, 12 * 50)
    resumed = BatchLoader(directory, batch_size=50, seed=6, **RAW)
    resumed.load_state_dict(state)
    rest = [sample_ids(x) for x, _ in resumed]
    assert len(rest) == 8  # the loop ended with epoch 0: the rest, not a whole epoch
    epoch = [sample_ids(loader.load(0, batch)[0]) for batch in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(served + rest, epoch, strict=True))
    assert (resumed.state_dict()["epoch"], resumed.state_dict()["sample"]) == (1, 0)
    following = [sample_ids(x) for x, _ in resumed]  # the next loop is the next epoch, whole
    assert all(np.array_equal(a, sample_ids(loader.load(1, b)[0])) for b, a in enumerate(following))
    assert len(following) == 20


def test_a_loader_resumes_a_generator_state_and_refuses_another_order(tmp_path) -> None:
    from shards import raw

    directory, _ = build(tmp_path, 1000, "npy", 300)
    gen = raw(directory, batch_size=64, seed=6)
    state = gen.state_dict(batches_done=3)
    loader = BatchLoader(directory, batch_size=100, seed=6, **RAW)  # another batch size: the state is in samples
    loader.load_state_dict(state)
    rest = np.concatenate([sample_ids(x) for x, _ in loader])
    assert np.array_equal(rest, np.concatenate([sample_ids(loader.load(0, b, offset=192)[0]) for b in range(9)]))
    with pytest.raises(InvalidOptionError, match="seed"):
        BatchLoader(directory, batch_size=64, seed=7, **RAW).load_state_dict(state)


def test_a_state_with_no_whole_batch_left_resumes_at_the_next_epoch(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "npy", 300)
    state = BatchLoader(directory, batch_size=64, seed=6, **RAW).state_dict() | {"sample": 930}  # 30 left of 960
    loader = BatchLoader(directory, batch_size=64, seed=6, drop_remainder=True, **RAW)
    loader.load_state_dict(state | {"drop_remainder": True})
    assert [sample_ids(x).tolist() for x, _ in loader] == [sample_ids(loader.load(1, b)[0]).tolist()
                                                          for b in range(15)]
