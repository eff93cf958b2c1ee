"""BatchStream: where request i of a pass lies in the stream, when a pass is complete, and the request
table shared with real worker processes (fork and spawn). Keras itself is exercised in test_generator.py."""

import multiprocessing
import os

import pytest

from streamload.read.epochs import BatchStream, StreamPoint


def stream(num_batches: int = 10, samples: int = 1000, batch: int = 100, drop: bool = False, **kw) -> BatchStream:
    return BatchStream(num_batches, samples, batch, drop, **kw)


def test_passes_map_to_epochs_in_order() -> None:
    s = stream()
    assert [s.where(i) for i in (0, 9)] == [(0, 0, 0), (0, 9, 0)]
    s.set_pass(2)
    assert s.where(3) == (2, 3, 0)


def test_a_resumed_stream_finishes_its_epoch_then_continues_with_whole_epochs() -> None:
    s = stream(num_batches=10, samples=950, batch=100)  # the last batch of an epoch holds 50
    s.restart(StreamPoint(4, 320))  # 630 samples of epoch 4 left: 7 batches, the last of 30
    assert s.first_batches == 7
    assert [s.where(i) for i in (0, 6, 7, 9)] == [(4, 0, 320), (4, 6, 320), (5, 0, 0), (5, 2, 0)]
    s.set_pass(1)
    assert s.where(0) == (5, 3, 0)
    assert s.point(7) == StreamPoint(5, 0) and s.point(3) == StreamPoint(4, 620)
    assert s.batches_before(6) == 17 and s.batches_before(4) == 0


def test_drop_remainder_counts_only_whole_batches() -> None:
    s = stream(num_batches=9, samples=900, batch=100, drop=True)
    s.restart(StreamPoint(0, 250))
    assert s.first_batches == 6  # 650 samples left: 6 whole batches


def test_a_pass_ends_only_when_every_batch_was_requested() -> None:
    s = stream(num_batches=4)
    for i in (0, 1):  # a probe: Keras reads batches 0 and 1 for the output signature
        s.locate(i)
    assert not s.end_pass() and s.pass_number == 0
    for i in (3, 2, 1, 0):  # a real epoch, in any order
        s.locate(i)
    assert s.end_pass() and s.pass_number == 1
    s.locate(0)
    assert not s.end_pass()  # the previous pass's requests do not count for this one


def test_the_served_prefix_counts_the_batches_requested_in_order_up_to_the_first_gap() -> None:
    s = stream(num_batches=6)
    assert s.served_prefix() == 0
    for i in (0, 1, 2, 4):
        s.locate(i)
    assert s.served_prefix() == 3  # batch 4 was read, but batch 3 was not: a state claims 0..2 only
    s.locate(3)
    assert s.served_prefix() == 5
    s.locate(5)
    assert s.served_prefix() == 6 and s.end_pass()
    assert s.served_prefix() == 0  # a new pass: the last pass's requests do not count


def _serve(s: BatchStream, indices: list[int]) -> None:
    for index in indices:
        s.locate(index)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_requests_in_worker_processes_reach_the_parent(method: str) -> None:
    s = stream(num_batches=6, shared=True)
    context = multiprocessing.get_context(method)
    workers = [context.Process(target=_serve, args=(s, part)) for part in ([0, 2, 4], [1, 3])]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert not s.end_pass()  # batch 5 missing
    assert s.served_prefix() == 5  # what the workers served, seen by the parent
    worker = context.Process(target=_serve, args=(s, [5]))
    worker.start()
    worker.join(timeout=60)
    assert s.end_pass() and s.pass_number == 1


def test_the_shared_table_is_removed_with_its_stream_only_by_its_owner() -> None:
    s = stream(shared=True)
    path = s._path
    pid = os.fork()
    if pid == 0:  # a forked worker's copy is collected: the parent's table must survive
        del s
        os._exit(0)
    os.waitpid(pid, 0)
    assert path.exists()
    del s
    assert not path.exists()
