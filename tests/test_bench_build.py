"""The build benchmark must time what it claims: every byte written, real children, honest ratios."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from benchmarks.build_bench import (
    MB,
    augmented_build_benchmark,
    main,
    parse_args,
    summarize_rounds,
    tiled_mnist,
    time_build,
    time_np_save,
)
from streamload.format.manifest import read_manifest
from streamload.places.layout import shard_root
from streamload.read.dataset import ShardedDataset
from streamload.write.sources.idx import read_idx, write_idx

TRAIN, TEST = 300, 50


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    """A tiny MNIST in the IDX layout, so the test needs neither the real files nor a download."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, count in (("train", TRAIN), ("t10k", TEST)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count, dtype=np.uint8))
    return folder


def test_tiled_mnist_repeats_the_training_digits_cyclically(mnist_dir: Path) -> None:
    x, y, description = tiled_mnist(mnist_dir, mb=1)
    base_x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    base_y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    assert len(x) == len(y) == MB // (28 * 28 + 1)
    index = np.arange(len(x)) % TRAIN
    np.testing.assert_array_equal(x, base_x[index])
    np.testing.assert_array_equal(y, base_y[index])
    assert "train-images" in description


def test_np_save_and_builds_write_every_byte(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 1000, dtype=np.uint8)
    saved = time_np_save(x, y, tmp_path / "np")
    np.testing.assert_array_equal(np.load(tmp_path / "np" / "x.npy"), x)
    np.testing.assert_array_equal(np.load(tmp_path / "np" / "y.npy"), y)
    on_disk = sum(path.stat().st_size for path in (tmp_path / "np").iterdir())
    assert saved["np.save"]["bytes"] == saved["np.save+fsync"]["bytes"] == on_disk
    for figures in saved.values():
        assert figures["mb_per_s"] == pytest.approx(on_disk / MB / figures["seconds"])
    for fmt in ("npy", "hdf5"):
        (result,) = time_build(x, y, tmp_path / fmt, fmt).values()
        root = shard_root(tmp_path / fmt, read_manifest(tmp_path / fmt))
        shards = [path for path in root.iterdir() if path.name not in ("manifest.json", ".lock")]
        assert result["bytes"] == sum(path.stat().st_size for path in shards) >= x.nbytes + y.nbytes
        assert result["mb_per_s"] == pytest.approx(result["bytes"] / MB / result["seconds"])
        back = ShardedDataset(tmp_path / fmt).gather(np.arange(len(x)))
        np.testing.assert_array_equal(back["x"], x)
        np.testing.assert_array_equal(back["y"], y)


def _round(rates: dict[str, float]) -> dict[str, object]:
    return {"order": list(rates), **{name: {"mb_per_s": rate} for name, rate in rates.items()}}


def test_summary_reports_medians_spreads_and_ratios_of_medians() -> None:
    rounds = [_round({"np.save": 1000, "np.save+fsync": 400, "streamload npy": 300}),
              _round({"np.save": 3000, "np.save+fsync": 100, "streamload npy": 100}),
              _round({"np.save": 2000, "np.save+fsync": 300, "streamload npy": 200})]
    summary = summarize_rounds(rounds)
    assert summary["median_mb_per_s"] == {"np.save": 2000, "np.save+fsync": 300, "streamload npy": 200}
    assert summary["min_max_mb_per_s"]["np.save"] == [1000, 3000]
    assert summary["ratios"] == {"streamload npy": {"np.save": 0.1, "np.save+fsync": pytest.approx(2 / 3)}}
    # per-round ratios to np.save+fsync are 0.75, 1.0 and 0.67: their median is not the ratio of medians
    assert summary["paired_ratio_median"]["streamload npy"] == {"np.save": 0.1, "np.save+fsync": 0.75}
    assert summary["goal_met"] == {"streamload npy": {"np.save": False, "np.save+fsync": True}}


def test_main_writes_every_figure_and_cleans_up(tmp_path: Path, mnist_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    workdir, report = tmp_path / "work", tmp_path / "out" / "bench.json"
    argv = ["--source", str(mnist_dir), "--workdir", str(workdir), "--mb", "2", "--rounds", "2", "--warmup", "1",
            "--augment-to", "2000", "--json", str(report)]
    assert main(argv) == 0
    results = json.loads(report.read_text())
    assert {"nproc", "total_ram_bytes", "python", "numpy", "h5py"} <= set(results["machine"])
    throughput = results["throughput"]
    assert len(throughput["rounds"]) == 2 and len(throughput["warmup_rounds"]) == 1
    assert throughput["samples"] == 2 * MB // 785
    names = {"np.save", "np.save+fsync", "streamload npy", "streamload hdf5"}
    rates = {name: [one[name]["mb_per_s"] for one in throughput["rounds"]] for name in names}
    assert throughput["median_mb_per_s"] == {name: statistics.median(values) for name, values in rates.items()}
    assert throughput["min_max_mb_per_s"] == {name: [min(values), max(values)] for name, values in rates.items()}
    for one in throughput["rounds"]:  # every contender wrote at least the tiled arrays, np.save's two headers aside
        assert one["np.save"]["bytes"] == one["np.save+fsync"]["bytes"] > throughput["source_bytes"]
        assert min(one["streamload npy"]["bytes"], one["streamload hdf5"]["bytes"]) >= throughput["source_bytes"]
    assert set(throughput["ratios"]) == {"streamload npy", "streamload hdf5"}
    assert [sorted(r["order"]) for r in throughput["rounds"]] == [["hdf5", "np.save", "npy"]] * 2
    assert throughput["rounds"][0]["order"] != throughput["rounds"][1]["order"]  # the order rotates
    built = results["augmented_build"]
    assert built["train_samples"] == 2000 and built["all_samples"] == 2000 + TEST
    assert built["peak"]["polls"] >= 1 and built["goal_met"] is (built["peak"]["rss_anon"] < 10**9)
    manifest = read_manifest(workdir / "mnist8m")
    shards = [shard_root(workdir / "mnist8m", manifest) / info.name for split in manifest.splits.values()
              for shard in split.shards for info in shard.files.values()]
    assert built["dataset_bytes"] == sum(path.stat().st_size for path in shards) >= (2000 + TEST) * 785
    assert len(ShardedDataset(workdir / "mnist8m")) == 2000
    assert sorted(path.name for path in workdir.iterdir()) == ["mnist8m"]  # throughput outputs deleted
    table = capsys.readouterr().out
    assert "| streamload hdf5 |" in table and "| 2,000 |" in table


def test_a_failing_build_is_reported_with_its_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing: no such file or folder"):
        augmented_build_benchmark(tmp_path, 100, "npy", tmp_path / "missing")


@pytest.mark.parametrize("option", [["--mb", "0"], ["--rounds", "0"], ["--augment-to", "-1"], ["--warmup", "-1"]])
def test_rejects_non_positive_sizes(option: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(option)
