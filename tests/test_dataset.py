"""ShardedDataset: gathers equal in-memory indexing, the per-process reader cache, pickling, Grain."""

import mmap
import os
import pickle
import threading

import numpy as np
import pytest
from shards import build, make_arrays, vm_flags_of_mappings

from streamload.errors import ManifestError
from streamload.read.dataset import ShardedDataset

FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]
ROW_BYTES = 28 * 28


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("shard_size", [None, 1, 333])
def test_gather_equals_in_memory_indexing(tmp_path, fmt, compression, shard_size) -> None:
    directory, arrays = build(tmp_path, 600, fmt, shard_size, compression=compression)
    dataset = ShardedDataset(directory, "train")
    unsorted = np.random.default_rng(1).integers(0, 600, size=300)  # any order, with repeats
    for indices in (unsorted, np.sort(unsorted), np.array([599, 0, 599, 0]), np.arange(600)):
        got = dataset.gather(indices)
        assert set(got) == {"x", "y"}
        for key in ("x", "y"):
            assert np.array_equal(got[key], arrays[key][indices]) and got[key].dtype == arrays[key].dtype
            assert got[key].flags.c_contiguous and got[key].base is None  # a fresh array, never a view of a map


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("shard_size", [None, 7])
def test_empty_gather_gives_empty_arrays(tmp_path, fmt, compression, shard_size) -> None:
    directory, _ = build(tmp_path, 50, fmt, shard_size, compression=compression)
    got = ShardedDataset(directory).gather(np.array([], dtype=np.int64))
    assert got["x"].shape == (0, 28, 28) and got["y"].shape == (0,) and got["x"].dtype == np.uint8


@pytest.mark.parametrize("shard_size", [None, 7])
def test_negative_and_too_large_indices_raise_instead_of_wrapping(tmp_path, shard_size) -> None:
    directory, _ = build(tmp_path, 50, "npy", shard_size)
    dataset = ShardedDataset(directory)
    for bad in ([-1], [-1, 3], [5, -1, 2], [50], [3, 50], [49, 0, 50], [-50]):
        with pytest.raises(IndexError, match=r"sample index out of range \[0, 50\)"):
            dataset.gather(np.array(bad))
        with pytest.raises(IndexError):
            dataset.gather(np.array(bad), ("y",))


def test_gather_only_requested_keys(tmp_path) -> None:
    directory, arrays = build(tmp_path, 50, "npy", 7)
    dataset = ShardedDataset(directory)
    got = dataset.gather(np.array([3, 1]), ("x",))
    assert set(got) == {"x"} and np.array_equal(got["x"], arrays["x"][[3, 1]])
    assert dataset.keys == ("x", "y") and len(dataset) == 50


