"""The sequences benchmark measures what it says: its padding figures are those of the batches really read
and of the offsets on disk, the larger set holds the records repeated, every reading run is a real child,
and a set with nothing ragged is refused in one line naming it. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.report import VIEWS
from benchmarks.sequences import build_repeated, ink_splits, main, markdown
from streamload import ArraySource, BuildOptions, Records, ShardedDataset, build_dataset
from streamload.read.loader import BatchLoader

BATCH = 16
TOP_KEYS = {"command", "options", "source", "machine", "sets", "padding", "memory"}


@pytest.fixture()
def tokens(tmp_path: Path) -> Path:
    """300 records of 1 to 60 int32 tokens, in shards of 128 (so offsets span three files)."""
    rng = np.random.default_rng(7)
    records = [rng.integers(1, 1000, rng.integers(1, 61), dtype=np.int32) for _ in range(300)]
    source = ArraySource(x=Records.from_arrays(records, np.int32), y=rng.integers(0, 3, 300, dtype=np.uint8))
    build_dataset({"train": source}, tmp_path / "tokens", BuildOptions(progress=False, shard_size=128))
    return tmp_path / "tokens"


def rows_read(data: Path, bucket: bool) -> int:
    """Rows of every batch of epoch 0 as BatchLoader hands them out, padding included."""
    loader = BatchLoader(data, batch_size=BATCH, bucket_by_length=bucket, prefetch_batches=0)
    return sum(int(np.prod(loader.load(0, batch)[0]["x"].shape)) for batch in range(loader.num_batches))


def test_a_run_writes_every_figure_and_its_padding_is_that_of_the_batches_read(tokens: Path, tmp_path: Path) -> None:
    out = tmp_path / "sequences.json"
    argv = ["--data", str(tokens), "--work", str(tmp_path / "work"), "--factor", "3", "--batch-size", str(BATCH),
            "--batches", "20", "--rounds", "2", "--json", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert TOP_KEYS <= set(results) and results["command"].endswith(" ".join(argv))
    real = sum(int(np.load(path)[-1]) for path in tokens.rglob("train-*.x.offsets.npy"))
    padding = results["padding"]
    for name, bucket in (("plain", False), ("bucketed", True)):
        assert padding[name]["real_rows"] == real
        assert padding[name]["padded_rows"] == rows_read(tokens, bucket)
    plain, bucketed = padding["plain"]["padded_rows"], padding["bucketed"]["padded_rows"]
    assert bucketed < plain and padding["padded_rows_saved_share"] == pytest.approx(1 - bucketed / plain)
    assert [stats["samples"] for stats in results["sets"].values()] == [300, 900]
    memory = results["memory"]
    assert len(memory["rounds"]) == 2 and {run["polls"] for one in memory["rounds"]
                                           for run in one["results"].values()} != {0}
    read = {"1x": 17 * BATCH + 12 + 2 * BATCH, "3x": 20 * BATCH}  # 1x: batch 18 holds the last 12, then epoch 1
    for name, run in ((name, run) for one in memory["rounds"] for name, run in one["results"].items()):
        assert run["samples"] == read[name] and run["peak_rss_anon"] >= run["baseline_rss_anon"] > 0
        assert run["plain_samples"] == read[name]  # the bound reads the very same batches' records
    assert memory["rss_anon_ratio"]["numerator"] == "3x" and memory["rss_anon_ratio"]["denominator"] == "1x"
    for name, share in memory["of_plain_per_cpu_s"].items():
        assert share == memory["median"]["samples_per_cpu_s"][name] / memory["median"]["plain_samples_per_cpu_s"][name]
    assert memory["plain_samples_per_cpu_s_ratio"]["numerator"] == "3x"
    assert VIEWS[("sequences", None)] is markdown and "Bucketing pads" in markdown(results)
    assert "one bare `os.preadv` each" in markdown(results)


def test_the_larger_set_holds_every_record_repeated_in_order(tokens: Path, tmp_path: Path) -> None:
    small = ShardedDataset(tokens, "train").gather(np.arange(300))
    large = ShardedDataset(build_repeated(tokens, tmp_path / "large", 2), "train").gather(np.arange(600))
    assert large["x"] == Records.concat([small["x"], small["x"]])
    assert np.array_equal(large["y"], np.tile(small["y"], 2))


def test_mnist_ink_records_are_the_inked_pixel_positions(mnist_dir: Path) -> None:
    from streamload.write.sources.mnist import mnist_sources

    test = ink_splits(mnist_dir)["test"]
    images = next(iter(mnist_sources(mnist_dir)["test"].iter_chunks()))["x"]
    records = test.arrays["x"]
    assert len(records) == 10_000 and records.dtype == np.uint16
    for index in (0, 1, len(images) - 1):
        assert np.array_equal(records[index], np.flatnonzero(images[index].ravel() > 127))


def test_a_set_with_nothing_ragged_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flat = tmp_path / "flat"
    build_dataset({"train": ArraySource(x=np.zeros((10, 4), np.float32), y=np.zeros(10, np.uint8))}, flat,
                  BuildOptions(progress=False))
    assert main(["--data", str(flat), "--work", str(tmp_path / "work")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(flat) in error and "varying length" in error
    assert not (tmp_path / "work").exists()


def test_the_step_by_step_script_prints_the_benchmarks_figures(tokens: Path) -> None:
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "sequences_report.py")]
    shown = subprocess.run([*script, "padding", str(tokens), "--batch-size", str(BATCH)], check=True,
                           capture_output=True, text=True).stdout
    assert f"| False | {rows_read(tokens, False):,} |" in shown and f"| True | {rows_read(tokens, True):,} |" in shown
    shown = subprocess.run([*script, "memory", str(tokens), "--batches", "5"], check=True, capture_output=True,
                           text=True).stdout
    assert shown.startswith("300 samples, 5 batches of 64: RssAnon ") and "RssFile" in shown
