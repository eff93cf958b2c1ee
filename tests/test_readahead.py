"""The read-queueing calls: the pages PlainRows finds are the readers' own, and advise_runs reads exactly them.

Pages are compared with what each shard's reader says its rows occupy (``ByteRanges``), and
residency is the kernel's (mincore) on files evicted before; the process_madvise path and the
posix_fadvise fallback are both run, the latter counted through ``os.posix_fadvise``.
"""

import ctypes
import errno
import os

import numpy as np
import pytest
from shards import build
from test_kernel_hints import resident_pages, wait_resident

from streamload.base.procstats import drop_page_cache
from streamload.format.reader import PAGE
from streamload.read import readahead
from streamload.read.dataset import ShardedDataset
from streamload.read.readahead import PageRuns, PlainRows, advise_runs


def reader_pages(dataset: ShardedDataset, indices: np.ndarray, key: str) -> set[tuple[str, int]]:
    """(file, page) of every byte the readers say the rows of ``indices`` occupy."""
    pages = set()
    for found in dataset.ranges(indices, (key,)):
        name = os.readlink(f"/proc/self/fd/{found.fd}")
        for start, end in zip(found.starts.tolist(), found.ends.tolist()):
            pages |= {(name, page) for page in range(start // PAGE, (end - 1) // PAGE + 1)}
    return pages


def run_pages(runs: PageRuns) -> set[tuple[str, int]]:
    columns = zip(runs.fds.tolist(), runs.first.tolist(), runs.counts.tolist())
    return {(os.readlink(f"/proc/self/fd/{fd}"), page) for fd, first, count in columns
            for page in range(first, first + count)}


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_plain_rows_find_the_pages_the_readers_name(tmp_path, fmt) -> None:
    directory, _ = build(tmp_path, 5000, fmt, 700)  # 8 shards, the last one short
    dataset = ShardedDataset(directory)
    plain = PlainRows(dataset, ("x",))
    starts = dataset.info.shard_starts
    rng = np.random.default_rng(4)
    for size in (1, 7, 300, 4000):
        indices = np.sort(rng.integers(0, 5000, size))  # repeats included
        shards = np.searchsorted(starts, indices, side="right") - 1
        runs = plain.pages(shards, indices - starts[shards], "x")
        assert runs is not None and run_pages(runs) == reader_pages(dataset, indices, "x")
        assert (runs.counts >= 1).all() and len(set(zip(runs.fds.tolist(), runs.first.tolist()))) == len(runs.first)


def test_arrays_stored_in_chunks_are_left_to_their_readers(tmp_path) -> None:
    directory, _ = build(tmp_path, 1000, "hdf5", 300, compression="gzip")
    dataset = ShardedDataset(directory)
    indices = np.array([3, 400, 999])
    shards = np.searchsorted(dataset.info.shard_starts, indices, side="right") - 1
    assert PlainRows(dataset, ("x",)).pages(shards, indices - dataset.info.shard_starts[shards], "x") is None


@pytest.fixture(params=["process_madvise", "posix_fadvise"])
def engine(request, monkeypatch) -> list[int]:
    """Which call queues the reads; the fadvise calls made (descriptors), counted in both cases."""
    fadvised: list[int] = []
    real = os.posix_fadvise

    def counting(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_WILLNEED:
            fadvised.append(fd)
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", counting)
    fresh = readahead._SelfMadvise()
    if request.param == "posix_fadvise":
        fresh.usable = False
    monkeypatch.setattr(readahead, "_SELF", fresh)
    return fadvised


def test_advise_runs_reads_the_pages_of_the_runs_and_no_others(tmp_path, engine, request) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")  # one 15.7 MB shard: 3,830 pages of images
    dataset = ShardedDataset(directory)
    indices = np.sort(np.random.default_rng(2).choice(20_000, 300, replace=False))
    runs = PlainRows(dataset, ("x",)).pages(np.zeros(300, dtype=np.int64), indices, "x")
    path = dataset.root / dataset.info.shards[0].files["x"].name
    drop_page_cache(path)
    advise_runs(runs)
    hinted = np.concatenate([np.arange(first, first + count) for first, count
                             in zip(runs.first.tolist(), runs.counts.tolist())])
    assert wait_resident(path, hinted * PAGE).all()
    others = np.setdiff1d(np.arange(1, path.stat().st_size // PAGE), hinted)  # page 0: the header, read on opening
    assert not resident_pages(path, others * PAGE).any()
    if request.node.callspec.params["engine"] == "posix_fadvise":
        assert len(engine) == len(runs.first)  # one call per run
    elif readahead._SELF.usable:
        assert engine == [] and readahead._SELF.worked  # one process_madvise call for all 300 samples


def test_a_refused_process_madvise_falls_back_to_fadvise_for_good(tmp_path, monkeypatch) -> None:
    directory, _ = build(tmp_path, 2000, "npy")
    dataset = ShardedDataset(directory)
    runs = PlainRows(dataset, ("x",)).pages(np.zeros(3, dtype=np.int64), np.array([5, 600, 1999]), "x")
    fresh, calls, fadvised = readahead._SelfMadvise(), [], []

    def refused(*args: object) -> int:
        calls.append(args)
        ctypes.set_errno(errno.EPERM)  # as a kernel that wants CAP_SYS_NICE for self-advice answers
        return -1

    fresh._syscall = refused
    monkeypatch.setattr(readahead, "_SELF", fresh)
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *rest: (fadvised.append(fd), real(fd, *rest)))
    advise_runs(runs)
    advise_runs(runs)
    assert len(calls) == 1 and not fresh.usable  # asked once, then never again
    assert len(fadvised) == 2 * len(runs.first)  # every run hinted both times, through the fallback


def test_resident_says_whether_every_run_is_cached(tmp_path) -> None:
    directory, _ = build(tmp_path, 20_000, "npy")
    dataset = ShardedDataset(directory)
    indices = np.sort(np.random.default_rng(3).choice(20_000, 64, replace=False))
    runs = PlainRows(dataset, ("x",)).pages(np.zeros(64, dtype=np.int64), indices, "x")
    path = dataset.root / dataset.info.shards[0].files["x"].name
    path.read_bytes()
    assert readahead.resident(runs)
    drop_page_cache(path)
    assert not readahead.resident(runs)
    advise_runs(runs)
    assert wait_resident(path, np.r_[runs.first, runs.first + runs.counts - 1] * PAGE).all()
    assert readahead.resident(runs)


def kernel_process_madvise() -> str | None:
    """Why ``process_madvise(MADV_WILLNEED)`` on this very process is unavailable here, or None when it works.

    Asked directly (syscall 440, one page of an anonymous map), independently of streamload's own wrapper.
    """
    import mmap

    if not hasattr(os, "pidfd_open"):
        return "os.pidfd_open is missing (Python < 3.9 or a kernel < 5.3)"
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    page = mmap.mmap(-1, PAGE)
    vector = np.array([[ctypes.addressof(ctypes.c_char.from_buffer(page)), PAGE]], dtype=np.uint64)
    pidfd = os.pidfd_open(os.getpid())
    try:
        done = syscall(440, pidfd, ctypes.c_void_p(vector.ctypes.data), ctypes.c_size_t(1), 3, 0)
        code = ctypes.get_errno()
    finally:
        os.close(pidfd)
    if done == PAGE:
        return None
    return f"process_madvise on this process failed here: {errno.errorcode.get(code, code)} (kernel < 5.10, " \
           "or a seccomp filter / missing CAP_SYS_NICE refusing it)"


def test_process_madvise_itself_queues_the_reads_where_the_kernel_has_it(tmp_path, monkeypatch) -> None:
    """The process_madvise branch alone: fadvise is forbidden, so a broken call (wrong number, vector,
    advice or descriptor) cannot hide behind the fallback as it could in the test above."""
    missing = kernel_process_madvise()
    if missing:
        pytest.skip(missing)
    directory, _ = build(tmp_path, 20_000, "npy")
    dataset = ShardedDataset(directory)
    indices = np.sort(np.random.default_rng(5).choice(20_000, 300, replace=False))
    runs = PlainRows(dataset, ("x",)).pages(np.zeros(300, dtype=np.int64), indices, "x")
    path = dataset.root / dataset.info.shards[0].files["x"].name
    fresh = readahead._SelfMadvise()
    monkeypatch.setattr(readahead, "_SELF", fresh)

    def forbidden(*args: object) -> None:
        raise AssertionError(f"posix_fadvise{args}: the process_madvise path fell back")

    drop_page_cache(path)
    monkeypatch.setattr(os, "posix_fadvise", forbidden)
    advise_runs(runs)
    assert fresh.usable and fresh.worked
    hinted = np.concatenate([np.arange(first, first + count) for first, count
                             in zip(runs.first.tolist(), runs.counts.tolist())])
    assert wait_resident(path, hinted * PAGE).all()