def test_opening_reads_only_the_manifest(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy", 10)
    dataset = ShardedDataset(directory)
    dataset.gather(np.array([55]))
    opened = [i for i, reader in enumerate(dataset._readers) if reader is not None]
    assert opened == [5]
    assert sorted(vm_flags_of_mappings(directory.resolve())) == ["train-00005.x.npy", "train-00005.y.npy"]


def test_one_reader_per_shard_per_process(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy", 10)
    dataset = ShardedDataset(directory)
    first = dataset.reader(3)
    dataset.gather(np.arange(100))
    assert dataset.reader(3) is first


@pytest.mark.parametrize("fmt,compression", [("npy", None), ("hdf5", "lzf")])
def test_readers_reopen_after_fork(tmp_path, fmt, compression) -> None:
    directory, arrays = build(tmp_path, 100, fmt, 40, compression=compression)
    dataset = ShardedDataset(directory)
    dataset.gather(np.array([1, 99]))
    parent_reader = dataset.reader(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must open its own readers, not reuse the parent's
        try:
            ok = dataset.reader(0) is not parent_reader and np.array_equal(dataset.gather(np.array([7, 98, 50]))["x"],
                                                                           arrays["x"][[7, 98, 50]])
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    assert dataset.reader(0) is parent_reader  # the parent keeps its own
    assert np.array_equal(dataset.gather(np.array([7]))["x"], arrays["x"][[7]])


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_pickles_as_paths_not_data(tmp_path, fmt) -> None:
    directory, arrays = build(tmp_path, 20_000, fmt)  # 15.7 MB of images
    dataset = ShardedDataset(directory)
    dataset.gather(np.arange(0, 20_000, 97))  # open every mapping first
    blob = pickle.dumps(dataset)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert np.array_equal(clone.gather(np.array([19_999, 3]))["x"], arrays["x"][[19_999, 3]])


@pytest.mark.skipif(not hasattr(mmap, "MADV_RANDOM"), reason="madvise hints need Linux")
def test_advice_reaches_readers_opened_before_after_and_in_a_pickled_copy(tmp_path) -> None:
    directory, _ = build(tmp_path, 100, "npy", 50)
    dataset = ShardedDataset(directory)
    dataset.gather(np.array([0]))  # shard 0 open before the advice
    dataset.advise(mmap.MADV_RANDOM)
    dataset.gather(np.array([99]))  # shard 1 opened after it
    clone = pickle.loads(pickle.dumps(dataset))
    clone.gather(np.array([0, 99]))
    mapped = vm_flags_of_mappings(directory.resolve())
    assert len(mapped) == 4 and all(len(maps) == 2 for maps in mapped.values())  # the dataset's and the clone's
    assert all("rr" in flags for maps in mapped.values() for flags in maps), mapped


def test_missing_split_and_missing_manifest(tmp_path) -> None:
    directory, _ = build(tmp_path, 5, "npy")
    with pytest.raises(KeyError, match="test"):
        ShardedDataset(directory, "test")
    with pytest.raises(ManifestError, match="manifest.json"):
        ShardedDataset(tmp_path / "nowhere")


def test_ranges_say_where_each_shards_rows_lie(tmp_path) -> None:
    directory, arrays = build(tmp_path, 1000, "npy", 300)
    dataset = ShardedDataset(directory)
    indices = np.array([5, 5, 299, 300, 650, 999])
    found = dataset.ranges(indices, ("x",))
    assert [os.path.basename(os.readlink(f"/proc/self/fd/{r.fd}")) for r in found] == [
        "train-00000.x.npy", "train-00001.x.npy", "train-00002.x.npy", "train-00003.x.npy"]
    starts = np.concatenate([r.starts for r in found])
    ends = np.concatenate([r.ends for r in found])
    fds = np.concatenate([[r.fd] * len(r.starts) for r in found])
    assert len(starts) == len(indices) and np.array_equal(ends - starts, np.full(len(indices), ROW_BYTES))
    for index, fd, start in zip(indices, fds, starts):
        assert os.pread(int(fd), ROW_BYTES, int(start)) == arrays["x"][index].tobytes()
    assert len(dataset.ranges(indices)) == 8  # x and y of each of the 4 shards


def test_span_ranges_cover_a_span_across_shards(tmp_path) -> None:
    directory, arrays = build(tmp_path, 1000, "npy", 300)
    dataset = ShardedDataset(directory)
    found = dataset.span_ranges(250, 700, ("x",))
    assert [os.path.basename(os.readlink(f"/proc/self/fd/{r.fd}")) for r in found] == [
        "train-00000.x.npy", "train-00001.x.npy", "train-00002.x.npy"]
    covered = b"".join(os.pread(r.fd, int(r.ends[0] - r.starts[0]), int(r.starts[0])) for r in found)
    assert covered == arrays["x"][250:700].tobytes()  # exactly those samples' bytes, in order
    (tail,) = dataset.span_ranges(990, 2000, ("y",))  # clipped to the split's end: the last 10 labels
    assert os.pread(tail.fd, int(tail.ends[0] - tail.starts[0]), int(tail.starts[0])) == arrays["y"][990:].tobytes()
    assert dataset.span_ranges(5, 5) == [] and dataset.span_ranges(1000, 1100) == []


def test_threads_opening_readers_at_once_get_the_right_samples(tmp_path) -> None:
    directory, arrays = build(tmp_path, 2000, "hdf5", 100)
    dataset = ShardedDataset(directory)
    wanted = [np.random.default_rng(seed).integers(0, 2000, 64) for seed in range(32)]
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for job in range(worker, len(wanted), 8):
            results[job] = dataset.gather(wanted[job])["x"]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(results[job], arrays["x"][indices]) for job, indices in enumerate(wanted))


@pytest.mark.parametrize("fmt,compression", [("npy", None), ("hdf5", "gzip")])
def test_getitem_and_getitems_are_records_of_the_arrays(tmp_path, fmt, compression) -> None:
    directory, arrays = build(tmp_path, 120, fmt, 50, compression=compression)
    dataset = ShardedDataset(directory)
    for index in (0, 49, 50, 119):
        record = dataset[index]
        assert set(record) == {"x", "y"}
        assert np.array_equal(record["x"], arrays["x"][index]) and record["y"] == arrays["y"][index]
    indices = [119, 3, 3, 60, 0]
    records = dataset.__getitems__(indices)
    assert len(records) == len(indices)
    for index, record in zip(indices, records):
        single = dataset[index]
        assert all(np.array_equal(record[key], single[key]) for key in ("x", "y"))
    assert dataset.__getitems__([]) == []
    with pytest.raises(IndexError):
        dataset[120]
    with pytest.raises(IndexError):
        dataset[-1]  # a record number, not a Python position from the end


def test_grain_reads_the_dataset_as_a_source(tmp_path) -> None:
    grain = pytest.importorskip("grain", reason="grain is not installed (pip install grain)")
    directory, arrays = build(tmp_path, 300, "npy", 128)
    dataset = ShardedDataset(directory)
    source = grain.MapDataset.source(dataset)
    assert len(source) == 300
    for index in (0, 127, 128, 299):
        assert np.array_equal(source[index]["x"], arrays["x"][index]) and source[index]["y"] == arrays["y"][index]
    ids = []
    for record in source.shuffle(seed=3).to_iter_dataset():  # a shuffled pass, through Grain's iterator
        sample = int(np.ascontiguousarray(record["x"].ravel()[:4]).view("<u4")[0])  # build() numbers the samples
        assert np.array_equal(record["x"], arrays["x"][sample]) and record["y"] == arrays["y"][sample]
        ids.append(sample)
    assert sorted(ids) == list(range(300)) and ids != sorted(ids)
    batches = list(source.batch(64))
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), arrays["x"])


