"""The memory benchmark must measure what it claims: the same batches from every loader, real children,
in-RAM peaks that scale with the data, skips instead of crashes, and MemoryError under a hard cap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shards import build

from benchmarks.memory_bench import (
    GB,
    dataset_dir,
    evaluate_goals,
    in_ram_bytes,
    main,
    memory_estimate,
    variants,
)
from benchmarks.memory_child import main as child_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {"size", "loader", "api", "dataset", "status", "reason", "returncode", "wall_seconds", "child", "peak",
            "baseline_rss_anon", "increment_rss_anon"}
PEAK_KEYS = {"rss_anon", "rss_file", "vm_hwm", "polls", "poll_interval_s"}


def _prebuilt(workdir: Path, size: int, formats: tuple[str, ...] = ("npy", "hdf5")) -> dict[str, np.ndarray]:
    """Synthetic datasets where the benchmark looks for its own, so it reuses them instead of building."""
    arrays: dict[str, np.ndarray] = {}
    for fmt in formats:
        _, arrays = build(workdir, size, fmt, name=f"mnist-{size}-{fmt}")
    return arrays


def test_variants_keep_the_tutorial_on_keras_and_ram_keras_free() -> None:
    assert variants("tutorial", ["plain"]) == ["keras"]
    assert variants("ram", ["keras"]) == ["plain"]
    assert variants("npy", ["keras", "plain"]) == ["plain", "keras"]
    assert variants("hdf5", ["keras"]) == ["keras"]


def test_in_ram_need_is_float32_for_the_tutorial_and_stored_bytes_for_ram(tmp_path: Path) -> None:
    folder, _ = build(tmp_path, 1000, "npy")
    assert in_ram_bytes(folder, "tutorial") == 1000 * (28 * 28 * 4 + 1)
    assert in_ram_bytes(folder, "ram") == 1000 * (28 * 28 + 1)
    assert memory_estimate(folder, "ram", "plain", headroom=0) is None
    assert memory_estimate(folder, "npy", "plain", headroom=10**6 * GB) is None  # streaming is never skipped
    skip = memory_estimate(folder, "tutorial", "keras", headroom=10**6 * GB)
    assert skip is not None and skip["need_bytes"] > in_ram_bytes(folder, "tutorial")
    assert skip["reason"].startswith("needs ") and " GB, have " in skip["reason"]


def test_dataset_dir_reuses_only_a_matching_complete_dataset(tmp_path: Path) -> None:
    other, _ = build(tmp_path, 300, "npy", name="elsewhere")
    own, _ = build(tmp_path, 200, "npy", name="mnist-200-npy")
    build(tmp_path, 200, "hdf5", name="mnist-200-hdf5")
    assert dataset_dir(300, "npy", tmp_path, [other], None) == other
    assert dataset_dir(200, "npy", tmp_path, [other], None) == own  # wrong size: not reused
    assert dataset_dir(200, "hdf5", tmp_path, [own], None) == tmp_path / "mnist-200-hdf5"  # wrong format


@pytest.mark.parametrize("loader,fmt", [("ram", "npy"), ("npy", "npy"), ("hdf5", "hdf5")])
def test_child_pass_sees_every_sample_once(tmp_path: Path, loader: str, fmt: str) -> None:
    folder, arrays = build(tmp_path, 1000, fmt)
    result_path = tmp_path / "result.json"
    status = child_main(["--loader", loader, "--api", "plain", "--data", str(folder), "--batch-size", "64",
                         "--result", str(result_path)])
    result = json.loads(result_path.read_text())
    assert status == 0 and result["phase"] == "done" and result["error"] is None
    assert (result["batches"], result["samples"]) == (16, 1000)  # 15 full batches and one of 40
    assert result["checksum"]["labels"] == int(arrays["y"].sum())  # a permutation: every label once
    expected_pixels = float((arrays["x"] / np.float32(255)).sum(dtype=np.float64))
    assert result["checksum"]["pixels"] == pytest.approx(expected_pixels, rel=1e-12)
    assert set(result["memory"]) == {"baseline", "loaded", "end"}


def test_skipped_configuration_is_reported_not_run(tmp_path: Path) -> None:
    _prebuilt(tmp_path, 2000, ("npy",))
    results_path = tmp_path / "results.json"
    status = main(["--sizes", "2000", "--loaders", "ram", "npy", "--apis", "plain", "--out", str(tmp_path),
                   "--reuse", "--headroom-gb", "1000000", "--json", str(results_path), "--quiet"])
    results = json.loads(results_path.read_text())
    assert status == 0
    ram, npy = results["runs"]
    assert ram["status"] == "skipped" and "child" not in ram
    assert ram["reason"].startswith("needs ") and " GB, have " in ram["reason"]
    assert npy["status"] == "ok" and npy["child"]["samples"] == 2000
    assert Path(results["plot"]).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_benchmark_shows_streaming_flat_and_in_ram_growing(tmp_path: Path) -> None:
    """20k and 200k samples: the float32 split (630 MB at 200k) dwarfs streamload's few MB."""
    for size in (20_000, 200_000):
        _prebuilt(tmp_path, size)
    results_path = tmp_path / "results.json"
    status = main(["--sizes", "20000", "200000", "--loaders", "tutorial", "ram", "npy", "hdf5", "--apis", "plain",
                   "--max-batches", "30", "--out", str(tmp_path), "--reuse", "--json", str(results_path), "--quiet"])
    results = json.loads(results_path.read_text())
    assert status == 0 and set(results) == {"machine", "options", "runs", "goals", "plot"}
    runs = {(run["size"], run["loader"]): run for run in results["runs"]}
    assert len(runs) == 8
    for run in runs.values():
        assert RUN_KEYS <= set(run) and PEAK_KEYS <= set(run["peak"]) and run["status"] == "ok", run["reason"]
        assert run["peak"]["rss_anon"] >= run["baseline_rss_anon"] > 0 and run["peak"]["polls"] >= 1
        assert run["child"]["samples"] == 30 * 64
    for size in (20_000, 200_000):  # the same sampler, the same data: the very same batches
        sums = {runs[size, loader]["child"]["checksum"]["pixels"] for loader in ("ram", "npy", "hdf5")}
        assert len(sums) == 1
    big = {loader: runs[200_000, loader]["increment_rss_anon"] for loader in ("tutorial", "ram", "npy", "hdf5")}
    assert big["tutorial"] >= 0.95 * 200_000 * 28 * 28 * 4
    assert big["ram"] >= 0.95 * 200_000 * (28 * 28 + 1)
    assert max(big["npy"], big["hdf5"]) < 50 * 2**20 < big["ram"] < big["tutorial"]
    assert results["goals"]["streamload_flat"] and results["goals"]["generator_alone_under_1gb"]
    assert 2500 < results["goals"]["variants"]["tutorial/keras"]["bytes_per_sample"] < 4000
    assert Path(results["plot"]).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_cap_proof_streams_under_the_cap_where_the_tutorial_cannot_load(tmp_path: Path) -> None:
    """400k samples are 1.25 GB as float32: over a 1 GB RLIMIT_DATA, which TensorFlow and streamload fit under."""
    _prebuilt(tmp_path, 400_000, ("npy",))
    results_path = tmp_path / "cap.json"
    status = main(["--cap-proof", "--cap-gb", "1", "--cap-size", "400000", "--cap-loaders", "npy", "tutorial",
                   "--max-batches", "20", "--out", str(tmp_path), "--reuse", "--json", str(results_path), "--quiet"])
    proof = json.loads(results_path.read_text())["cap_proof"]
    assert status == 0 and proof["proved"]
    npy, tutorial = proof["runs"]
    assert npy["status"] == "ok" and npy["child"]["batches"] == 20 and np.isfinite(npy["child"]["loss"])
    assert npy["child"]["rlimit_data"] == [GB, GB] == tutorial["child"]["rlimit_data"]
    assert tutorial["status"] == "memory_error" and tutorial["child"]["error"]["phase"] == "load"
    assert proof["float32_bytes"] > proof["cap_bytes"]


def test_goals_need_two_sizes_to_judge_growth() -> None:
    run = {"status": "ok", "loader": "npy", "api": "plain", "size": 100, "peak": {"rss_anon": 30 * 2**20}}
    goals = evaluate_goals([run, {**run, "size": 1000, "peak": {"rss_anon": 31 * 2**20}}])
    entry = goals["variants"]["npy/plain"]
    assert entry["growth_bytes"] == 2**20 and entry["growth_goal_met"] and goals["streamload_flat"]
    assert evaluate_goals([run])["variants"]["npy/plain"]["growth_goal_met"] is None
