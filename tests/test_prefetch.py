import ctypes
import gc
import mmap
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from shards import build

from streamload.batching import BatchOptions
from streamload.dataset import ShardedDataset
from streamload.loader import BatchLoader
from streamload.procstats import drop_page_cache, read_memory
from streamload.sampler import SamplerOptions
from streamload.storage import PAGE

RAW = BatchOptions(one_hot=False, normalize=False, channel_axis=False)
EXACT = SamplerOptions(batch_size=32, shuffle="exact", seed=3)
BLOCK = SamplerOptions(batch_size=32, shuffle="block", seed=3, block_size=100, window_blocks=3)
NONE = SamplerOptions(batch_size=32, shuffle="none")
FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip")]
_libc = ctypes.CDLL(None, use_errno=True)


def resident_pages(path: Path, byte_offsets: np.ndarray) -> np.ndarray:
    """Whether the page holding each byte offset of ``path`` is in the page cache and read (mincore).

    A page still being read counts as absent, so checks of hinted pages go through ``wait_resident``.
    """
    with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        pages = (len(mapped) + PAGE - 1) // PAGE
        flags = (ctypes.c_ubyte * pages)()
        view = np.frombuffer(mapped, dtype=np.uint8)
        address = ctypes.c_void_p(view.ctypes.data)
        if _libc.mincore(address, ctypes.c_size_t(len(mapped)), flags) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del view
    return np.frombuffer(bytes(flags), dtype=np.uint8)[np.asarray(byte_offsets) // PAGE] & 1 == 1


def wait_resident(path: Path, byte_offsets: np.ndarray, seconds: float = 5.0) -> np.ndarray:
    """``resident_pages`` once all are resident, or when ``seconds`` have passed (reads take time)."""
    deadline = time.monotonic() + seconds
    while not (resident := resident_pages(path, byte_offsets)).all() and time.monotonic() < deadline:
        time.sleep(0.005)
    return resident


def x_byte_offsets(directory: Path, indices: np.ndarray) -> tuple[list[Path], list[np.ndarray]]:
    """(file, byte offsets of the first byte of each sample's image) per shard, for a one-shard npy dataset."""
    dataset = ShardedDataset(directory)
    assert len(dataset.info.shards) == 1
    mapped = dataset.reader(0).array("x")
    return mapped.path, mapped.offset + np.asarray(indices) * mapped.sample_bytes


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("sampling", [EXACT, BLOCK, NONE], ids=["exact", "block", "none"])
def test_prefetching_never_changes_the_batches(tmp_path, fmt, compression, sampling) -> None:
    directory, arrays = build(tmp_path, 1000, fmt, 300, compression=compression)
    hinted = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=4)
    plain = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=0)
    assert plain.prefetcher is None
    for epoch in (0, 1):
        for batch in range(plain.num_batches):
            got = hinted.load(epoch, batch)
            assert same(got, plain.load(epoch, batch)) and same(got, plain.reference_batch(arrays, epoch, batch))
    hinted.close()


@pytest.mark.parametrize("sampling", [EXACT, BLOCK], ids=["exact", "block"])
def test_random_order_and_several_threads_give_the_same_batches(tmp_path, sampling) -> None:
    directory, _ = build(tmp_path, 2000, "npy", 700)
    plain = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=0)
    requests = [(epoch, batch) for epoch in range(3) for batch in range(plain.num_batches)]
    requests = [requests[i] for i in np.random.default_rng(1).permutation(len(requests))]
    requests += [(3, batch) for batch in range(plain.num_batches)]  # and one epoch in order, split between threads
    hinted = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=6)
    results: dict[tuple[int, int], object] = {}
    pending = iter(requests)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                request = next(pending, None)
            if request is None:
                return
            results[request] = hinted.load(*request)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(requests)
    assert all(same(results[request], plain.load(*request)) for request in requests)
    hinted.close()


