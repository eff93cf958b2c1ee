"""An ordered, bounded map over worker processes, for decoding that is too slow on one core.

Workers are plain ``python -c`` subprocesses that receive pickled tasks on stdin and answer on
stdout. Unlike ``multiprocessing`` (spawn or forkserver), they never re-import the caller's main
script, so a build started from an unguarded script, a notebook or ``python -`` works; unlike fork,
they never inherit the caller's threads (TensorFlow's, the writer's hashing thread).

Memory stays bounded: tasks go round-robin, results are read in task order, and at most two tasks
per worker are in flight, so results cannot pile up while the writer is slower than decoding.
Because a worker's oldest result is read before it is sent another task, a send can only wait on
the worker reading a task it already has; tasks must therefore fit in a pipe buffer
(``MAX_TASK_BYTES``) so that a send never waits on a worker that is itself waiting to be read.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ...base.names import display_name
from ...errors import WorkerError

TASKS_IN_FLIGHT_PER_JOB = 2
MAX_TASK_BYTES = 16 * 2**10  # the smallest default pipe buffer of common systems (macOS); Linux has 64 KiB
_WORKER_MAIN = r"""
import importlib, pickle, sys, traceback
requests, replies = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr  # a stray print must not corrupt the reply stream
sys.path[:] = pickle.load(requests)
functions = {}
try:
    while True:
        try:
            module, name, task = pickle.load(requests)
        except EOFError:
            break
        try:
            if (module, name) not in functions:
                functions[module, name] = getattr(importlib.import_module(module), name)
            reply = (True, functions[module, name](task))
        except Exception:
            reply = (False, traceback.format_exc())
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()
except (KeyboardInterrupt, BrokenPipeError):
    pass
"""


def usable_cpus() -> int:
    """Cores this process may run on (affinity and cpusets included): the default of ``--jobs``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
        self._send(pickle.dumps(sys.path, protocol=pickle.HIGHEST_PROTOCOL))

    def _send(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError as exc:
            raise self._died() from exc

    def submit(self, function: Callable[[Any], Any], task: object) -> None:
        data = pickle.dumps((function.__module__, function.__qualname__, task), protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_TASK_BYTES:
            raise ValueError(f"a task of {function.__qualname__} is larger than {MAX_TASK_BYTES} bytes pickled")
        self._send(data)

    def result(self) -> Any:
        try:
            ok, value = pickle.load(self.process.stdout)
        except (EOFError, pickle.UnpicklingError) as exc:
            raise self._died() from exc
        if not ok:
            last_line = display_name(value.strip().splitlines()[-1])  # a traceback's last line may quote a path
            raise WorkerError(f"worker process {self.process.pid} failed: {last_line}")
        return value

    def _died(self) -> WorkerError:
        status = self.process.wait()
        return WorkerError(f"worker process {self.process.pid} died with exit status {status} "
                           "(killed, or out of memory?); try fewer --jobs")

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except BrokenPipeError:
                pass
        self.process.wait()


def _stop(workers: list[_Worker], kill: bool) -> None:
    while workers:
        workers.pop().stop(kill)


class WorkerPool:
    """Up to ``jobs`` worker processes, started on first use and kept for the next :meth:`map`.

    Sources of one build share a pool, so the workers' start-up (a fresh interpreter importing
    numpy and Pillow, about 0.25 s) is paid once. The workers exit when the pool is closed or
    garbage-collected, or when this process dies (their stdin reaches end of file).
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._workers: list[_Worker] = []
        self._busy = False
        self._finalizer = weakref.finalize(self, _stop, self._workers, True)

    def map(self, function: Callable[[Any], Any], tasks: Iterable[Any], jobs: int | None = None) -> Iterator[Any]:
        """``function(task)`` for every task, in task order, on up to ``jobs`` workers (1: in this process).

        ``function`` must be a module-level function (workers import it by name). Leaving the loop
        early kills the workers it used, whose replies would otherwise be read by the next map.
        """
        jobs = min(self.jobs, jobs or self.jobs)
        if jobs <= 1:
            yield from map(function, tasks)
            return
        if self._busy:  # maps consumed side by side must not share workers: use a pool of their own
            yield from WorkerPool(jobs).map(function, tasks)
            return
        self._busy = True
        while len(self._workers) < jobs:
            self._workers.append(_Worker())
        workers, pending, finished = self._workers[:jobs], deque(), False
        try:
            for number, task in enumerate(tasks):
                worker = workers[number % jobs]
                if len(pending) == TASKS_IN_FLIGHT_PER_JOB * jobs:  # the oldest pending task is this worker's
                    yield pending.popleft().result()
                worker.submit(function, task)
                pending.append(worker)
            while pending:
                yield pending.popleft().result()
            finished = True
        finally:
            self._busy = False
            if not finished:
                _stop(self._workers, kill=True)

    def close(self) -> None:
        """Let the workers exit (they are between tasks, so nothing is lost)."""
        self._finalizer.detach()
        _stop(self._workers, kill=False)
