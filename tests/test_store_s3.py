"""The store layer against a real S3 server (SeaweedFS on loopback, tests/s3server.py): no mocks.

Counting wrappers around the real store only count requests, or change the bucket between two real
requests; every byte still comes from the server."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import tmpfs
from s3server import S3Admin, S3Endpoint, SeaweedServer, fresh_url
from shards import folder_bytes

from streamload.errors import (
    CacheFullError,
    ObjectExistsError,
    ObjectNotFoundError,
    ShardCorruptError,
    StoreAccessError,
    StoreUnavailableError,
)
from streamload.store import ShardCache, ShardTable, open_store, parse_url
from streamload.store import retry as retry_module
from streamload.store.cachefiles import PART_PREFIX, VerifyingSink
from streamload.store.protocol import ObjectBuffer, ObjectSink
from streamload.store.s3 import S3ObjectStore

pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")


class Counting:
    """The real store, counting whole-object GETs per key."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.store, self.gets = store, {}

    def get_into(self, key: str, sink: ObjectSink) -> int:
        self.gets[key] = self.gets.get(key, 0) + 1
        return self.store.get_into(key, sink)


def upload_shards(store: S3ObjectStore, count: int, size: int, seed: int = 0) -> tuple[ShardTable, list[bytes]]:
    rng = np.random.default_rng(seed)
    datas = [rng.bytes(size + 17 * index) for index in range(count)]
    keys = [f"shards/s{index:03d}.npy" for index in range(count)]
    for key, data in zip(keys, datas):
        store.put_bytes(key, data)
    return ShardTable.of(keys, [len(d) for d in datas], [hashlib.sha256(d).hexdigest() for d in datas]), datas


def test_put_get_head_list_delete_round_trip(aws_env: S3Endpoint, tmp_path: Path) -> None:
    url = fresh_url(aws_env)
    store = open_store(url)
    data = np.random.default_rng(1).bytes(3 << 20)
    source = tmp_path / "shard.npy"
    source.write_bytes(data)
    store.put_file("a/shard.npy", source)
    store.put_bytes("a/small.json", b"{}")
    assert store.head("a/shard.npy").size == len(data)
    assert [(info.key, info.size) for info in store.list("a/")] == [("a/shard.npy", len(data)), ("a/small.json", 2)]
    assert store.get_file("a/shard.npy", tmp_path / "back") == len(data) and (tmp_path / "back").read_bytes() == data
    key = parse_url(url).key("a/shard.npy")  # the same object, read by the independent client
    assert S3Admin(aws_env).get(aws_env.bucket, key) == data
    assert store.get_ranges("a/shard.npy", [0, 100, len(data) - 5], [10, 300, len(data)]) == \
        [data[:10], data[100:300], data[-5:]]
    store.delete("a/shard.npy")
    store.delete("a/shard.npy")  # absent: not an error
    with pytest.raises(ObjectNotFoundError, match="a/shard.npy"):
        store.head("a/shard.npy")


