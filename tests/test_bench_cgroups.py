"""Memory cgroups for the benchmarks: a child really runs inside the group, its page cache is held under
the limit the kernel reports, the group is gone afterwards. Skipped where no group can be made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cgroups import MemoryCgroup, find_parent
from streamload.base.procstats import drop_page_cache

MIB = 2**20


@pytest.fixture()
def parent():  # noqa: ANN201 - a CgroupParent
    found, reason = find_parent()
    if found is None:
        assert reason  # no group here: the reason says why, for the benchmark's report
        pytest.skip(f"no writable memory cgroup: {reason}")
    return found


def test_a_child_runs_inside_the_group_and_the_group_is_removed(parent) -> None:  # noqa: ANN001
    with MemoryCgroup(parent, "streamload-test", 64 * MIB) as group:
        assert group.read("limit") == 64 * MIB
        output = subprocess.run(group.command(["cat", "/proc/self/cgroup"]), check=True, capture_output=True,
                                text=True).stdout
        relative = str(group.path.relative_to(parent.path.parent))
        assert any(line.endswith(relative) for line in output.splitlines())  # the kernel's own account
    assert not group.path.exists()


def test_the_page_cache_a_child_reads_stays_under_the_limit(parent, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "big.bin"
    with open(data, "wb") as stream:
        for _ in range(96):
            stream.write(os.urandom(MIB))
    drop_page_cache(data)
    code = (f"stream, chunk = open({str(data)!r}, 'rb', buffering=0), bytearray({MIB})\n"
            "while stream.readinto(chunk):\n    pass")  # 1 MiB of heap: the rest is page cache
    with MemoryCgroup(parent, "streamload-test", 48 * MIB) as group:
        subprocess.run(group.command([sys.executable, "-c", code]), check=True)
        peak = group.read("peak")
        cache = group.page_cache()
    assert cache is not None and cache <= 48 * MIB  # 96 MiB read, never more than the limit kept
    if peak is not None:
        assert peak <= 48 * MIB
