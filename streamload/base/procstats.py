"""Honest memory and IO measurement from ``/proc``, for benchmarks and memory tests.

"Peak RSS" alone cannot tell a loader that copies the dataset into its heap from one that maps files
whose pages the kernel may drop at any time, so RSS is split into its anonymous part (heap, which
the process truly owns), its file-backed part (mapped pages, reclaimable) and shared memory.
``read_bytes`` from ``/proc/<pid>/io`` counts what really came from the block device, unlike
``rchar``, which also counts page-cache hits; ``drop_page_cache`` lets a benchmark start cold
without root (no ``/proc/sys/vm/drop_caches``).

Standard library only (Linux): importing this must never pull in TensorFlow or NumPy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import InvalidOptionError

_MEMORY_FIELDS = {"RssAnon": "rss_anon", "RssFile": "rss_file", "RssShmem": "rss_shmem", "VmHWM": "vm_hwm"}
_IO_FIELDS = ("read_bytes", "rchar")


@dataclass(frozen=True)
class MemorySnapshot:
    """Resident memory of a process in bytes; ``vm_hwm`` is the kernel's own peak of total RSS."""

    rss_anon: int
    rss_file: int
    rss_shmem: int
    vm_hwm: int


@dataclass(frozen=True)
class IoSnapshot:
    """Cumulative bytes read: ``read_bytes`` from storage, ``rchar`` through read syscalls (cache too)."""

    read_bytes: int
    rchar: int


def _proc_file(pid: int | None, name: str) -> Path:
    return Path("/proc", "self" if pid is None else str(pid), name)


def _read_proc_text(pid: int | None, name: str) -> str:
    """Read a /proc file, turning a vanished process into ProcessLookupError so callers catch one thing."""
    try:
        return _proc_file(pid, name).read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(f"process {pid} does not exist (no {_proc_file(pid, name)})") from exc


def _byte_fields(text: str, keys: Iterable[str]) -> dict[str, int]:
    """The ``Key: number [kB]`` lines of a /proc file (status, meminfo) named in ``keys``, in bytes."""
    wanted = set(keys)
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            number, _, unit = rest.strip().partition(" ")
            values[key] = int(number) * (1024 if unit.strip() == "kB" else 1)
    return values


def read_memory(pid: int | None = None) -> MemorySnapshot:
    """Parse RssAnon, RssFile, RssShmem and VmHWM of ``pid`` (default: this process) into bytes."""
    fields = _byte_fields(_read_proc_text(pid, "status"), _MEMORY_FIELDS)
    values = {_MEMORY_FIELDS[key]: value for key, value in fields.items()}
    if len(values) != len(_MEMORY_FIELDS):
        # A zombie keeps its status file but loses every memory line: for a sampler it is gone.
        missing = sorted(set(_MEMORY_FIELDS.values()) - set(values))
        raise ProcessLookupError(f"process {pid} has no memory fields {missing} (exited or zombie)")
    return MemorySnapshot(**values)


def read_vm_data(pid: int | None = None) -> int:
    """VmData of ``pid`` in bytes (private writable mappings and heap): what RLIMIT_DATA limits; 0 if absent."""
    return _byte_fields(_read_proc_text(pid, "status"), ["VmData"]).get("VmData", 0)


def read_meminfo(*fields: str) -> dict[str, int]:
    """The named fields of /proc/meminfo (``MemTotal``, ``MemAvailable``...) in bytes; absent ones left out."""
    return _byte_fields(Path("/proc/meminfo").read_text(), fields)


def read_io(pid: int | None = None) -> IoSnapshot:
    """Parse ``read_bytes`` and ``rchar`` of ``pid`` (default: this process) from /proc/<pid>/io."""
    values: dict[str, int] = {}
    for line in _read_proc_text(pid, "io").splitlines():
        key, _, rest = line.partition(":")
        if key in _IO_FIELDS:
            values[key] = int(rest)
    return IoSnapshot(**values)


def _drop_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped by DONTNEED, so write them back first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_page_cache(path: str | os.PathLike) -> None:
    """Evict a file (or every file under a folder) from the page cache so the next read is cold.

    Pages still mapped by a live process are kept by the kernel, so call this when no reader holds
    the files open; the eviction is advisory and per file, unlike the global, root-only drop_caches.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if not root.is_dir():
        _drop_file(root)
        return
    for folder, _dirs, names in os.walk(root):
        for name in names:
            candidate = Path(folder, name)
            if candidate.is_file():  # skips sockets, fifos and dangling links
                _drop_file(candidate)


class PeakMemorySampler:
    """Polls ``read_memory(pid)`` in a daemon thread and keeps the peaks between start() and stop().

    VmHWM already gives the peak of total RSS, but not of its anonymous part, and it cannot be reset,
    so a benchmark that wants "peak heap during this epoch" has to sample. Allocations that live
    shorter than ``interval`` can be missed. If the watched process exits, sampling stops quietly and
    ``exited`` turns true; the peaks seen so far stay available.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.01) -> None:
        if not interval > 0:
            raise InvalidOptionError(f"interval must be a positive number of seconds, got {interval!r}")
        self.pid = pid
        self.interval = interval
        self.exited = False
        self.samples = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak: MemorySnapshot | None = None

    def _sample(self) -> bool:
        """Fold one reading into the peaks; False once the process is gone."""
        try:
            snap = read_memory(self.pid)
        except ProcessLookupError:
            self.exited = True
            return False
        with self._lock:
            old = self._peak or snap
            self._peak = MemorySnapshot(
                rss_anon=max(old.rss_anon, snap.rss_anon),
                rss_file=max(old.rss_file, snap.rss_file),
                rss_shmem=max(old.rss_shmem, snap.rss_shmem),
                vm_hwm=snap.vm_hwm,
            )
            self.samples += 1
        return True

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval):
            if not self._sample():
                return

    def start(self) -> PeakMemorySampler:
        """Take a first reading now (raises ProcessLookupError for a missing pid), then poll."""
        if self._thread is not None:
            raise RuntimeError("PeakMemorySampler is already running; create a new one per measurement")
        if not self._sample():
            raise ProcessLookupError(f"process {self.pid} does not exist")
        self._thread = threading.Thread(target=self._run, name="PeakMemorySampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> MemorySnapshot:
        """Stop polling after one last reading and return the peaks."""
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            if not self.exited:
                self._sample()
        return self.peak

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def peak(self) -> MemorySnapshot:
        """Peak rss_anon, rss_file and rss_shmem seen so far, with the latest VmHWM."""
        with self._lock:
            if self._peak is None:
                raise RuntimeError("no sample yet: call start() first")
            return self._peak

    def __enter__(self) -> PeakMemorySampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