def test_block_mode_reads_each_sample_once_per_epoch_deterministically(tmp_path) -> None:
    directory, _ = build(tmp_path, 1500, "hdf5", 400)
    options = SamplerOptions(batch_size=64, shuffle="block", seed=8, block_size=128, window_blocks=3)

    def epoch_ids(loader: BatchLoader, epoch: int) -> np.ndarray:
        xs = np.concatenate([loader.load(epoch, batch)[0] for batch in range(loader.num_batches)])
        return np.ascontiguousarray(xs.reshape(len(xs), -1)[:, :4]).view("<u4").ravel()

    first, second = (BatchLoader(directory, "train", options, RAW) for _ in range(2))
    orders = [epoch_ids(first, epoch) for epoch in range(3)]
    for epoch, ids in enumerate(orders):
        assert np.array_equal(np.sort(ids), np.arange(1500))
        assert np.array_equal(ids, first.sampler.epoch_indices(epoch))
    assert np.array_equal(epoch_ids(second, 1), orders[1])  # same seed and epoch, fresh loader
    assert not np.array_equal(orders[0], orders[1])
    first.close()
    second.close()


def test_batches_ahead_are_in_the_page_cache_before_they_are_read(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")  # one 15.7 MB shard: 3,830 pages of images
    sampling = SamplerOptions(batch_size=16, shuffle="exact", seed=5)
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=4)
    loader.load(0, 0)
    path, _ = x_byte_offsets(directory, np.array([0]))
    for batch in (1, 2, 3, 4):
        _, offsets = x_byte_offsets(directory, loader.sampler.batch_indices(0, batch))
        assert wait_resident(path, np.concatenate([offsets, offsets + 783])).all()
    _, later = x_byte_offsets(directory, loader.sampler.batch_indices(0, 60))
    assert resident_pages(path, later).mean() < 0.5  # not hinted yet: the check above can fail


def test_requests_out_of_order_get_no_lookahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    sampling = SamplerOptions(batch_size=16, shuffle="exact", seed=5)
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=4)
    for batch in (700, 90, 400):  # far apart: Keras shuffling the batch order
        loader.load(0, batch)
    time.sleep(0.2)  # wrongly hinted pages would have been read by now
    path, _ = x_byte_offsets(directory, np.array([0]))
    for batch in (701, 91, 401):
        _, offsets = x_byte_offsets(directory, loader.sampler.batch_indices(0, batch))
        assert resident_pages(path, offsets).mean() < 0.5


