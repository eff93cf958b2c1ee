"""Tests for streamload.write.sources.parallel: real worker processes keep task order, never run far ahead of
the consumer, report a worker's exception or death as one clear error, and leave no process behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from streamload.errors import WorkerError
from streamload.write.sources.parallel import MAX_TASK_BYTES, TASKS_IN_FLIGHT_PER_JOB, WorkerPool


def square_with_pid(value: int) -> tuple[int, int]:
    """Module-level, so the worker processes can import it by name."""
    return value * value, os.getpid()


def fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError(f"cannot take {value}")
    return value


def die_on_two(value: int) -> int:
    if value == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def big_array(value: int) -> np.ndarray:
    return np.full(300_000, value, dtype=np.int64)  # 2.4 MB: far more than a pipe buffer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_results_come_in_task_order_from_several_processes() -> None:
    pool = WorkerPool(3)
    results = list(pool.map(square_with_pid, range(40)))
    assert [square for square, _ in results] == [n * n for n in range(40)]
    workers = {pid for _, pid in results}
    assert len(workers) == 3 and os.getpid() not in workers
    assert [square for square, _ in pool.map(square_with_pid, range(5))] == [0, 1, 4, 9, 16]  # workers reused
    pool.close()
    assert not any(_alive(pid) for pid in workers)


def test_one_job_runs_in_this_process() -> None:
    assert {pid for _, pid in WorkerPool(1).map(square_with_pid, range(4))} == {os.getpid()}


def test_tasks_are_not_drawn_far_ahead_of_the_consumer() -> None:
    drawn = []

    def tasks() -> Iterator[int]:
        for number in range(30):
            drawn.append(number)
            yield number

    pool = WorkerPool(2)
    for received, array in enumerate(pool.map(big_array, tasks())):
        assert array[0] == received
        assert len(drawn) - (received + 1) <= TASKS_IN_FLIGHT_PER_JOB * 2  # results cannot pile up
    pool.close()


def test_a_worker_exception_is_reported_with_its_message() -> None:
    with pytest.raises(WorkerError, match="failed: ValueError: cannot take 3"):
        list(WorkerPool(2).map(fail_on_three, range(6)))


def test_a_killed_worker_is_reported_and_the_others_are_stopped() -> None:
    pool = WorkerPool(2)
    pids = {pid for _, pid in pool.map(square_with_pid, range(4))}
    with pytest.raises(WorkerError, match="died with exit status -9"):
        list(pool.map(die_on_two, range(6)))
    assert not any(_alive(pid) for pid in pids)


def test_leaving_a_map_early_kills_its_workers_and_the_next_map_starts_fresh() -> None:
    pool = WorkerPool(2)
    results = pool.map(square_with_pid, range(100))
    first_pid = next(results)[1]
    results.close()
    assert not _alive(first_pid)
    assert [square for square, _ in pool.map(square_with_pid, range(3))] == [0, 1, 4]
    pool.close()


def test_a_task_too_big_for_a_pipe_buffer_is_refused() -> None:
    """A send must never wait on a worker that waits to be read: tasks fit in a pipe buffer."""
    with pytest.raises(ValueError, match=f"larger than {MAX_TASK_BYTES} bytes pickled"):
        list(WorkerPool(2).map(square_with_pid, [1, "x" * MAX_TASK_BYTES]))
