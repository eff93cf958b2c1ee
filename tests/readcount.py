"""Whether the filesystem under a folder counts storage reads in ``/proc/self/io``'s read_bytes.

Cold-cache tests assert lower bounds on read_bytes; on a filesystem that never reaches a block
device (tmpfs, some overlays) read_bytes stays 0, and those tests skip with that reason instead.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from streamload.base.procstats import drop_page_cache, read_io

PROBE_PAGES = 64


def require_counted_reads(folder: Path) -> int:
    """Read a fresh file of known size cold; skip when nothing is counted, fail when too little is.

    Returns the page size, for callers that bound their own reads in whole pages.
    """
    page = resource.getpagesize()
    probe = folder / "read-count-probe.bin"
    with open(probe, "wb") as stream:
        stream.write(os.urandom(PROBE_PAGES * page))
        stream.flush()
        os.fsync(stream.fileno())
    drop_page_cache(probe)
    before = read_io().read_bytes
    with open(probe, "rb", buffering=0) as stream:
        assert len(stream.read()) == PROBE_PAGES * page
    counted = read_io().read_bytes - before
    probe.unlink()
    if counted == 0:
        pytest.skip(f"{folder}: its filesystem does not count read_bytes in /proc/self/io")
    assert counted >= PROBE_PAGES * page, f"a cold read of {PROBE_PAGES} pages counted only {counted} bytes"
    return page
