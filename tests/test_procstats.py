"""procstats must tell heap from mapped file pages, and cold reads from page-cache hits."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamload.base.procstats import (
    MemorySnapshot,
    PeakMemorySampler,
    drop_page_cache,
    read_io,
    read_meminfo,
    read_memory,
    read_vm_data,
)
from streamload.errors import InvalidOptionError

MB = 1 << 20
NO_SUCH_PID = 2**31 - 1  # above any pid_max, so /proc/<pid> cannot exist

# Prints how many bytes this process read from storage while reading the file argv[1] to the end.
# With argv[2] == "direct" it reads with O_DIRECT, which bypasses the page cache by construction:
# that tells whether the filesystem accounts read_bytes at all, independently of drop_page_cache.
READER = r"""
import mmap, os, sys

def read_bytes():
    for line in open("/proc/self/io"):
        if line.startswith("read_bytes:"):
            return int(line.split()[1])

flags = os.O_RDONLY | (os.O_DIRECT if sys.argv[2] == "direct" else 0)
try:
    fd = os.open(sys.argv[1], flags)
except OSError as exc:
    print("unsupported", exc)
    sys.exit(0)
buf = mmap.mmap(-1, 1 << 20)  # page aligned, as O_DIRECT requires
before = read_bytes()
try:
    while os.readv(fd, [buf]):
        pass
except OSError as exc:
    print("unsupported", exc)
    sys.exit(0)
print(read_bytes() - before)
"""


def _write_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = np.full(8 * MB, 7, dtype=np.uint8).tobytes()
    with open(path, "wb") as out:
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return path


def _bytes_read_by_child(path: Path, mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", READER, str(path), mode], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_read_memory_and_io_follow_what_this_process_does(tmp_path: Path) -> None:
    before = read_memory()
    assert isinstance(before, MemorySnapshot)
    block = np.ones(32 * MB, dtype=np.uint8)  # written, so resident and anonymous
    after = read_memory(os.getpid())
    assert after.rss_anon - before.rss_anon >= 31 * MB and after.vm_hwm >= after.rss_anon + after.rss_file
    del block
    path = tmp_path / "read-me"
    path.write_bytes(b"x" * MB)
    start = read_io()
    assert len(path.read_bytes()) == MB
    assert read_io().rchar - start.rchar >= MB  # rchar counts every byte read through read(2), cached or not


def test_vm_data_grows_with_a_heap_allocation_and_meminfo_fields_are_bytes() -> None:
    before = read_vm_data()
    array = np.ones(64 * MB, dtype=np.uint8)
    assert read_vm_data() - before >= 60 * MB and read_vm_data(os.getpid()) >= 64 * MB
    del array
    meminfo = read_meminfo("MemTotal", "MemAvailable", "NoSuchField")
    assert set(meminfo) == {"MemTotal", "MemAvailable"}
    assert 0 < meminfo["MemAvailable"] <= meminfo["MemTotal"]
    assert meminfo["MemTotal"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # kB turned into bytes


def test_missing_pid_raises_process_lookup_error() -> None:
    with pytest.raises(ProcessLookupError):
        read_memory(NO_SUCH_PID)
    with pytest.raises(ProcessLookupError):
        read_io(NO_SUCH_PID)
    with pytest.raises(ProcessLookupError):
        PeakMemorySampler(NO_SUCH_PID).start()


def test_heap_allocation_shows_in_rss_anon_not_rss_file() -> None:
    before = read_memory()
    array = np.ones(200 * MB, dtype=np.uint8)  # ones, not zeros: every page must be touched
    after = read_memory()
    assert after.rss_anon - before.rss_anon >= 150 * MB
    assert after.rss_file - before.rss_file < 50 * MB
    del array


def test_memmap_read_shows_in_rss_file_not_rss_anon(tmp_path: Path) -> None:
    path = _write_file(tmp_path / "big.bin", 200 * MB)
    before = read_memory()
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    total = int(mapped.sum(dtype=np.uint64))
    after = read_memory()
    assert total == 7 * 200 * MB
    assert after.rss_file - before.rss_file >= 150 * MB
    assert after.rss_anon - before.rss_anon < 50 * MB
    del mapped


def test_sampler_catches_a_peak_freed_before_stop() -> None:
    with PeakMemorySampler(interval=0.005) as sampler:
        start = sampler.peak.rss_anon
        array = np.ones(200 * MB, dtype=np.uint8)
        time.sleep(0.1)
        del array
        time.sleep(0.05)
    assert sampler.peak.rss_anon - start >= 150 * MB
    assert read_memory().rss_anon < sampler.peak.rss_anon - 100 * MB  # really freed, not still held
    assert sampler.samples >= 3 and not sampler.running and not sampler.exited


def test_sampler_follows_a_child_and_stops_when_it_exits() -> None:
    code = "import time; block = bytearray(b'x') * (200 << 20); time.sleep(0.3)"
    child = subprocess.Popen([sys.executable, "-c", code])
    sampler = PeakMemorySampler(child.pid, interval=0.01).start()
    deadline = time.monotonic() + 30
    while sampler.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not sampler.running, "sampler kept running after the child exited"
    assert child.wait(timeout=10) == 0
    assert sampler.exited
    assert sampler.stop().rss_anon >= 150 * MB


def test_sampler_rejects_bad_interval_and_reports_no_peak_before_start() -> None:
    with pytest.raises(InvalidOptionError):
        PeakMemorySampler(interval=0)
    with pytest.raises(RuntimeError):
        _ = PeakMemorySampler().peak


@pytest.mark.parametrize("target", ["file", "folder"])
def test_drop_page_cache_makes_the_next_read_cold(tmp_path: Path, target: str) -> None:
    size = 64 * MB
    probe = _write_file(tmp_path / "probe.bin", size)
    direct = _bytes_read_by_child(probe, "direct")
    if direct.startswith("unsupported") or int(direct) == 0:
        pytest.skip(
            f"the filesystem under {tmp_path} does not account read_bytes in /proc/self/io "
            f"(an O_DIRECT read of {size} bytes reported {direct!r}; typical of tmpfs or overlay)"
        )
    data = _write_file(tmp_path / "nested" / "deeper" / "data.bin", size)
    drop_page_cache(data if target == "file" else tmp_path)
    assert int(_bytes_read_by_child(data, "buffered")) >= size


def test_drop_page_cache_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        drop_page_cache(tmp_path / "absent")


def test_procstats_imports_only_the_standard_library() -> None:
    """Checked on the source, since the package's own __init__ may import numpy for other modules."""
    import streamload.base.procstats as procstats

    tree = ast.parse(Path(procstats.__file__).read_text())
    imported: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            (relative if node.level else imported).add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    assert relative <= {"errors"}


def test_importing_procstats_does_not_import_tensorflow() -> None:
    code = "import sys, streamload.base.procstats; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