def test_the_open_file_limit_is_raised_when_every_map_would_not_fit(tmp_path) -> None:
    import resource
    import subprocess
    import sys

    from conftest import subprocess_env

    directory, arrays = build(tmp_path, 400, "npy", 1)  # 400 shards x 2 arrays x 2 descriptors: 1,600
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = "\n".join([
        "import resource, numpy as np",
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (1024, {hard}))",
        f"from streamload import ShardedDataset; d = ShardedDataset({str(directory)!r})",
        "x = d.gather(np.arange(400))['x']",
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], int(x[:, 0, 0].astype(int).sum()))"])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-2000:]
    limit, checksum = map(int, result.stdout.split())
    assert limit >= 1600 and checksum == int(arrays["x"][:, 0, 0].astype(int).sum())


# --- generations: a rebuild never changes what a running reader serves ------------------------------------


def _read_all_in_spawned_process(dataset: ShardedDataset, out) -> None:  # noqa: ANN001 - a multiprocessing queue
    out.put(dataset.gather(np.arange(len(dataset)))["x"][:, 0, 0].tolist())


@pytest.mark.parametrize("new_layout", [dict(fmt="npy", shard_size=100), dict(fmt="hdf5", shard_size=70)])
def test_a_reader_mid_epoch_keeps_its_generation_across_a_rebuild(tmp_path, new_layout) -> None:
    import multiprocessing

    from streamload import ArraySource, BatchLoader, BuildOptions, build_dataset
    from streamload.places.generations import collect_garbage, list_generations

    directory, old = build(tmp_path, 400, "npy", 100, name="ds")
    loader = BatchLoader(directory, batch_size=50, shuffle=False, normalize=False, channel_axis=False, one_hot=False)
    served = [loader.load(0, b)[0] for b in range(3)]  # mid-epoch: 3 of 8 batches read, one shard opened
    new = make_arrays(400, seed=9)
    build_dataset({"train": ArraySource(**new)}, directory,
                  BuildOptions(format=new_layout["fmt"], shard_size=new_layout["shard_size"], overwrite=True,
                               progress=False))
    served += [loader.load(0, b)[0] for b in range(3, 8)]  # shards 1-3 are opened only now
    assert np.array_equal(np.concatenate(served), old["x"])  # the whole epoch from the old generation
    pickled = pickle.loads(pickle.dumps(loader.dataset))  # what a spawned worker gets
    assert np.array_equal(pickled.gather(np.arange(400))["x"], old["x"])
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_read_all_in_spawned_process, args=(loader.dataset, results))
    worker.start()
    assert results.get(timeout=120) == old["x"][:, 0, 0].tolist()
    worker.join(timeout=60)
    fresh = ShardedDataset(directory)
    assert np.array_equal(fresh.gather(np.arange(400))["x"], new["x"])  # a new reader sees the new generation
    assert len(list_generations(directory)) == 2  # the old one is held
    for dataset in (loader.dataset, pickled):
        dataset.close()
    collect_garbage(directory)
    assert list_generations(directory) == [fresh.generation]  # disk: only what readers still hold


