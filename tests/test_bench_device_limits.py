"""Storage limits for the bigger-than-RAM benchmark: pages per sample against a brute-force count, the
random-read measurement's shape with the Python engine, residency after eviction by mincore."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from shards import build

from benchmarks import device_limits
from benchmarks.cold import resident_fraction
from benchmarks.device_limits import pages_per_sample, random_read_limits, row_pages
from streamload.base.procstats import drop_page_cache
from streamload.format.reader import PAGE
from streamload.read.dataset import ShardedDataset


def spanned_pages(row_bytes: int, offset: int, rows: int) -> float:
    """Mean pages a row spans, counted row by row from a file offset (a .npy header's, say)."""
    starts = offset + np.arange(rows, dtype=np.int64) * row_bytes
    return float(((starts + row_bytes - 1) // PAGE - starts // PAGE + 1).mean())


@pytest.mark.parametrize("row_bytes", [784, 3 * 1024, 4096, 5000, 100])
@pytest.mark.parametrize("offset", [0, 128, 4000])
def test_row_pages_is_the_mean_span_of_a_row(row_bytes: int, offset: int) -> None:
    period = PAGE // np.gcd(row_bytes, PAGE)
    assert row_pages(row_bytes, offset) == pytest.approx(spanned_pages(row_bytes, offset, 7 * period))


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_pages_per_sample_counts_rows_where_they_lie_and_labels_whole(tmp_path: Path, fmt: str) -> None:
    directory, _ = build(tmp_path, 1000, fmt, 300)
    dataset = ShardedDataset(directory)
    counted = pages_per_sample(dataset)
    assert counted["arrays"]["y"]["pages"] == 1 / PAGE  # one byte a label, its share of a page read whole
    offsets = [dataset.reader(n).ranges("x", np.array([0])).starts[0] for n in range(4)]  # the readers' own
    sizes = [shard.num_samples for shard in dataset.info.shards]
    expected = sum(size * spanned_pages(784, int(offset), 256 * 4) for size, offset in zip(sizes, offsets)) / 1000
    assert counted["arrays"]["x"]["pages"] == pytest.approx(expected)


def test_python_engine_measures_every_depth_and_the_page_cache_path(tmp_path: Path) -> None:
    files = []
    for index in range(3):
        path = tmp_path / f"part-{index}.bin"
        path.write_bytes(os.urandom(64 * PAGE))
        files.append(path)
    limits = random_read_limits(files, (1, 4), seconds=0.2, engine="python")
    assert limits["engine"] == "python" and limits["files"] == 3
    assert set(limits["iops"]) == {"1", "4", "buffered-64"} and min(limits["iops"].values()) > 0


def test_a_filesystem_refusing_o_direct_is_measured_through_evicted_files(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "part.bin"
    path.write_bytes(os.urandom(64 * PAGE))
    monkeypatch.setattr(device_limits, "_direct_io_works", lambda _path: False)  # as on tmpfs before Linux 6.6
    limits = random_read_limits([path], (1, 4), seconds=0.2, engine="python")
    assert "refuses O_DIRECT" in limits["described"] and min(limits["iops"].values()) > 0


def test_resident_fraction_is_zero_after_eviction_and_one_after_a_read(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(256 * PAGE))
    drop_page_cache(path)
    assert resident_fraction([path]) == 0.0
    path.read_bytes()
    assert resident_fraction([path]) == 1.0
