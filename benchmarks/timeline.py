"""A measured child, looked at from outside every second: what it delivered, read and held, and the machine.

Each reading takes the child's sample counter (an 8-byte file it updates per batch), its
``read_bytes`` (``/proc/<pid>/io``: bytes that came from the block device, every thread counted),
RssAnon and RssFile (``/proc/<pid>/status``), the machine's MemAvailable and page cache
(``/proc/meminfo`` Cached) and, for a child in a memory cgroup, the group's usage. A second,
faster poller (:class:`~streamload.base.procstats.PeakMemorySampler`) keeps the peaks between readings.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamload.base.procstats import PeakMemorySampler, read_io, read_meminfo, read_memory

from .cgroups import MemoryCgroup

Result = dict[str, Any]
FIELDS = ("seconds", "samples", "read_bytes", "rss_anon", "rss_file", "mem_available", "page_cache", "cgroup_usage")


def read_counter(path: Path) -> int:
    with open(path, "rb") as stream:
        return int(np.frombuffer(stream.read(8), dtype=np.int64)[0])


class Timeline:
    """Readings of one process every ``interval`` seconds, from ``start()`` until it exits or ``stop()``."""

    def __init__(self, pid: int, counter: Path | None, interval: float = 1.0, group: MemoryCgroup | None = None,
                 on_reading: Callable[[Result], None] = lambda _: None) -> None:
        self.pid, self.counter, self.interval, self.group, self.on_reading = pid, counter, interval, group, on_reading
        self.readings: list[Result] = []
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def reading(self) -> Result | None:
        """One reading now; None once the process is gone."""
        try:
            memory, io = read_memory(self.pid), read_io(self.pid)
        except (ProcessLookupError, PermissionError):
            return None
        machine = read_meminfo("MemAvailable", "Cached")
        return {"seconds": time.perf_counter() - self._started,
                "samples": read_counter(self.counter) if self.counter is not None else 0,
                "read_bytes": io.read_bytes, "rss_anon": memory.rss_anon, "rss_file": memory.rss_file,
                "mem_available": machine.get("MemAvailable", 0), "page_cache": machine.get("Cached", 0),
                "cgroup_usage": self.group.read("usage") if self.group is not None else None}

    def _run(self) -> None:
        while True:
            found = self.reading()
            if found is None:
                return
            self.readings.append(found)
            self.on_reading(found)
            if self._stop.wait(self.interval):
                return

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        self._thread.join()
        return self.readings


def rates(readings: list[Result]) -> list[Result]:
    """Per interval: samples/s and storage MB/s between consecutive readings."""
    out = []
    for before, after in zip(readings, readings[1:]):
        span = after["seconds"] - before["seconds"]
        if span > 0:
            out.append({"seconds": after["seconds"], "samples_per_s": (after["samples"] - before["samples"]) / span,
                        "read_bytes_per_s": (after["read_bytes"] - before["read_bytes"]) / span})
    return out


def run_watched(command: list[str], log: IO[bytes], env: dict[str, str], counter: Path | None = None,
                group: MemoryCgroup | None = None, interval: float = 1.0,
                on_reading: Callable[[Result], None] = lambda _: None) -> Result:
    """Run ``command`` to its end with a Timeline and a 20 ms peak poller: status, wall seconds, readings, peaks."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    timeline = Timeline(child.pid, counter, interval, group, on_reading).start()
    try:
        peaks = PeakMemorySampler(child.pid, 0.02).start()
    except ProcessLookupError:
        peaks = None
    try:
        returncode = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        timeline.stop()
    wall = time.perf_counter() - started
    peak = peaks.stop() if peaks is not None else None
    sampled = [reading["rss_anon"] for reading in timeline.readings]
    return {"returncode": returncode, "wall_seconds": wall, "timeline": timeline.readings,
            "rates": rates(timeline.readings),
            "peak_rss_anon": max([peak.rss_anon if peak else 0, *sampled]),
            "peak_rss_file": max([peak.rss_file if peak else 0, *(r["rss_file"] for r in timeline.readings)]),
            "min_mem_available": min((r["mem_available"] for r in timeline.readings), default=None),
            "max_page_cache": max((r["page_cache"] for r in timeline.readings), default=None)}
