"""The memory benchmark must measure what it claims: the same batches from every loader, real children,
in-RAM peaks that scale with the data, skips instead of crashes, and MemoryError under a hard cap."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from shards import build

from benchmarks.common import run_sampled
from benchmarks.memory_bench import (
    GB,
    IMPORT_ALLOWANCE,
    article_float32_estimate,
    dataset_dir,
    evaluate_goals,
    in_ram_bytes,
    main,
    memory_estimate,
    variants,
)
from benchmarks.memory_child import main as child_main
from benchmarks.memory_child import run_child

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {"size", "loader", "api", "dataset", "status", "reason", "returncode", "wall_seconds", "child", "peak",
            "baseline_rss_anon", "increment_rss_anon"}
PEAK_KEYS = {"rss_anon", "rss_file", "vm_hwm", "polls", "poll_interval_s"}
MIB = 2**20
MNIST_SAMPLE_BYTES = 28 * 28 + 1  # a uint8 image and its uint8 label, as stored and as the tutorial holds them


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


def test_in_ram_need_is_the_stored_uint8_split_and_the_float32_figure_only_an_estimate(tmp_path: Path) -> None:
    folder, _ = build(tmp_path, 1000, "npy")
    assert in_ram_bytes(folder) == 1000 * MNIST_SAMPLE_BYTES  # what the tutorial and the ram loader hold
    assert article_float32_estimate(folder) == 1000 * 28 * 28 * 4
    assert memory_estimate(folder, "ram", "plain", headroom=0) is None
    assert memory_estimate(folder, "npy", "plain", headroom=10**6 * GB) is None  # streaming is never skipped
    skip = memory_estimate(folder, "tutorial", "keras", headroom=10**6 * GB)
    assert skip is not None and skip["need_bytes"] == 1000 * MNIST_SAMPLE_BYTES + IMPORT_ALLOWANCE["keras"]
    assert skip["reason"].startswith("needs ") and " GB, have " in skip["reason"]


def test_sampler_sees_a_known_allocation_in_the_child(tmp_path: Path) -> None:
    """The outside poller against an allocation of known size, written so that every page is resident."""
    size = 128 * MIB
    code = f"import time; block = bytearray(b'\\x01') * {size}; time.sleep(1.0)"
    with open(tmp_path / "log", "w+b") as log:
        status, _, sampler = run_sampled([sys.executable, "-c", code], 0.02, log)
    assert status == 0 and sampler is not None and sampler.samples >= 2
    assert size <= sampler.peak.rss_anon < size + 64 * MIB  # the child's block, not this process's heap


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
    expected_pixels = float((arrays["x"].astype(np.float32) * np.float32(1 / 255)).sum(dtype=np.float64))
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
    """20k and 200k samples: the in-RAM uint8 split (150 MB at 200k) against streamload's few MB."""
    for size in (20_000, 200_000):
        _prebuilt(tmp_path, size)
    results_path = tmp_path / "results.json"
    status = main(["--sizes", "20000", "200000", "--loaders", "tutorial", "ram", "npy", "hdf5", "--apis", "plain",
                   "--max-batches", "30", "--out", str(tmp_path), "--reuse", "--json", str(results_path), "--quiet"])
    results = json.loads(results_path.read_text())
    assert status == 0 and set(results) == {"machine", "options", "runs", "goals", "plot"}
    runs = {(run["size"], run["loader"]): run for run in results["runs"]}
    assert len(runs) == 8
    for (size, loader), run in runs.items():
        assert RUN_KEYS <= set(run) and PEAK_KEYS <= set(run["peak"]) and run["status"] == "ok", run["reason"]
        assert run["peak"]["polls"] >= 1 and run["child"]["samples"] == 30 * 64
        held = size * MNIST_SAMPLE_BYTES if loader in ("tutorial", "ram") else 0  # allocated by the child itself
        assert held * 0.95 <= run["increment_rss_anon"] < held + 50 * MIB, (size, loader)
    for size in (20_000, 200_000):  # the same sampler, the same data: the very same batches
        sums = {runs[size, loader]["child"]["checksum"]["pixels"] for loader in ("ram", "npy", "hdf5")}
        assert len(sums) == 1
    assert results["goals"]["streamload_flat"] and results["goals"]["generator_alone_under_1gb"]
    tutorial = results["goals"]["variants"]["tutorial/keras"]
    peaks = [runs[size, "tutorial"]["peak"]["rss_anon"] for size in (20_000, 200_000)]
    assert tutorial["bytes_per_sample"] == pytest.approx((peaks[1] - peaks[0]) / 180_000)  # two points: the slope
    assert 0.9 * MNIST_SAMPLE_BYTES < tutorial["bytes_per_sample"] < 1.25 * MNIST_SAMPLE_BYTES
    assert Path(results["plot"]).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_cap_proof_streams_under_the_cap_where_the_tutorial_cannot_load(tmp_path: Path) -> None:
    """A cap sized from this machine: above what streamload's fit needs, below imports plus the uint8 split.

    An uncapped fit of the npy loader first measures TensorFlow's VmData here (it varies with the
    number of cores: thread stacks count), so the proof does not depend on this machine's figures.
    """
    calibration, _ = build(tmp_path, 5_000, "npy", name="calibration")
    options = ["--loader", "npy", "--api", "keras", "--data", str(calibration), "--batch-size", "1024",
               "--mode", "fit"]
    uncapped = run_child(options, 0.02)["child"]["memory"]
    cap = uncapped["end"]["vm_data"] + 128 * MIB  # streamload's whole fit, with room to spare
    size = math.ceil((cap - uncapped["baseline"]["vm_data"] + 64 * MIB) / MNIST_SAMPLE_BYTES)
    _prebuilt(tmp_path, size, ("npy",))
    results_path = tmp_path / "cap.json"
    status = main(["--cap-proof", "--cap-gb", str(cap / GB), "--cap-size", str(size), "--cap-loaders", "npy",
                   "tutorial", "--max-batches", "20", "--out", str(tmp_path), "--reuse", "--json", str(results_path),
                   "--quiet"])
    proof = json.loads(results_path.read_text())["cap_proof"]
    assert status == 0 and proof["proved"]
    npy, tutorial = proof["runs"]
    assert npy["status"] == "ok" and npy["child"]["batches"] == 20 and np.isfinite(npy["child"]["loss"])
    limit = int(cap / GB * GB)
    assert npy["child"]["rlimit_data"] == [limit, limit] == tutorial["child"]["rlimit_data"]
    assert tutorial["status"] == "memory_error" and tutorial["child"]["error"]["phase"] == "load"
    assert f"shape ({size}, 28, 28) and data type uint8" in tutorial["child"]["error"]["message"]
    assert proof["in_ram_bytes"] == size * MNIST_SAMPLE_BYTES
    assert proof["article_float32_estimate_bytes"] == size * 28 * 28 * 4


def test_goals_need_two_sizes_to_judge_growth() -> None:
    run = {"status": "ok", "loader": "npy", "api": "plain", "size": 100, "peak": {"rss_anon": 30 * 2**20}}
    goals = evaluate_goals([run, {**run, "size": 1000, "peak": {"rss_anon": 31 * 2**20}}])
    entry = goals["variants"]["npy/plain"]
    assert entry["growth_bytes"] == 2**20 and entry["growth_goal_met"] and goals["streamload_flat"]
    assert evaluate_goals([run])["variants"]["npy/plain"]["growth_goal_met"] is None
