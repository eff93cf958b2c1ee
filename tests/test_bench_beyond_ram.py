"""The bigger-than-RAM benchmark end to end at a tiny size, checked against what the run left behind.

Each figure is recomputed from an independent source: sample counts from the manifest the real
build wrote, amplification from the training process' own read_bytes over the stored bytes, the
tutorial's failure from the limit the test itself chose (above what a bare numpy import needs,
below that plus the split). No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MakeMnist, leftovers, subprocess_env

from benchmarks.beyond_ram import main, stored_bytes
from benchmarks.device_limits import pages_per_sample
from streamload.format.manifest import read_manifest
from streamload.read.dataset import ShardedDataset

SAMPLES, BATCH = 300_000, 1024  # 235 MB of digits: seconds of training
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def import_vm_data() -> int:
    """VmData of a fresh process that imported what the tutorial child imports before it loads the split."""
    code = ("import numpy, streamload.read.loader; from streamload.base.procstats import read_vm_data; "
            "print(read_vm_data())")
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                              env=subprocess_env()).stdout)


@pytest.mark.slow
def test_tiny_run_builds_trains_and_shows_the_in_ram_design_failing(make_mnist: MakeMnist, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("keras")
    source, workdir, out = make_mnist(n_train=500, n_test=50), tmp_path / "work", tmp_path / "report.json"
    cap = import_vm_data() + 64 * 2**20  # room for the imports, far from room for 235 MB of digits
    status = main(["--workdir", str(workdir), "--source", str(source.folder), "--samples", str(SAMPLES),
                   "--ram-bytes", str(cap), "--batch-size", str(BATCH), "--exact-seconds", "3", "--random-seconds",
                   "0.5", "--sequential-gb", "0.1", "--ram-samples", "20000", "--json", str(out), "--no-progress"])
    assert status == 0
    report, stdout = json.loads(out.read_text()), capsys.readouterr().out
    dataset = workdir / f"mnist-{SAMPLES}"
    train = read_manifest(dataset).split("train")
    sample_bytes = sum(spec.sample_bytes for spec in train.arrays.values())
    assert train.num_samples == SAMPLES and report["dataset"]["samples"] == SAMPLES
    assert leftovers(dataset) == [] and report["build"]["staging_left"] == []
    assert report["verify"]["ok"] and report["build"]["peak_rss_anon"] > 0

    block = report["block"]["child"]  # a full epoch: every batch served once and trained
    assert block["samples_trained"] == SAMPLES and block["steps"] == math.ceil(SAMPLES / BATCH)
    assert block["batches_unserved"] == 0 and block["samples_served_distinct"] == SAMPLES
    assert report["figures"]["block_amplification"] == pytest.approx(block["read_bytes"] / (SAMPLES * sample_bytes))
    loader = report["block_loader"]["child"]
    assert loader["samples_trained"] == SAMPLES and loader["steps"] == math.ceil(SAMPLES / BATCH)
    exact = report["exact"]["child"]  # a bounded pass: whole batches only, fewer than the epoch's
    assert 0 < exact["steps"] <= math.ceil(SAMPLES / BATCH)
    assert exact["samples_trained"] == min(SAMPLES, exact["steps"] * BATCH)
    assert report["exact"]["resident_before"] == 0.0  # evicted before the pass

    pages = pages_per_sample(ShardedDataset(dataset))["total"]
    assert report["figures"]["random_limit_samples_per_s"] == pytest.approx(
        report["device"]["random"]["iops"]["64"] / pages)
    assert report["figures"]["exact_vs_random_limit"] == pytest.approx(
        exact["samples_trained"] / exact["fit_seconds"] / (report["device"]["random"]["iops"]["64"] / pages))

    tutorial = report["tutorial"]
    assert tutorial["status"] == "memory_error" and tutorial["child"]["rlimit_data"] == [cap, cap]
    assert tutorial["child"]["error"]["type"] == "MemoryError" and tutorial["child"]["error"]["phase"] == "load"
    assert tutorial["child"]["needs_bytes"] == SAMPLES * sample_bytes > cap
    assert max(report["block"]["peak_rss_anon"], report["exact"]["peak_rss_anon"]) < 10**9
    assert {entry["figure"] for entry in report["goals"]} >= {"exact_vs_random_limit", "block_amplification",
                                                             "training_peak_rss_anon", "staging_left", "tutorial"}
    assert Path(report["plot"]).read_bytes()[:8] == PNG_SIGNATURE
    assert f"### Bigger than RAM: {SAMPLES:,} samples" in stdout and "| block order, loader alone |" in stdout


def test_refuses_a_dataset_the_disk_cannot_hold_and_builds_nothing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    samples = 10**13  # ~7,850 TB
    status = main(["--workdir", str(tmp_path), "--samples", str(samples), "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and f"{stored_bytes(samples) / 1e9:.1f} GB" in error and "free" in error
    assert list(tmp_path.iterdir()) == []  # no dataset folder, no staging folder
