"""Tests for streamload.read.file_watch: inotify says whether a watched shard file changed (writes, cuts and
touches, or writes alone for the cache's copies), a renamed-over name is not watched, and the open-file limit
is raised for many shards. The dataset-level behaviour is in test_dataset.py."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from streamload.read.file_watch import ChangeWatch


class _Files:
    """A stand-in for a shard reader's ``files()``: the real files, opened for real."""

    def __init__(self, *paths: Path) -> None:
        self.opened = [(path, os.open(path, os.O_RDONLY)) for path in paths]

    def files(self) -> list[tuple[Path, int]]:
        return self.opened


def _shard(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"\x01" * 4096)
    return path


@pytest.mark.parametrize("change", ["write", "cut", "touch"])
def test_any_change_ends_quiet_for_good(tmp_path: Path, change: str) -> None:
    first, second = _shard(tmp_path, "a.npy"), _shard(tmp_path, "b.npy")
    watch = ChangeWatch()
    assert watch.watch(_Files(first, second)) and watch.quiet() and watch.quiet()
    if change == "write":
        with open(second, "r+b") as stream:
            stream.write(b"\0")
    elif change == "cut":
        os.truncate(second, 100)
    else:
        os.utime(second, ns=(0, 0))
    assert not watch.quiet() and not watch.quiet()
    assert not watch.watch(_Files(first))  # once changed, readers check every read themselves


def test_the_cache_watch_ignores_touches_but_not_writes(tmp_path: Path) -> None:
    path = _shard(tmp_path, "copy.npy")
    watch = ChangeWatch(ChangeWatch.WRITES)
    assert watch.watch(_Files(path))
    os.utime(path, ns=(0, 0))  # the cache's own lease mark
    assert watch.quiet()
    with open(path, "r+b") as stream:
        stream.write(b"\0")
    assert not watch.quiet()


def test_a_name_that_no_longer_leads_to_the_open_file_is_not_watched(tmp_path: Path) -> None:
    path = _shard(tmp_path, "a.npy")
    files = _Files(path)
    os.replace(_shard(tmp_path, "new.npy"), path)
    assert not ChangeWatch().watch(files)


def test_many_shards_raise_the_open_file_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, {hard}))\n"
            "from streamload.read.file_watch import allow_open_files; allow_open_files(3000)\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout) >= min(3000, hard)