def test_a_shard_that_is_a_symbolic_link_is_refused_at_open(tmp_path) -> None:
    from shards import rehash_manifests, shard_folder

    from streamload.errors import ShardFormatError

    directory, _ = build(tmp_path, 300, "npy", 100, name="ds")
    path = shard_folder(directory) / "train-00001.x.npy"
    outside = tmp_path / "outside.npy"
    np.save(outside, np.full((100, 28, 28), 7, np.uint8))  # a file outside the dataset, sized and hashed to pass
    path.unlink()
    path.symlink_to(outside)
    rehash_manifests(directory)
    with pytest.raises(ShardFormatError, match=f"^{path}: is a symbolic link; shard files must be regular files"):
        ShardedDataset(directory).gather(np.arange(300))


CUT_DURING_FIT = """
import os, sys
import keras
import numpy as np
from streamload import StreamingGenerator
from streamload.errors import ShardChangedError

directory, victim, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])

class CutAShard(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:  # every shard has been read by now (shuffled batches): all are mapped
            os.chmod(victim, 0o644)  # what a user would do first: shards are written read-only
            os.truncate(victim, 4096)

generator = StreamingGenerator(directory, batch_size=64, seed=1, workers=workers)
model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
try:
    model.fit(generator, epochs=3, verbose=0, callbacks=[CutAShard()])
except ShardChangedError as exc:
    print(f"ShardChangedError: {exc}")
    sys.exit(3)
print("trained on")
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["main-thread", "threads"])
def test_a_shard_cut_while_fit_runs_ends_fit_with_a_named_error(tmp_path, workers) -> None:
    """A child runs model.fit: on main the reader touched the cut file's unmapped pages and died by SIGBUS
    (exit 135 from a shell, -7 here) with no word of which file; now fit stops with the error naming it."""
    import subprocess
    import sys

    from conftest import subprocess_env
    from shards import shard_folder

    from streamload import ArraySource, BuildOptions, build_dataset

    directory = tmp_path / "ds"
    rng = np.random.default_rng(0)
    build_dataset({"train": ArraySource(x=rng.random((1000, 256), np.float32), y=rng.random(1000, np.float32))},
                  directory, BuildOptions(shard_size=100, progress=False))  # 100 KiB of x per shard: 25 pages
    victim = shard_folder(directory) / "train-00004.x.npy"
    result = subprocess.run([sys.executable, "-c", CUT_DURING_FIT, str(directory), str(victim), str(workers)],
                            capture_output=True, text=True, timeout=300, env=subprocess_env(KERAS_BACKEND="jax"))
    assert result.returncode == 3, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert result.stdout.startswith(f"ShardChangedError: {victim}: the shard file changed while the dataset was "
                                    "reading it (cut from 102528 to 4096 bytes)")


@pytest.mark.parametrize("change", ["rewrite", "touch", "cut"])
def test_a_shard_changed_after_opening_fails_the_next_gather_naming_it(tmp_path, change) -> None:
    """The dataset watches its open shards (inotify) instead of an fstat per file per batch: a write, a touch
    or a cut past the rows read must all still stop the next gather, before any page is touched."""
    from shards import make_writable, shard_folder

    from streamload.errors import ShardChangedError

    directory, arrays = build(tmp_path, 400, "npy", 100, name="ds")
    dataset = ShardedDataset(directory)
    assert np.array_equal(dataset.gather(np.arange(0, 400, 7))["x"], arrays["x"][::7])  # every shard open
    assert not any(dataset.reader(shard).check_each_take for shard in range(4))  # watched: no fstat per read
    path = make_writable(shard_folder(directory) / "train-00002.x.npy")
    assert np.array_equal(dataset.gather(np.arange(0, 400, 7))["x"], arrays["x"][::7])  # a chmod alone: not data
    if change == "rewrite":
        with open(path, "r+b") as stream:
            stream.seek(-4, os.SEEK_END)
            stream.write(b"\0\0\0\0")
    elif change == "touch":
        os.utime(path, ns=(0, 0))
    else:
        os.truncate(path, path.stat().st_size - 1)  # the last page stays mapped: no SIGBUS, so safe in-process
    with pytest.raises(ShardChangedError, match=f"^{path}: the shard file changed while the dataset was reading"):
        dataset.gather(np.array([250]))


def test_an_offsets_file_touched_under_a_batch_over_several_shards_fails_the_next_gather(tmp_path) -> None:
    """Records of several shards are read in one go (take_records) without an fstat per offsets file while the
    watch sees no change; once it sees one, the next gather checks them all and names the file."""
    from shards import build_sequences, shard_folder

    from streamload.errors import ShardChangedError

    directory, x, _ = build_sequences(tmp_path, 300, "npy", 100)
    dataset = ShardedDataset(directory)
    rows = np.arange(0, 300, 7)
    assert dataset.gather(rows)["x"] == x.take(rows)
    assert not any(dataset.reader(shard).check_each_take for shard in range(3))
    path = shard_folder(directory) / "train-00001.x.offsets.npy"
    os.utime(path, ns=(0, 0))
    with pytest.raises(ShardChangedError, match=f"^{path}: the shard file changed while the dataset was reading"):
        dataset.gather(rows)


# --- a dataset in a bucket: its readers and the working set ---------------------------------------------------


def _bucket_loader(aws_env, tmp_path, **options):  # noqa: ANN001, ANN202
    """A BatchLoader over 600 samples (six shards of 100) published to the test server, and the arrays."""
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    from s3server import fresh_url

    from streamload import BatchLoader
    from streamload.places.bucket import BucketPlace

    directory, arrays = build(tmp_path, 600, "npy", 100, name="local")
    url = fresh_url(aws_env)
    BucketPlace(url).publish(directory)
    return BatchLoader(url, "train", cache_dir=str(tmp_path / "cache"), **options), arrays


def test_a_bucket_datasets_readers_stay_open_while_the_working_set_holds_every_shard(aws_env, tmp_path) -> None:
    """Exact order: each batch of 50 touches most of the six shards, and the working set (50 + 3 shards) holds all
    six. Readers used to be capped at the working set less the shards fetched ahead (three), so each batch
    reopened some (a lease, a header parse and a map each time); now each shard is opened once."""
    loader, arrays = _bucket_loader(aws_env, tmp_path, batch_size=50, shuffle="exact")
    assert loader.dataset.fetching_ahead()
    opened: dict[int, set[int]] = {}
    held = []  # the readers themselves, so that no id is reused
    for batch in range(loader.num_batches):
        for got, want in zip(loader.load(0, batch), loader.reference(arrays, 0, batch)):
            assert np.array_equal(got, want)
        for shard, reader in enumerate(loader.dataset._readers):
            if reader is not None:
                held.append(reader)
                opened.setdefault(shard, set()).add(id(reader))
    assert sorted(opened) == list(range(6)) and all(len(ids) == 1 for ids in opened.values()), opened
    assert not loader.dataset.fetching_ahead()  # every shard open: the loader no longer names the shards coming


def test_a_bucket_datasets_open_readers_and_prefetches_never_pass_the_working_set(aws_env, tmp_path) -> None:
    """Exact order with batches of 2: a working set of 2 + 3 shards, fewer than the six; open readers and shards
    fetched ahead together stay within it, batch after batch, and the batches are right."""
    loader, arrays = _bucket_loader(aws_env, tmp_path, batch_size=2, shuffle="exact")
    dataset, keep = loader.dataset, loader.dataset.remote.keep
    assert keep == 5
    for batch in range(loader.num_batches):
        for got, want in zip(loader.load(1, batch), loader.reference(arrays, 1, batch)):
            assert np.array_equal(got, want)
        assert len(dataset._open) + dataset.remote.pending() <= keep
    # readers closed and opened again: the cache touched (IN_ATTRIB) watched copies as their leases came and went,
    # which is no change, so the readers still skip their fstat before each read
    assert not dataset._watch.changed and not any(r.check_each_take for r in dataset._readers if r is not None)


def test_a_cached_copy_cut_while_a_bucket_dataset_reads_it_fails_the_next_gather(aws_env, tmp_path) -> None:
    """A bucket's shards are read from the cache's copies, watched for writes as a local dataset's files are."""
    from streamload.errors import ShardChangedError

    loader, arrays = _bucket_loader(aws_env, tmp_path, batch_size=50, shuffle="exact")
    dataset = loader.dataset
    assert np.array_equal(dataset.gather(np.arange(0, 600, 7))["x"], arrays["x"][::7])  # every shard open
    assert not any(reader.check_each_take for reader in dataset._readers)  # watched: no fstat per read
    path = dataset.remote.folder / dataset.reader(3).files()[0][0].name
    os.truncate(path, path.stat().st_size - 1)  # the last page stays mapped: no SIGBUS, so safe in-process
    with pytest.raises(ShardChangedError, match=f"^{path}: the shard file changed while the dataset was reading"):
        dataset.gather(np.array([350]))