class PartFile:
    """A preallocated part file with its VerifyingSink, as the shard cache makes them; counts ``write`` calls."""

    def __init__(self, path: Path, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(self.fd, 0, size)
        self.sink, self.writes = VerifyingSink(self.fd, size), 0
        write = self.sink.write

        def counted(data: memoryview) -> None:
            self.writes += 1
            write(data)

        self.sink.write = counted  # type: ignore[method-assign]

    def close(self) -> None:
        self.sink.close(sync=True)
        os.close(self.fd)


def test_a_whole_object_is_read_straight_into_the_mapped_part_file(aws_env: S3Endpoint, tmp_path: Path) -> None:
    store = open_store(fresh_url(aws_env))
    data = np.random.default_rng(3).bytes((8 << 20) + 12_345)  # more than one piece of CHUNK_BYTES
    store.put_bytes("big.bin", data)
    part = PartFile(tmp_path / "part", len(data))
    assert isinstance(part.sink, ObjectBuffer) and store.get_into("big.bin", part.sink) == len(data)
    assert part.sink.matches(hashlib.sha256(data).hexdigest()) and part.writes == 0  # no copy through write()
    part.close()
    assert (tmp_path / "part").read_bytes() == data
    short = PartFile(tmp_path / "short", len(data) - 1)  # the manifest says one byte less than the server has
    store.get_into("big.bin", short.sink)
    assert not short.sink.matches(hashlib.sha256(data).hexdigest()) and short.writes > 0 and short.sink.overflow
    short.close()
    assert (tmp_path / "short").stat().st_size == len(data) - 1  # never written past the reserved size


def test_put_if_absent_never_overwrites(aws_env: S3Endpoint) -> None:
    store = open_store(fresh_url(aws_env))
    store.put_bytes("manifest.json", b"first", if_absent=True)
    with pytest.raises(ObjectExistsError):
        store.put_bytes("manifest.json", b"second", if_absent=True)
    assert store.get_ranges("manifest.json", [0], [5]) == [b"first"]


def test_an_empty_object_does_not_stall_the_next_request_on_its_connection(aws_env: S3Endpoint,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty PUT (a generation's .claim) sent with Expect: 100-continue left SeaweedFS's late "100 Continue" on
    the pooled connection, and the next request waited out the whole read timeout for its answer."""
    import streamload.store.s3 as s3_module

    monkeypatch.setattr(s3_module, "READ_TIMEOUT_S", 10)
    store = open_store(fresh_url(aws_env))
    started = time.monotonic()
    store.put_bytes("gen/.claim", b"", if_absent=True)
    store.put_bytes("gen/x.bin", b"payload")
    assert time.monotonic() - started < s3_module.READ_TIMEOUT_S  # a hang check: without the fix it is the timeout
    assert store.get_bytes("gen/x.bin") == b"payload" and store.head("gen/.claim").size == 0


def test_concurrent_range_gets_equal_local_slicing(aws_env: S3Endpoint) -> None:
    store = open_store(fresh_url(aws_env))
    data = np.random.default_rng(2).bytes(8 << 20)
    store.put_bytes("big.bin", data)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1024, 100 * 1024, 500)
    starts = rng.integers(0, len(data) - lengths)
    parts = store.get_ranges("big.bin", starts.tolist(), (starts + lengths).tolist())
    assert parts == [data[start:start + length] for start, length in zip(starts, lengths)]


def test_wrong_credentials_give_one_clear_error_without_the_secret(aws_env: S3Endpoint,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "not-the-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    store = open_store(fresh_url(aws_env))
    started = time.monotonic()
    with pytest.raises(StoreAccessError) as caught:
        store.head("anything")
    assert time.monotonic() - started < 5  # not retried: retrying cannot fix a key
    text = f"{caught.value} {caught.value!r} {store!r} {caught.value.args!r}"
    assert aws_env.bucket in str(caught.value) and "\n" not in str(caught.value)
    assert wrong not in text and aws_env.secret_key not in text


def test_the_cache_never_passes_its_limit_and_evicts_the_least_recently_used(aws_env: S3Endpoint,
                                                                             tmp_path: Path) -> None:
    store = Counting(open_store(fresh_url(aws_env)))
    table, datas = upload_shards(store.store, 8, 100_000)
    limit = 3 * int(table.sizes.max())  # three of eight fit
    cache = ShardCache(tmp_path / "cache", store, table, limit, in_flight=2, wait_s=0.5)
    for index in [0, 1, 2, 0, 3, 4, 0, 5, 6, 0, 7, 0]:
        with cache.lease(index) as lease:
            assert lease.path.read_bytes() == datas[index]
        assert folder_bytes(cache.folder) <= limit and cache.used_bytes() <= limit
    assert store.gets[table.keys[0]] == 1  # used often: never the least recently used, never fetched again
    assert sorted(store.gets.values()) == [1] * 8
    present = {path.name for path in cache.folder.iterdir()} - {".cache.lock"}
    assert present == {table.file_name(i) for i in (0, 6, 7)}


def test_seen_all_knows_the_folder_without_looking_at_it_again(aws_env: S3Endpoint, tmp_path: Path) -> None:
    """What a loader asks every batch (is there anything left to fetch ahead?): one scan when the cache opens,
    then its own downloads, leases and evictions; a copy removed behind its back is seen at the next lease."""
    store = Counting(open_store(fresh_url(aws_env)))
    table, _datas = upload_shards(store.store, 3, 100_000)
    cache = ShardCache(tmp_path / "cache", store, table, 3 * int(table.sizes.max()), in_flight=1)
    for index in (0, 1):
        cache.lease(index).release()
    assert not cache.seen_all()  # shard 2 never fetched
    cache.lease(2).release()
    assert cache.seen_all()
    again = ShardCache(tmp_path / "cache", store, table, 3 * int(table.sizes.max()), in_flight=1)
    assert again.seen_all()  # found by its one scan: a new process over a warm cache
    (again.folder / table.file_name(1)).unlink()  # another process evicted it
    again.lease(1).release()  # fetched again, and seen there again
    assert again.seen_all() and store.gets[table.keys[1]] == 2
    small = ShardCache(tmp_path / "cache", store, table, int(table.sizes.max()), in_flight=1)
    assert small.seen_all()
    (small.folder / table.file_name(2)).unlink()
    small.lease(2).release()  # room for one copy only: fetching shard 2 evicts 0 and 1
    assert not small.seen_all() and sorted(p.name for p in small.folder.iterdir()) == [".cache.lock",
                                                                                         table.file_name(2)]


def test_a_leased_shard_is_never_evicted_and_a_full_cache_fails_clearly(aws_env: S3Endpoint, tmp_path: Path) -> None:
    store = Counting(open_store(fresh_url(aws_env)))
    table, datas = upload_shards(store.store, 4, 50_000)
    limit = 2 * int(table.sizes.max())
    cache = ShardCache(tmp_path / "cache", store, table, limit, in_flight=2, wait_s=0.3)
    held = cache.lease(0)
    for index in (1, 2, 3, 1):
        with cache.lease(index) as lease:
            assert lease.path.read_bytes() == datas[index]
            assert held.path.read_bytes() == datas[0]  # the oldest, but leased
        assert folder_bytes(cache.folder) <= limit
    second = cache.lease(1)
    with pytest.raises(CacheFullError, match="release leases or raise the limit"):
        cache.lease(2)  # both places leased: waits 0.3 s, then says so, nothing evicted
    assert held.path.read_bytes() == datas[0] and second.path.read_bytes() == datas[1]
    assert folder_bytes(cache.folder) <= limit
    second.release()
    with cache.lease(2) as lease:
        assert lease.path.read_bytes() == datas[2]
    held.release()


def test_try_lease_never_waits_for_room(aws_env: S3Endpoint, tmp_path: Path) -> None:
    """What a prefetch takes: None at once where lease would wait (a prefetch waiting for room held the
    interpreter's exit, which joins its thread, for the cache's whole wait)."""
    store = open_store(fresh_url(aws_env))
    table, datas = upload_shards(store, 3, 50_000)
    cache = ShardCache(tmp_path / "cache", store, table, 2 * int(table.sizes.max()), in_flight=2, wait_s=60)
    held = [cache.lease(0), cache.lease(1)]
    threading.Timer(1.0, held[0].release).start()  # room comes a second later: lease waits for it
    assert cache.try_lease(2) is None and not cache.path(2).exists()
    with cache.lease(2) as lease:
        assert lease.path.read_bytes() == datas[2]
    here = cache.try_lease(1)  # a copy already here is leased
    assert here is not None and here.path.read_bytes() == datas[1]
    here.release()
    held[1].release()


def test_a_full_disk_evicts_below_the_limit_and_else_fails_clearly_leaving_no_part(aws_env: S3Endpoint,
                                                                                  tmp_path: Path) -> None:
    """The cache's disk (a real tmpfs) is smaller than its limit: a fetch that finds it full evicts the least
    recently used shard; with every shard leased it waits, then one line names the folder and the full disk,
    and leaves no part file and nothing under the shard's name; once a lease ends the shard is fetched whole."""
    store = open_store(fresh_url(aws_env))
    table, datas = upload_shards(store, 4, 20_000)  # five 4 KiB pages each
    with tmpfs(tmp_path / "disk", "48k") as disk:  # twelve pages: two shards fit, a third does not
        cache = ShardCache(disk / "cache", store, table, 2**30, in_flight=2, wait_s=0.3)
        for index in (0, 1, 2, 3, 0):
            with cache.lease(index) as lease:
                assert lease.path.read_bytes() == datas[index]
        kept = {table.file_name(3), table.file_name(0)}
        assert set(os.listdir(cache.folder)) - {".cache.lock"} == kept  # 1 and 2 evicted for room on the disk
        held = [cache.lease(3), cache.lease(0)]
        with pytest.raises(CacheFullError) as caught:
            cache.lease(1)
        message = str(caught.value)
        assert "\n" not in message and "its disk, which is full" in message
        assert str(cache.folder) in message and table.keys[1] in message
        assert set(os.listdir(cache.folder)) - {".cache.lock"} == kept  # no part file, nothing named as shard 1
        for lease in held:
            lease.release()
        with cache.lease(1) as lease:
            assert lease.path.read_bytes() == datas[1]


def test_a_corrupted_object_is_fetched_again_once_then_refused(aws_env: S3Endpoint, tmp_path: Path) -> None:
    url = fresh_url(aws_env)
    store = Counting(open_store(url))
    table, datas = upload_shards(store.store, 2, 20_000)
    admin, key = S3Admin(aws_env), parse_url(url).key(str(table.keys[0]))
    admin.put(aws_env.bucket, key, datas[0][:-1] + bytes([datas[0][-1] ^ 1]))  # one bit flipped on the server
    cache = ShardCache(tmp_path / "cache", store, table, 10 * 20_000, in_flight=1)
    with pytest.raises(ShardCorruptError, match="fetched twice"):
        cache.lease(0)
    assert store.gets[table.keys[0]] == 2
    assert {path.name for path in cache.folder.iterdir()} == {".cache.lock"}  # nothing kept, no part left

    class HealedAfterFirst(Counting):  # the server's copy is repaired between the two real GETs
        def get_into(self, key_: str, sink: ObjectSink) -> int:
            written = super().get_into(key_, sink)
            admin.put(aws_env.bucket, key, datas[0])
            return written

    healed = HealedAfterFirst(store.store)
    with ShardCache(tmp_path / "cache", healed, table, 10 * 20_000, in_flight=1).lease(0) as lease:
        assert lease.path.read_bytes() == datas[0]
    assert healed.gets[table.keys[0]] == 2


def test_a_download_failing_with_its_buffer_still_held_raises_its_own_error(aws_env: S3Endpoint,
                                                                              tmp_path: Path) -> None:
    url = fresh_url(aws_env)
    table, _ = upload_shards(open_store(url), 1, 50_000)

    class FailsHoldingTheBuffer(Counting):  # as a read cut short would: its traceback keeps a slice of the map
        def get_into(self, key: str, sink: ObjectSink) -> int:
            super().get_into(key, sink)
            held = sink.room()  # noqa: F841 - alive in this frame, so in the traceback
            raise StoreUnavailableError(f"{key}: connection lost")

    cache = ShardCache(tmp_path / "cache", FailsHoldingTheBuffer(open_store(url)), table, 200_000, in_flight=1)
    with pytest.raises(StoreUnavailableError, match="connection lost"):
        cache.lease(0)
    assert {path.name for path in cache.folder.iterdir()} == {".cache.lock"}


class SlowCounting(Counting):
    """The real store, counting GETs and writing each in 64 KiB pieces 10 ms apart: downloads overlap."""

    def get_into(self, key: str, sink: ObjectSink) -> int:
        class Slow:
            def restart(self) -> None:
                sink.restart()

            def write(self, data: memoryview) -> None:
                for start in range(0, len(data), 1 << 16):
                    sink.write(data[start:start + (1 << 16)])
                    time.sleep(0.01)

        return super().get_into(key, Slow())  # type: ignore[arg-type]


def _read_through_cache(url: str, folder: str, table: ShardTable, limit: int, out: str, barrier) -> None:
    """A spawned process: lease every shard once, record the GETs made and each shard's SHA-256."""
    store = SlowCounting(open_store(url))
    cache = ShardCache(Path(folder), store, table, limit, in_flight=2)
    barrier.wait(30)
    digests = []
    for index in range(len(table)):
        with cache.lease(index) as lease:
            digests.append(hashlib.sha256(lease.path.read_bytes()).hexdigest())
    Path(out).write_text(f"{sum(store.gets.values())}\n" + "\n".join(digests))


@pytest.mark.slow
def test_two_processes_share_one_cache_and_fetch_each_shard_once(aws_env: S3Endpoint, tmp_path: Path) -> None:
    url = fresh_url(aws_env)
    table, datas = upload_shards(open_store(url), 4, 1 << 20)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    children = [context.Process(target=_read_through_cache, args=(url, str(tmp_path / "cache"), table,
                                                                   10 * (2 << 20), str(tmp_path / f"out{n}"), barrier))
                for n in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    outputs = [(tmp_path / f"out{n}").read_text().splitlines() for n in range(2)]
    assert int(outputs[0][0]) + int(outputs[1][0]) == len(table)  # each shard fetched by one of them only
    expected = [hashlib.sha256(data).hexdigest() for data in datas]
    assert outputs[0][1:] == outputs[1][1:] == expected


SLOW_READER = """
import sys, time
from pathlib import Path
import numpy as np
from streamload.store import ShardCache, ShardTable, open_store
url, folder, size, sha = sys.argv[1:5]
store = open_store(url)

class Slow:
    def get_into(self, key, sink):
        class SlowSink:
            def restart(self):
                sink.restart()
            def write(self, data):
                for start in range(0, len(data), 1 << 16):
                    sink.write(data[start:start + (1 << 16)])
                    print("writing", flush=True)
                    time.sleep(0.05)
        return store.get_into(key, SlowSink())

cache = ShardCache(Path(folder), Slow(), ShardTable.of(["big.bin"], [int(size)], [sha]), 4 * int(size), 1)
cache.lease(0)
print("done", flush=True)
"""


@pytest.mark.slow
def test_a_reader_killed_mid_download_leaves_nothing_taken_for_complete(aws_env: S3Endpoint, tmp_path: Path) -> None:
    url, data = fresh_url(aws_env), np.random.default_rng(5).bytes(4 << 20)
    open_store(url).put_bytes("big.bin", data)
    sha, folder = hashlib.sha256(data).hexdigest(), tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", SLOW_READER, url, str(folder), str(len(data)), sha],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        child.stdout.readline()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    names = [path.name for path in folder.iterdir()]
    assert [name for name in names if name.startswith(PART_PREFIX)], names  # a part file, mid-download
    assert not [name for name in names if name.startswith(sha)]  # and nothing under the shard's name
    cache = ShardCache(folder, open_store(url), ShardTable.of(["big.bin"], [len(data)], [sha]), 4 * len(data), 1)
    assert not [p for p in folder.iterdir() if p.name.startswith(PART_PREFIX)]  # the killed download, cleaned
    with cache.lease(0) as lease:
        assert lease.path.read_bytes() == data


@pytest.mark.slow
def test_a_stopped_server_gives_a_one_line_error_within_the_retry_budget(own_s3_server: SeaweedServer,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    endpoint = own_s3_server.endpoint
    assert endpoint is not None
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in endpoint.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(retry_module, "RETRY_ATTEMPTS", 4)
    monkeypatch.setattr(retry_module, "RETRY_BUDGET_S", 3.0)
    store = open_store(fresh_url(endpoint))
    store.put_bytes("x.bin", b"12345")
    own_s3_server.stop(grace=0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        store.head("x.bin")
    seconds = time.monotonic() - started
    message = str(caught.value)
    assert seconds < 3.0 + 2 * 5 and "\n" not in message  # the budget, plus at most one connect timeout
    assert "x.bin" in message and "budget: 4 tries, 3 s" in message and endpoint.secret_key not in message


def _head_in_child(store: S3ObjectStore, queue: multiprocessing.Queue) -> None:
    size = store.head("x.bin").size
    queue.put((size, store._pid == os.getpid()))  # answered by a client made in this process


def test_a_store_used_before_a_fork_works_in_the_forked_child(aws_env: S3Endpoint) -> None:
    """A client is never shared across fork() (pooled connections); the child makes its own and it works."""
    store = open_store(fresh_url(aws_env))
    store.put_bytes("x.bin", b"123")
    assert store.head("x.bin").size == 3  # the parent's client is live when the fork happens
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_head_in_child, args=(store, queue))
    child.start()
    child.join(20)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child's request hung")
    assert child.exitcode == 0 and queue.get(timeout=1) == (3, True)
