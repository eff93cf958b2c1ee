"""Kernel read hints: batches never change, the right pages are read ahead, hints pause while warm.

Residency is checked with mincore(2) on the shard files and storage reads with the process'
``read_bytes``, both the kernel's own accounts; hint calls are counted by wrapping
``os.posix_fadvise`` (the real system call still runs).
"""

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
from shards import build, shard_folder

from streamload.base.procstats import drop_page_cache, read_io, read_memory
from streamload.format.reader import PAGE, ByteRanges
from streamload.read import readahead
from streamload.read.dataset import ShardedDataset
from streamload.read.loader import BatchLoader
from streamload.read.readahead import issue

RAW = {"one_hot": False, "normalize": False, "channel_axis": False}
EXACT = {"batch_size": 32, "shuffle": "exact", "seed": 3}
BLOCK = {"batch_size": 32, "shuffle": "block", "seed": 3, "block_size": 100, "window_blocks": 3}
NONE = {"batch_size": 32, "shuffle": "none"}
FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip")]
ROW_BYTES = 28 * 28
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


def x_file(directory: Path) -> tuple[Path, int]:
    """The images file of a one-shard npy dataset and where its data starts (numpy's own reading)."""
    (path,) = shard_folder(directory).glob("train-*.x.npy")
    mapped = np.load(path, mmap_mode="r")
    offset = mapped.offset
    del mapped
    return path, offset


def x_offsets(directory: Path, indices: np.ndarray) -> np.ndarray:
    """Byte offsets of the first and the last byte of each sample's image."""
    _, offset = x_file(directory)
    starts = offset + np.asarray(indices, dtype=np.int64) * ROW_BYTES
    return np.concatenate([starts, starts + ROW_BYTES - 1])


def block_offsets(directory: Path, blocks: np.ndarray, block_size: int) -> np.ndarray:
    return x_offsets(directory, (blocks[:, None] * block_size + np.arange(block_size)).ravel())


def same(a, b) -> bool:  # noqa: ANN001 - batches
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def epoch_ids(loader: BatchLoader, epoch: int) -> np.ndarray:
    xs = np.concatenate([loader.load(epoch, batch)[0] for batch in range(loader.num_batches)])
    return np.ascontiguousarray(xs.reshape(len(xs), -1)[:, :4]).view("<u4").ravel()


def served_order(loader: BatchLoader, epoch: int) -> np.ndarray:
    return np.concatenate([loader.sampler.batch_indices(epoch, b) for b in range(loader.num_batches)])