def test_where_the_working_set_holds_every_shard_fetching_ahead_closes_no_reader(aws_env, tmp_path) -> None:
    """Open readers and shards fetched ahead are distinct shards, so they cannot pass a working set of every shard:
    fetching one more ahead closes nothing (block order closed readers of shards not named as coming next, and
    opened them again windows later, though the cache held them all)."""
    loader, _arrays = _bucket_loader(aws_env, tmp_path, batch_size=50, shuffle="exact")
    dataset = loader.dataset
    assert dataset.remote.keep == 6
    dataset.gather(np.arange(500))  # shards 0 to 4 open
    dataset.prefetch(np.array([550, 560]))  # only shard 5 named as coming
    assert sorted(dataset._open) == [0, 1, 2, 3, 4]
    dataset.gather(np.array([550]))
    assert sorted(dataset._open) == list(range(6))


def test_a_bucket_dataset_whose_cache_holds_every_shard_fetches_nothing_ahead(aws_env, tmp_path) -> None:
    """Block order from a warm cache named the shards coming next every batch, and leased them ahead, though every
    one was already in the folder: a cost per batch that a local folder does not pay. A new loader over the same
    cache now sees them all there (one scan of the folder) and never fetches ahead; the batches stay the same."""
    options = {"batch_size": 50, "shuffle": "block", "block_size": 40, "window_blocks": 2, "seed": 5}
    cold, arrays = _bucket_loader(aws_env, tmp_path, **options)
    assert cold.dataset.fetching_ahead()
    for batch in range(cold.num_batches):
        cold.load(0, batch)
    assert not cold.dataset.fetching_ahead()  # every shard now fetched
    from streamload import BatchLoader

    warm = BatchLoader(cold.dataset.directory, "train", cache_dir=str(tmp_path / "cache"), **options)
    assert not warm.dataset.fetching_ahead()
    for batch in range(warm.num_batches):
        for got, want in zip(warm.load(1, batch), warm.reference(arrays, 1, batch)):
            assert np.array_equal(got, want)
        assert warm.dataset.remote.pending() == 0  # no shard leased ahead of its read
