import math
import os

import numpy as np
import pytest
from readcount import require_counted_reads
from shards import build

from benchmarks.cold import PlainGatherLoader, cold_pass, evict, sequential_pass
from streamload.options import LoaderOptions
from streamload.read.loader import BatchLoader

RAW = {"one_hot": False, "normalize": False, "channel_axis": False}


def ids(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, :4]).view("<u4").ravel()


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_cold_pass_counts_samples_and_storage_reads(tmp_path, fmt) -> None:
    require_counted_reads(tmp_path)
    directory, _ = build(tmp_path, 6000, fmt, 2500)
    result = cold_pass(lambda: BatchLoader(directory, "train", LoaderOptions(batch_size=50, seed=1, **RAW)),
                       directory, 40)
    assert result.samples == 2000 and result.delivered_bytes == 2000 * 785
    # cold: the 2000 distinct samples' stored bytes (disjoint, image and label) all came from storage
    assert result.read_bytes >= result.delivered_bytes and result.amplification >= 1
    again = cold_pass(lambda: BatchLoader(directory, "train", LoaderOptions(batch_size=50, seed=1, **RAW)),
                      directory, [(1, 0), (1, 1)])
    assert again.samples == 100 and again.read_bytes >= 100 * 785  # evicted again, though the first pass read it


def test_evict_refuses_while_this_process_maps_the_files(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "npy")
    loader = BatchLoader(directory)
    loader.load(0, 0)
    with pytest.raises(RuntimeError, match="still maps"):
        evict(directory)
    del loader
    evict(directory)


def test_sequential_pass_reads_every_byte_once(tmp_path) -> None:
    page = require_counted_reads(tmp_path)
    directory, _ = build(tmp_path, 6000, "npy", 2500)
    files = sorted(directory.glob("gen-*/train-*.x.npy"))
    sizes = [os.path.getsize(path) for path in files]
    result = sequential_pass(files, 784)
    assert result.delivered_bytes == sum(sizes) and result.samples == sum(sizes) // 784
    assert result.read_bytes >= sum(math.ceil(size / page) * page for size in sizes)  # every page, cold
    assert result.amplification <= 1.05  # and little beyond them


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_plain_gather_reads_the_same_samples_as_streamload(tmp_path, fmt) -> None:
    directory, arrays = build(tmp_path, 3000, fmt, 1100)
    sampling = LoaderOptions(batch_size=64, seed=4, **RAW)
    plain = PlainGatherLoader(directory, sampling=sampling)
    loader = BatchLoader(directory, "train", sampling)
    for batch in (0, 7, loader.num_batches - 1):
        got = plain.load(0, batch)
        want = loader.load(0, batch)
        assert np.array_equal(np.sort(ids(got["x"])), np.sort(ids(want[0])))
        assert np.array_equal(got["y"], arrays["y"][np.sort(ids(want[0]))])
    plain.close()
