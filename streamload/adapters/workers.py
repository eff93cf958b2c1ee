"""A worker process that dies under ``fit(use_multiprocessing=True)`` ends ``fit`` with WorkerError, not a hang.

Keras' ``OrderedEnqueuer`` hands each batch request to a ``multiprocessing.Pool`` (``apply_async``)
and waits for every result without a timeout. A worker killed mid-task (SIGKILL, SIGBUS, the OOM
killer) is replaced by the pool, but the result of the task it held never completes, so the parent
waits forever. Here, each worker process notes in a small shared table which batch it is reading
(``+pid`` while reading batch ``i``, ``-pid`` once done), and one daemon thread per parent process
(the watch, started by the first generator with ``use_multiprocessing=True``) looks every
``POLL_SECONDS`` for a worker of a watched generator that died: one caught while reading, or one
whose exit it saw end by a signal or a nonzero status. It then fails every pending result of that
worker's pool with :class:`~streamload.errors.WorkerError`, which Keras' ``enqueuer.get()`` raises
in the thread that feeds ``fit`` (on TensorFlow wrapped in tf.data's ``UnknownError``).

Internals relied on, checked with Keras 3.15 and Python 3.11 (the watch does nothing where one is missing,
so the worst case is the old hang): ``keras.src.trainers.data_adapters.py_dataset_adapter._DATA_POOLS``,
the WeakSet of the pools ``OrderedEnqueuer`` creates, whose ``_initargs[0]`` is Keras' dict of shared
datasets; and of ``multiprocessing.pool.Pool`` (stable since Python 3.8): ``_pool`` (its worker
``Process`` objects), ``_cache`` (job -> ``ApplyResult``), ``_state``, and ``ApplyResult._set(i, (False,
error))``, what the pool itself calls to fail a task. Known limit: a worker killed between taking a
task and noting it, or while sending its finished batch back, is caught only if the watch saw its exit.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import weakref
from multiprocessing.pool import ApplyResult
from pathlib import Path
from typing import Any

import numpy as np

from ..base.process import current_pid
from ..errors import WorkerError

POLL_SECONDS = 0.1


class WorkerRoster:
    """Which worker process read which batch of one generator: one int32 per batch in a shared file."""

    def __init__(self, num_batches: int, directory: Path) -> None:
        self.directory, self.owner = directory, current_pid()
        descriptor, name = tempfile.mkstemp(prefix="streamload-workers-",
                                            dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        with os.fdopen(descriptor, "wb") as stream:
            stream.truncate(4 * max(1, num_batches))
        self.path = Path(name)
        weakref.finalize(self, _remove, self.path, self.owner)
        self._table: np.ndarray | None = None
        self._table_pid: int | None = None

    def reading(self, index: int) -> None:
        """A worker process starts batch ``index`` (the parent's own reads are not noted)."""
        if current_pid() != self.owner:
            self._pids()[index] = current_pid()

    def done(self, index: int) -> None:
        if current_pid() != self.owner:
            self._pids()[index] = -current_pid()

    def workers(self) -> tuple[set[int], set[int]]:
        """(pids of the workers reading a batch now, pids of every worker that read one)."""
        table = np.array(self._pids())
        return set(table[table > 0].tolist()), set(np.abs(table[table != 0]).tolist())

    def forget(self, pid: int) -> None:
        """A dead worker was reported: its entries no longer count."""
        table = self._pids()
        table[np.abs(table) == pid] = 0

    def _pids(self) -> np.ndarray:
        if self._table_pid != current_pid():
            self._table = np.memmap(self.path, dtype=np.int32, mode="r+")
            self._table_pid = current_pid()
        return self._table  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None, "_table_pid": None}  # each process maps its own


def _remove(path: Path, owner: int) -> None:
    if current_pid() == owner:  # a worker's copy being collected must not remove the parent's table
        path.unlink(missing_ok=True)


class _Watch:
    """The parent's daemon thread: finds dead workers of watched generators and fails their pools' results."""

    def __init__(self) -> None:
        self.rosters: weakref.WeakSet[WorkerRoster] = weakref.WeakSet()
        self.processes: dict[int, tuple[Any, weakref.ref]] = {}  # pid -> (Process, its pool)
        self.pid = current_pid()
        threading.Thread(target=self._run, name="streamload-worker-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self.check()
            except (AttributeError, ImportError, TypeError):  # other Keras or Python internals: the old behaviour
                return

    def check(self) -> None:
        for pool in list(_keras_pools()):
            for process in list(pool._pool):
                if getattr(process, "pid", None) is not None:
                    self.processes.setdefault(process.pid, (process, weakref.ref(pool)))
        for roster in list(self.rosters):
            busy, served = roster.workers()
            for pid in served:
                death = _death(pid, self.processes.get(pid, (None,))[0], pid in busy)
                if death is not None:
                    roster.forget(pid)
                    self._fail(roster, pid, death, pid in busy)
        self.processes = {pid: entry for pid, entry in self.processes.items() if entry[1]() is not None}

    def _fail(self, roster: WorkerRoster, pid: int, death: str, busy: bool) -> None:
        error = WorkerError(f"worker process {pid} {death} while reading batches of {roster.directory}; fit cannot "
                            "go on without its batch (a signal from outside, a changed shard or memory running out: "
                            "see the system log)")
        for pool in self._pools_of(pid, roster, busy):
            if pool._state != "TERMINATE":  # terminate() kills its workers on purpose
                for result in list(pool._cache.values()):
                    if type(result) is ApplyResult:
                        try:
                            result._set(0, (False, error))
                        except KeyError:  # completed meanwhile: the pool's own thread removed it
                            pass

    def _pools_of(self, pid: int, roster: WorkerRoster, busy: bool) -> list[Any]:
        """The pool the worker was seen in (none once collected: its workers end by SIGTERM then); else, for a
        worker that died reading a batch, the pools that serve the roster's generator."""
        seen = self.processes.get(pid)
        if seen is not None:
            pool = seen[1]()
            return [] if pool is None else [pool]
        if not busy:
            return []
        return [pool for pool in list(_keras_pools())
                if any(getattr(value, "roster", None) is roster for value in pool._initargs[0].values())]


def _keras_pools() -> Any:
    from keras.src.trainers.data_adapters import py_dataset_adapter

    return getattr(py_dataset_adapter, "_DATA_POOLS", ())


def _death(pid: int, process: Any, busy: bool) -> str | None:
    """How worker ``pid`` died ("died with signal 9 (SIGKILL)"), or None while it lives or when it ended cleanly."""
    code = process.exitcode if process is not None else None
    if code is None:
        try:  # a child not yet reaped: read its status without reaping it (the pool reaps it)
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already, and never seen by the watch
            return "died" if busy and not _exists(pid) else None
        if info is None:
            return None
        code = -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status
    if code < 0:
        return f"died with signal {-code} ({_signal_name(-code)})"
    return f"exited with status {code}" if code or busy else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return "unnamed"


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_WATCH: _Watch | None = None
_WATCH_LOCK = threading.Lock()


def watch(roster: WorkerRoster) -> None:
    """Watch the workers of ``roster``'s generator; starts this process' watch thread on first use."""
    global _WATCH
    with _WATCH_LOCK:
        if _WATCH is None or _WATCH.pid != current_pid():
            _WATCH = _Watch()
        _WATCH.rosters.add(roster)