@pytest.fixture()
def hint_calls(monkeypatch) -> list[tuple[int, int, int]]:
    """Every POSIX_FADV_WILLNEED call made from now on, as (fd, offset, length); the call still happens.

    Row hints go through posix_fadvise here, not process_madvise (which names addresses, not files):
    the same pages, in the fallback that kernels without process_madvise use (tests/test_readahead.py).
    """
    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise
    monkeypatch.setattr(readahead._SELF, "usable", False)

    def counting(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_WILLNEED:
            calls.append((fd, offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", counting)
    return calls


@pytest.fixture()
def counted_storage(tmp_path) -> None:
    """Skip where reading a cold file does not move this process' read_bytes (tmpfs, some overlays)."""
    probe = tmp_path / "read_bytes_probe"
    probe.write_bytes(os.urandom(1 << 20))
    drop_page_cache(probe)
    before = read_io().read_bytes
    probe.read_bytes()
    if read_io().read_bytes - before < (1 << 19):
        pytest.skip(f"{tmp_path}: reading a cold 1 MiB file did not count in read_bytes; its filesystem hides them")
    probe.unlink()


@pytest.mark.parametrize("fmt,compression", FORMATS)
@pytest.mark.parametrize("sampling", [EXACT, BLOCK, NONE], ids=["exact", "block", "none"])
def test_hints_never_change_the_batches(tmp_path, fmt, compression, sampling) -> None:
    directory, arrays = build(tmp_path, 1000, fmt, 300, compression=compression)
    hinted = BatchLoader(directory, "train", prefetch_batches=4, **sampling, **RAW)
    plain = BatchLoader(directory, "train", prefetch_batches=0, **sampling, **RAW)
    assert plain.hints is None and hinted.hints is not None
    for epoch in (0, 1):
        for batch in range(plain.num_batches):
            got = hinted.load(epoch, batch)
            assert same(got, plain.load(epoch, batch)) and same(got, plain.reference(arrays, epoch, batch))
    hinted.close()


@pytest.mark.parametrize("sampling", [EXACT, BLOCK], ids=["exact", "block"])
def test_random_order_and_several_threads_give_the_same_batches(tmp_path, sampling) -> None:
    directory, _ = build(tmp_path, 2000, "npy", 700)
    plain = BatchLoader(directory, "train", prefetch_batches=0, **sampling, **RAW)
    requests = [(epoch, batch) for epoch in range(3) for batch in range(plain.num_batches)]
    requests = [requests[i] for i in np.random.default_rng(1).permutation(len(requests))]
    requests += [(3, batch) for batch in range(plain.num_batches)]  # and one epoch in order, split between threads
    hinted = BatchLoader(directory, "train", prefetch_batches=6, **sampling, **RAW)
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
    options = dict(batch_size=64, shuffle="block", seed=8, block_size=128, window_blocks=3, **RAW)
    first, second = (BatchLoader(directory, "train", **options) for _ in range(2))
    orders = [epoch_ids(first, epoch) for epoch in range(3)]
    for epoch, ids in enumerate(orders):
        assert np.array_equal(np.sort(ids), np.arange(1500))
        assert np.array_equal(ids, served_order(first, epoch))
    assert np.array_equal(epoch_ids(second, 1), orders[1])  # same seed and epoch, fresh loader
    assert not np.array_equal(orders[0], orders[1])
    first.close()
    second.close()


def test_batches_ahead_are_in_the_page_cache_before_they_are_read(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")  # one 15.7 MB shard: 3,830 pages of images
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", batch_size=16, shuffle="exact", seed=5, prefetch_batches=4, **RAW)
    loader.load(0, 0)
    path, _ = x_file(directory)
    for batch in (1, 2, 3, 4):
        assert wait_resident(path, x_offsets(directory, loader.sampler.batch_indices(0, batch))).all()
    later = x_offsets(directory, loader.sampler.batch_indices(0, 60))
    assert resident_pages(path, later).mean() < 0.5  # not hinted yet: the check above can fail


def test_requests_out_of_order_get_no_lookahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", batch_size=16, shuffle="exact", seed=5, prefetch_batches=4, **RAW)
    for batch in (700, 90, 400):  # far apart: Keras shuffling the batch order
        loader.load(0, batch)
    time.sleep(0.2)  # wrongly hinted pages would have been read by now
    path, _ = x_file(directory)
    for batch in (701, 91, 401):
        assert resident_pages(path, x_offsets(directory, loader.sampler.batch_indices(0, batch))).mean() < 0.5


def test_block_mode_reads_whole_windows_ahead(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_480, "npy")  # 40 whole blocks, so window w is epoch positions w*2048...
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", batch_size=32, shuffle="block", seed=2, block_size=512, window_blocks=4,
                         prefetch_batches=4, **RAW)
    window_batches = 512 * 4 // 32
    for batch in range(window_batches // 2 + 1):  # reaching half of window 0 hints window 1
        loader.load(0, batch)
    path, _ = x_file(directory)
    epoch = loader.sampler.epoch_indices(0)
    for window in (0, 1):
        blocks = np.unique(epoch[window * 2048:(window + 1) * 2048] // 512)
        assert wait_resident(path, block_offsets(directory, blocks, 512)).all(), window
    loader.close()
    far_blocks = np.unique(epoch[6 * 2048:7 * 2048] // 512)
    assert resident_pages(path, block_offsets(directory, far_blocks, 512)).mean() < 0.5


def test_block_mode_keeps_reading_ahead_while_storage_is_idle_inside_windows(tmp_path) -> None:
    """Inside a window read ahead, storage is idle for many batches: that must not pause the
    read-ahead of the next window (the warm-cache pause is for exact order only)."""
    directory, _ = build(tmp_path, 20_480, "npy")
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", batch_size=32, shuffle="block", seed=3, block_size=512, window_blocks=4,
                         prefetch_batches=4, **RAW)
    window_batches = 512 * 4 // 32  # 64 batches: longer than the idle checks (32 batches)
    for batch in range(4 * window_batches + window_batches // 2 + 1):  # to the middle of window 4
        loader.load(0, batch)
    path, _ = x_file(directory)
    blocks = np.unique(loader.sampler.epoch_indices(0)[5 * 2048:6 * 2048] // 512)
    assert wait_resident(path, block_offsets(directory, blocks, 512)).all()
    loader.close()


def test_warm_reads_pause_hinting_and_cold_reads_resume_it(tmp_path, hint_calls, counted_storage) -> None:
    directory, _ = build(tmp_path, 5000, "npy")  # 3.9 MB of images
    for path in shard_folder(directory).glob("*.npy"):
        path.read_bytes()  # all in the page cache
    loader = BatchLoader(directory, "train", batch_size=16, seed=1, prefetch_batches=4, **RAW)
    for batch in range(64):  # warm-up: hinting runs until the storage reads are seen standing still
        loader.load(0, batch)
    assert hint_calls  # the counting sees hints (so the zero below can fail)
    loader.hints.flush()  # hints queued during the warm-up are issued before the count restarts
    hint_calls.clear()
    for batch in range(64, 264):
        loader.load(0, batch)
    assert hint_calls == []  # 200 warm batches: no system call spent on hints
    other = tmp_path / "someone_elses_file"  # another reader of this process reaches storage ...
    other.write_bytes(os.urandom(4 << 20))
    drop_page_cache(other)
    before = read_io().read_bytes
    other.read_bytes()
    assert read_io().read_bytes > before
    for batch in range(264, 313):  # three looks at the storage reads, to the end of the epoch
        loader.load(0, batch)
    assert hint_calls == []  # ... while this loader's pages are all cached: hinting stays paused
    path, offset = x_file(directory)
    for shard in range(len(loader.dataset.info.shards)):
        loader.dataset.reader(shard).advise(mmap.MADV_DONTNEED)  # unmap the pages, so they can be evicted
    drop_page_cache(directory)
    assert not resident_pages(path, offset + np.arange(0, 5000 * ROW_BYTES, PAGE)).any()
    before = read_io().read_bytes
    for batch in range(32):  # two looks at the storage reads
        loader.load(1, batch)
    assert read_io().read_bytes > before and hint_calls  # cold: reads reach storage, and hinting resumed
    loader.close()


@pytest.mark.parametrize("shuffle", ["exact", "block"])
def test_a_resumed_epoch_hints_the_batches_it_reads_and_no_others(tmp_path, hint_calls, shuffle) -> None:
    """Batches of an epoch resumed at sample 333 are not the epoch's usual batches: hinting these
    by batch number would read other samples' pages and skip the ones gathered."""
    directory, _ = build(tmp_path, 20_000, "npy")
    path, offset = x_file(directory)
    drop_page_cache(directory)  # cold, so hinting never pauses
    loader = BatchLoader(directory, "train", batch_size=16, seed=1, shuffle=shuffle, block_size=512, window_blocks=2,
                         prefetch_batches=4, **RAW)
    hinted: set[int] = set()
    read: set[int] = set()
    for batch in range(30):
        indices = loader.sampler.batch_indices(0, batch, 333)
        pages = set(((offset + indices * ROW_BYTES) // PAGE).tolist()) | set(
            ((offset + indices * ROW_BYTES + ROW_BYTES - 1) // PAGE).tolist())
        hint_calls.clear()
        loader.load(0, batch, offset=333)
        for fd, start, length in hint_calls:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve()):
                hinted.update(range(start // PAGE, (start + length) // PAGE))
        assert pages <= hinted, f"batch {batch}: pages gathered without a hint"
        read |= pages
    assert hinted == read  # nothing hinted that was not read
    loader.close()


def test_cold_exact_order_reads_little_more_than_it_delivers(tmp_path, counted_storage) -> None:
    """Random samples of 784 bytes live in 4 KiB pages: ~1.2 pages a sample when nothing is cached
    (6.2x), less as pages are shared. Plain np.load(mmap) reads around each fault (read_ahead_kb)."""
    directory, _ = build(tmp_path, 10_000, "npy")  # 7.8 MB of images
    loader = BatchLoader(directory, "train", batch_size=4, seed=1, prefetch_batches=8, **RAW)
    batches = [loader.sampler.batch_indices(0, batch) for batch in range(200)]
    x_path, y_path = (next(shard_folder(directory).glob(f"train-*.{key}.npy")) for key in ("x", "y"))
    drop_page_cache(directory)
    delivered = sum(len(indices) for indices in batches) * (ROW_BYTES + 1)  # stored bytes: uint8 image and label
    x, y = np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
    before = read_io().read_bytes
    for indices in batches:
        assert np.asarray(x[indices]).nbytes + np.asarray(y[indices]).nbytes == len(indices) * (ROW_BYTES + 1)
    plain = (read_io().read_bytes - before) / delivered
    del x, y
    gc.collect()
    drop_page_cache(directory)
    before = read_io().read_bytes
    for batch, indices in enumerate(batches):
        assert len(loader.load(0, batch)[0]) == len(indices)
    ours = (read_io().read_bytes - before) / delivered
    assert ours <= 6.5 and ours < plain, (ours, plain)
    loader.close()


def test_cold_block_order_reads_each_byte_about_once(tmp_path, counted_storage) -> None:
    directory, _ = build(tmp_path, 5000, "npy")
    drop_page_cache(directory)
    loader = BatchLoader(directory, "train", batch_size=32, shuffle="block", seed=1, block_size=512, window_blocks=2,
                         prefetch_batches=4, **RAW)
    before = read_io().read_bytes
    for batch in range(loader.num_batches):
        loader.load(0, batch)
    loader.close()
    assert (read_io().read_bytes - before) / (5000 * (ROW_BYTES + 1)) <= 1.1  # every sample once


def test_issue_merges_touching_pages_into_one_hint_per_run(tmp_path, hint_calls) -> None:
    path = tmp_path / "pages"
    path.write_bytes(bytes(20 * PAGE))
    fd = os.open(path, os.O_RDONLY)
    try:
        starts = np.array([10, PAGE - 5, PAGE + 7, 5 * PAGE, 9 * PAGE + 1, 10 * PAGE])
        ends = starts + np.array([5, 100, 2 * PAGE, 1, 3, PAGE])
        issue([ByteRanges(fd, starts, ends, None)])
        # pages 0-3 (the first three ranges touch or overlap), page 5, pages 9-10
        assert hint_calls == [(fd, 0, 4 * PAGE), (fd, 5 * PAGE, PAGE), (fd, 9 * PAGE, 2 * PAGE)]
        hint_calls.clear()
        issue([ByteRanges(fd, starts[::-1].copy(), ends[::-1].copy(), None)])  # any order: the same pages
        assert sorted(hint_calls) == [(fd, 0, 4 * PAGE), (fd, 5 * PAGE, PAGE), (fd, 9 * PAGE, 2 * PAGE)]
    finally:
        os.close(fd)


def test_hinting_thread_starts_lazily_and_stops(tmp_path) -> None:
    directory, _ = build(tmp_path, 3000, "npy")

    def hint_threads() -> int:
        return sum(thread.name == "streamload-hints" and thread.is_alive() for thread in threading.enumerate())

    before = hint_threads()
    loader = BatchLoader(directory, "train", batch_size=32, shuffle="block", seed=2, block_size=200, window_blocks=2,
                         **RAW)
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


def test_hints_pickle_small_and_restart_per_process(tmp_path) -> None:
    directory, arrays = build(tmp_path, 3000, "npy", 1000)
    loader = BatchLoader(directory, "train", **BLOCK, **RAW)
    for batch in range(10):
        loader.load(0, batch)
    assert len(pickle.dumps(loader)) < 20_000
    clone = pickle.loads(pickle.dumps(loader))
    assert clone.hints._states == {} and os.getpid() in loader.hints._states
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh state of its own, same batches
        try:
            ok = all(same(loader.load(0, batch), loader.reference(arrays, 0, batch)) for batch in range(10, 30))
            ok = ok and os.getpid() in loader.hints._states
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    loader.close()


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"batch_size": 64, "shuffle": "exact"},
                                      {"batch_size": 64, "shuffle": "block", "block_size": 1024}],
                         ids=["exact", "block"])
def test_anonymous_memory_stays_bounded_over_thousands_of_batches(tmp_path, sampling) -> None:
    directory, _ = build(tmp_path, 120_000, "npy", 25_000)  # 94 MB of images in 5 shards
    loader = BatchLoader(directory, "train", prefetch_batches=16, **sampling, **RAW)
    batches = [(epoch, batch) for epoch in range(3) for batch in range(loader.num_batches)]  # 5,625 batches
    for request in batches[:300]:
        loader.load(*request)
    gc.collect()
    before = read_memory()
    for request in batches[300:]:
        loader.load(*request)
    gc.collect()
    after = read_memory()
    state = loader.hints._state()
    assert all(len(table._members) <= table.limit for table in (state.batches, state.groups, state.blocks))
    assert after.rss_anon - before.rss_anon < 4 * 2**20  # 3 epochs of a 94 MB split; pages are file-backed
    loader.close()


def test_hinted_ranges_read_exactly_the_pages_of_the_rows(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    drop_page_cache(directory)
    dataset = ShardedDataset(directory)
    wanted = np.array([1005, 6000, 6001, 19_999])  # (opening reads the header: the first pages are cached anyway)
    issue(dataset.ranges(wanted, ("x",)))
    path, _ = x_file(directory)
    assert wait_resident(path, x_offsets(directory, wanted)).all()
    others = x_offsets(directory, np.array([1020, 3000, 6020, 10_000, 19_900]))
    assert not resident_pages(path, others).any()  # no readahead around them


def test_chunked_hdf5_hints_read_the_stored_chunks(tmp_path) -> None:
    import h5py

    directory, arrays = build(tmp_path, 20_000, "hdf5", compression="gzip")
    path = next(shard_folder(directory).glob("train-*.h5"))
    with h5py.File(path, "r") as handle:
        chunk_rows = handle["x"].chunks[0]
        stored = {row: handle["x"].id.get_chunk_info_by_coord((row - row % chunk_rows, 0, 0)) for row in (10, 7000)}
    drop_page_cache(directory)
    dataset = ShardedDataset(directory)
    dataset.reader(0)  # open first: reading HDF5's metadata may read some data pages ahead
    last_byte = stored[7000].byte_offset + stored[7000].size - 1
    chunks = np.array([stored[10].byte_offset, stored[7000].byte_offset, last_byte])
    before = resident_pages(path, chunks)
    issue(dataset.ranges(np.array([10, 7000]), ("x",)))
    assert wait_resident(path, chunks).all() and not before.all()
    assert np.array_equal(dataset.gather(np.array([7000, 10]))["x"], arrays["x"][[7000, 10]])
