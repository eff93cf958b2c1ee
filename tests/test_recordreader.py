"""Reading ragged arrays: batches equal the records they were built from, in every format, and a batch costs one
``preadv`` per run of touching records (counted by the kernel in /proc/self/io, not by a mock)."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from shards import build_sequences, make_writable, shard_folder

from streamload.errors import ShardFormatError
from streamload.format.dispatch import open_reader
from streamload.format.manifest import read_manifest
from streamload.format.ragged.reader import _IOV_MAX, GAP_BYTES, RecordArray, take_records
from streamload.format.records import Records
from streamload.read.dataset import ShardedDataset

FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "lzf")]


def read_calls() -> tuple[int, int]:
    """(read system calls, bytes read through them) of this process so far, from /proc/self/io."""
    with open("/proc/self/io", "rb", buffering=0) as stream:
        fields = dict(line.split(b": ") for line in stream.read(4096).splitlines())
    return int(fields[b"syscr"]), int(fields[b"rchar"])


def counted(action):  # noqa: ANN001, ANN201
    """(result, read calls, bytes read) of ``action()``, less what reading /proc/self/io costs itself."""
    first, second = read_calls(), read_calls()
    overhead = (second[0] - first[0], second[1] - first[1])
    before = read_calls()
    result = action()
    after = read_calls()
    return result, after[0] - before[0] - overhead[0], after[1] - before[1] - overhead[1]


def first_reader(directory: Path, shard: int = 0):  # noqa: ANN201
    manifest = read_manifest(directory)
    split = manifest.split("train")
    return open_reader(manifest.format, shard_folder(directory), split.shards[shard], split.arrays)


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("row_shape", [(), (3,)])
def test_gather_equals_the_records_built(tmp_path, fmt, compression, row_shape) -> None:
    directory, x, y = build_sequences(tmp_path, 400, fmt, shard_size=90, compression=compression, row_shape=row_shape)
    dataset = ShardedDataset(directory)
    rng = np.random.default_rng(1)
    for indices in (np.sort(rng.integers(0, 400, 120)), rng.permutation(400)[:77], np.arange(400), np.array([], int)):
        got = dataset.gather(indices)
        assert isinstance(got["x"], Records) and got["x"] == x.take(indices)
        assert np.array_equal(got["y"], y[indices])
    assert np.array_equal(dataset[123]["x"], x[123])
    assert np.array_equal(dataset.lengths("x", np.array([5, 399, 0])), x.lengths[[5, 399, 0]])


def test_a_run_of_touching_records_is_one_preadv_and_only_its_bytes(tmp_path) -> None:
    row_shape = (GAP_BYTES // 4 + 1000,)  # one row is more than GAP_BYTES: records apart are never bridged
    directory, x, _ = build_sequences(tmp_path, 40, "npy", 40, row_shape=row_shape, max_length=3)
    records = first_reader(directory).arrays["x"]
    assert isinstance(records, RecordArray)
    rows = np.arange(10, 30)
    got, calls, nbytes = counted(lambda: records.take(rows))
    assert got == x.take(rows)
    assert calls == 1 and nbytes == int(x.lengths[rows].sum()) * records.row_bytes
    apart = np.array([r for r in range(0, 40, 2) if x.lengths[r] and x.lengths[r + 1]])  # neighbours never read
    got, calls, nbytes = counted(lambda: records.take(apart))
    assert got == x.take(apart)
    assert calls == len(apart) and nbytes == int(x.lengths[apart].sum()) * records.row_bytes


def test_close_records_share_one_read(tmp_path) -> None:
    directory, x, _ = build_sequences(tmp_path, 300, "npy", max_length=20)  # 4-byte rows: gaps far below GAP_BYTES
    records = first_reader(directory).arrays["x"]
    rows = np.arange(0, 300, 7)
    got, calls, _ = counted(lambda: records.take(rows))
    assert got == x.take(rows) and calls == 1


def test_records_of_several_shards_are_read_run_by_run_never_across_files(tmp_path) -> None:
    directory, x, _ = build_sequences(tmp_path, 300, "npy", 100, max_length=20)  # 4-byte rows: every gap is small
    arrays = [first_reader(directory, shard).arrays["x"] for shard in range(3)]
    rows = np.arange(0, 300, 3)
    parts = [(array, rows[rows // 100 == shard] % 100) for shard, array in enumerate(arrays)]
    got, calls, _ = counted(lambda: take_records(parts))
    assert got == x.take(rows) and calls == 3  # one run per shard, though the next file's offsets start lower
    repeated = [(array, np.repeat(part, 2)) for array, part in parts]  # repeats: read shard by shard, then joined
    assert take_records(repeated) == x.take(np.repeat(rows, 2))


def test_a_run_of_more_pieces_than_one_call_takes_is_split(tmp_path) -> None:
    directory, x, _ = build_sequences(tmp_path, 3000, "npy", max_length=3)  # small gaps: one run but for the limit
    records = first_reader(directory).arrays["x"]
    rows = np.arange(0, 3000, 2)
    gaps = int((x.lengths[1::2][:-1] > 0).sum())  # a skipped record with rows is a gap: two vectors
    got, calls, _ = counted(lambda: records.take(rows))
    assert got == x.take(rows) and calls >= -(-2 * gaps // _IOV_MAX) > 1


@pytest.mark.parametrize("damage,message", [
    (lambda o: o.__setitem__(5, o[7] + 1), "offsets of sample [4-7]"),  # decreasing after row 5
    (lambda o: o.__setitem__(6, 10**9), "offsets of sample [56]")])
def test_damaged_offsets_are_refused_at_read_naming_the_offsets_file(tmp_path, damage, message) -> None:
    directory, _, _ = build_sequences(tmp_path, 50, "npy")
    path = make_writable(shard_folder(directory) / "train-00000.x.offsets.npy")
    offsets = np.load(path, mmap_mode="r+")
    damage(offsets)
    offsets.flush()
    del offsets
    reader = first_reader(directory)
    with pytest.raises(ShardFormatError, match=f"{path}: {message}"):
        reader.take("x", np.arange(3, 9))


def test_damaged_offsets_of_a_later_shard_are_refused_naming_its_file(tmp_path) -> None:
    directory, _, _ = build_sequences(tmp_path, 60, "npy", 20)
    path = make_writable(shard_folder(directory) / "train-00001.x.offsets.npy")
    offsets = np.load(path, mmap_mode="r+")
    offsets[6] = offsets[8] + 1  # sample 5 ends past where sample 6 starts
    offsets.flush()
    del offsets
    arrays = [first_reader(directory, shard).arrays["x"] for shard in range(3)]
    rows = np.arange(3, 9)
    assert take_records([(arrays[0], rows), (arrays[2], rows)]) is not None  # the shards around it read
    with pytest.raises(ShardFormatError, match=f"{path}: offsets of sample [5-8] of train-00001"):
        take_records([(array, rows) for array in arrays])


def test_offsets_that_do_not_end_at_the_data_are_refused_at_open(tmp_path) -> None:
    directory, _, _ = build_sequences(tmp_path, 20, "hdf5")
    path = make_writable(shard_folder(directory) / "train-00000.h5")
    with h5py.File(path, "r+") as handle:
        handle["x.offsets"][-1] = handle["x.offsets"][-1] - 1
    with pytest.raises(ShardFormatError, match=f"{path}: offsets 'x.offsets' end at row"):
        first_reader(directory)


def test_an_offsets_file_changed_under_a_reader_is_a_named_error(tmp_path) -> None:
    from streamload.errors import ShardChangedError

    directory, _, _ = build_sequences(tmp_path, 30, "npy")
    reader = first_reader(directory)
    reader.take("x", np.arange(5))
    path = make_writable(shard_folder(directory) / "train-00000.x.offsets.npy")
    with open(path, "r+b") as stream:
        stream.truncate(path.stat().st_size - 8)
    with pytest.raises(ShardChangedError, match=f"{path}: the shard file changed"):
        reader.take("x", np.arange(5))
