import pickle

import numpy as np
from shards import build

from streamload.batching import BatchOptions
from streamload.loader import BatchLoader
from streamload.sampler import SamplerOptions


def test_load_equals_reference_batch(tmp_path) -> None:
    directory, arrays = build(tmp_path, 500, "hdf5", 128)
    loader = BatchLoader(directory, "train", SamplerOptions(batch_size=32, seed=3), BatchOptions())
    for epoch in (0, 1):
        for batch in range(loader.num_batches):
            got, want = loader.load(epoch, batch), loader.reference_batch(arrays, epoch, batch)
            assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_block_shuffle_reads_each_sample_once_per_epoch(tmp_path) -> None:
    directory, arrays = build(tmp_path, 1000, "npy", 256)
    loader = BatchLoader(directory, "train", SamplerOptions(batch_size=64, shuffle="block", block_size=100,
                                                            window_blocks=3),
                         BatchOptions(one_hot=False, normalize=False, channel_axis=False))
    for epoch in (0, 1):
        xs = np.concatenate([loader.load(epoch, b)[0] for b in range(loader.num_batches)])
        ids = np.ascontiguousarray(xs.reshape(len(xs), -1)[:, :4]).view("<u4").ravel()
        assert np.array_equal(np.sort(ids), np.arange(1000))


def test_loader_pickles_without_data(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    loader = BatchLoader(directory)
    loader.load(0, 0)
    assert len(pickle.dumps(loader)) < 10_000
