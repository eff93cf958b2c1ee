import gc
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from shards import build

from streamload.batching import BatchOptions
from streamload.errors import InvalidOptionError
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


def vm_flags_of_mappings(directory) -> dict[str, list[set[str]]]:
    """File name -> the VmFlags of each of this process' mappings of it, for files under ``directory``."""
    flags: dict[str, list[set[str]]] = {}
    current = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):  # a mapping's first line; anonymous ones name no file
                current = fields[5] if len(fields) > 5 and fields[5].startswith(str(directory)) else None
            elif fields[0] == "VmFlags:" and current is not None:
                flags.setdefault(Path(current).name, []).append(set(fields[1:]))
    return flags


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("shuffle,flag", [("exact", "rr"), ("block", "rr"), ("none", "sr")])
def test_every_mapping_gets_the_access_hint_also_after_pickling(tmp_path, fmt, shuffle, flag) -> None:
    directory, _ = build(tmp_path, 2000, fmt, 300)  # 7 shards
    gc.collect()  # the writer's own maps
    loader = BatchLoader(directory, "train", SamplerOptions(batch_size=100, shuffle=shuffle, seed=1), BatchOptions())
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


def test_without_prefetching_block_mode_keeps_kernel_readahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 600, "npy", 300)
    gc.collect()
    loader = BatchLoader(directory, "train", SamplerOptions(shuffle="block"), BatchOptions(), prefetch_batches=0)
    loader.load(0, 0)
    mapped = vm_flags_of_mappings(directory.resolve())
    assert mapped and not any({"rr", "sr"} & flags for maps in mapped.values() for flags in maps)


def test_negative_prefetch_depth_is_refused(tmp_path) -> None:
    directory, _ = build(tmp_path, 10, "npy")
    with pytest.raises(InvalidOptionError, match="prefetch_batches"):
        BatchLoader(directory, prefetch_batches=-1)