def test_block_mode_reads_whole_windows_ahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_480, "npy")  # 40 whole blocks, so window w is epoch positions w*2048...
    sampling = SamplerOptions(batch_size=32, shuffle="block", seed=2, block_size=512, window_blocks=4)
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=4)
    window_batches = 512 * 4 // 32
    for batch in range(window_batches // 2 + 1):  # reaching half of window 0 hints window 1
        loader.load(0, batch)
    path, _ = x_byte_offsets(directory, np.array([0]))
    epoch = loader.sampler.epoch_indices(0)
    for window in (0, 1):
        blocks = np.unique(epoch[window * 2048:(window + 1) * 2048] // 512)
        _, offsets = x_byte_offsets(directory, (blocks[:, None] * 512 + np.arange(512)).ravel())
        assert wait_resident(path, offsets).all(), window
    loader.close()
    far_blocks = np.unique(epoch[6 * 2048:7 * 2048] // 512)
    _, far = x_byte_offsets(directory, (far_blocks[:, None] * 512 + np.arange(512)).ravel())
    assert resident_pages(path, far).mean() < 0.5


def test_block_mode_keeps_reading_ahead_while_storage_is_idle_inside_windows(tmp_path) -> None:
    """Inside a window read ahead, storage is idle for many batches: that must not pause the
    read-ahead of the next window (the warm-cache pause is for exact order only)."""
    directory, _ = build(tmp_path, 20_480, "npy")
    sampling = SamplerOptions(batch_size=32, shuffle="block", seed=3, block_size=512, window_blocks=4)
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=4)
    window_batches = 512 * 4 // 32  # 64 batches: longer than the idle checks (32 batches)
    for batch in range(4 * window_batches + window_batches // 2 + 1):  # to the middle of window 4
        loader.load(0, batch)
    path, _ = x_byte_offsets(directory, np.array([0]))
    blocks = np.unique(loader.sampler.epoch_indices(0)[5 * 2048:6 * 2048] // 512)
    _, offsets = x_byte_offsets(directory, (blocks[:, None] * 512 + np.arange(512)).ravel())
    assert wait_resident(path, offsets).all()
    loader.close()


def test_hinting_thread_starts_lazily_and_stops(tmp_path) -> None:
    directory, _ = build(tmp_path, 3000, "npy")
    sampling = SamplerOptions(batch_size=32, shuffle="block", seed=2, block_size=200, window_blocks=2)

    def hint_threads() -> int:
        return sum(thread.name == "streamload-hints" and thread.is_alive() for thread in threading.enumerate())

    before = hint_threads()
    loader = BatchLoader(directory, "train", sampling, RAW)
    assert hint_threads() == before  # nothing started in __init__, so nothing to lose in a fork
    for batch in range(loader.num_batches):
        loader.load(0, batch)
    assert hint_threads() == before + 1
    loader.close()
    assert hint_threads() == before
    loader.load(1, 0)
    loader.load(1, 1)
    del loader
    gc.collect()
    for _ in range(100):  # the finaliser asked it to stop; give it a moment
        if hint_threads() == before:
            break
        threading.Event().wait(0.02)
    assert hint_threads() == before


def test_prefetcher_pickles_small_and_restarts_per_process(tmp_path) -> None:
    directory, arrays = build(tmp_path, 3000, "npy", 1000)
    loader = BatchLoader(directory, "train", BLOCK, RAW)
    for batch in range(10):
        loader.load(0, batch)
    assert len(pickle.dumps(loader)) < 10_000
    clone = pickle.loads(pickle.dumps(loader))
    assert clone.prefetcher._states == {}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh state of its own, same batches
        ok = all(same(loader.load(0, batch), loader.reference_batch(arrays, 0, batch)) for batch in range(10, 30))
        ok = ok and set(loader.prefetcher._states) >= {os.getpid()}
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    loader.close()


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [SamplerOptions(batch_size=64, shuffle="exact"),
                                      SamplerOptions(batch_size=64, shuffle="block", block_size=1024)],
                         ids=["exact", "block"])
def test_anonymous_memory_stays_bounded_over_thousands_of_batches(tmp_path, sampling) -> None:
    directory, _ = build(tmp_path, 120_000, "npy", 25_000)  # 94 MB of images in 5 shards
    loader = BatchLoader(directory, "train", sampling, RAW, prefetch_batches=16)
    batches = [(epoch, batch) for epoch in range(3) for batch in range(loader.num_batches)]  # 5,625 batches
    for request in batches[:300]:
        loader.load(*request)
    gc.collect()
    before = read_memory()
    for request in batches[300:]:
        loader.load(*request)
    gc.collect()
    after = read_memory()
    state = loader.prefetcher._state()
    assert all(len(table._members) <= table.limit for table in (state.batches, state.groups, state.blocks))
    assert after.rss_anon - before.rss_anon < 4 * 2**20  # 3 epochs of a 94 MB split; pages are file-backed
    loader.close()


def test_prefetch_reads_exactly_the_pages_of_the_rows(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    drop_page_cache(directory)
    dataset = ShardedDataset(directory)
    wanted = np.array([1005, 6000, 6001, 19_999])  # (opening reads the header: the first pages are cached anyway)
    dataset.prefetch(wanted[::-1], ("x",))  # any order
    path, offsets = x_byte_offsets(directory, wanted)
    assert wait_resident(path, np.concatenate([offsets, offsets + 783])).all()
    _, others = x_byte_offsets(directory, np.array([1020, 3000, 6020, 10_000, 19_900]))
    assert not resident_pages(path, others).any()  # no readahead around them


def test_chunked_hdf5_prefetch_reads_the_stored_chunks(tmp_path) -> None:
    import h5py

    directory, arrays = build(tmp_path, 20_000, "hdf5", compression="gzip")
    path = next(directory.glob("gen-*/train-*.h5"))
    with h5py.File(path, "r") as handle:
        chunk_rows = handle["x"].chunks[0]
        stored = {row: handle["x"].id.get_chunk_info_by_coord((row - row % chunk_rows, 0, 0)) for row in (10, 7000)}
    drop_page_cache(directory)
    dataset = ShardedDataset(directory)
    dataset.reader(0).array("x")  # open first: reading HDF5's metadata may read some data pages ahead
    last_byte = stored[7000].byte_offset + stored[7000].size - 1
    chunks = np.array([stored[10].byte_offset, stored[7000].byte_offset, last_byte])
    before = resident_pages(path, chunks)
    dataset.prefetch(np.array([7000, 10]), ("x",))
    assert wait_resident(path, chunks).all() and not before.all()
    assert np.array_equal(dataset.gather(np.array([7000, 10]))["x"], arrays["x"][[7000, 10]])
