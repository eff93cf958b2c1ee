"""Padded sequences through ``model.fit`` on every installed backend: a masked model trains from
``StreamingGenerator`` (and, on TensorFlow, ``as_tf_dataset``) with length bucketing, every Keras epoch sees every
sample exactly once, and a generator resumed mid-epoch trains on exactly the rest of the interrupted epoch; a
tagging model learns from targets of varying length whose padded lengths repeat in the first two batches."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import KERAS_BACKENDS, subprocess_env

from streamload import ArraySource, BuildOptions, build_dataset
from streamload.format.records import Records
from streamload.read.loader import BatchLoader

SCRIPT = Path(__file__).with_name("keras_fit_sequences.py")
TAGGING_SCRIPT = Path(__file__).with_name("keras_fit_tagging.py")
N = 100


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    records = [np.r_[i + 1, rng.integers(1, 1000, rng.integers(0, 30))].astype(np.int32) for i in range(N)]
    out = tmp_path_factory.mktemp("seq") / "data"
    build_dataset({"train": ArraySource(x=Records.from_arrays(records, np.int32), y=rng.integers(0, 3, N))}, out,
                  BuildOptions(shard_size=40, progress=False))
    return out


@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_masked_model_fits_every_sample_once_per_epoch_and_resumes(tmp_path, sequences, backend) -> None:
    out = tmp_path / "runs.json"
    result = subprocess.run([sys.executable, str(SCRIPT), str(sequences), str(out)], capture_output=True, text=True,
                            timeout=600, env=subprocess_env(KERAS_BACKEND=backend))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(out.read_text())
    assert runs["backend"] == backend
    loader = BatchLoader(sequences, batch_size=16, seed=3, bucket_by_length=True)
    for name in ("generator", "tfdata") if backend == "tensorflow" else ("generator",):
        for epoch, seen in enumerate(runs[name]["epochs"]):
            assert sorted(seen) == list(range(N)), f"{name} epoch {epoch}"
            expected = [int(i) for b in range(loader.num_batches) for i in loader.sampler.batch_indices(epoch, b)]
            assert seen == expected
        assert all(np.isfinite(runs[name]["loss"]))
    interrupted = runs["generator"]["epochs"][1]
    assert runs["resumed"]["epochs"][0][:N - 5 * 16] == interrupted[5 * 16:]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> Path:
    """Batches of 16 in order: 0 and 1 padded to 6 steps, the rest to 9-14 (each token's tag is token % 4)."""
    rng = np.random.default_rng(1)
    lengths = np.r_[rng.integers(1, 7, 32), rng.integers(1, 15, 64)]
    lengths[[0, 16]], lengths[[32, 48, 64, 80]] = 6, (9, 11, 13, 14)
    tokens = [rng.integers(1, 500, length).astype(np.int32) for length in lengths]
    tags = Records.from_arrays([(record % 4).astype(np.uint8) for record in tokens], np.uint8)
    out = tmp_path_factory.mktemp("tagged") / "data"
    build_dataset({"train": ArraySource(x=Records.from_arrays(tokens, np.int32), y=tags)}, out,
                  BuildOptions(progress=False))
    return out


@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_a_tagging_model_learns_from_targets_of_varying_length(tmp_path, tagged, backend) -> None:
    out = tmp_path / "tagging.json"
    result = subprocess.run([sys.executable, str(TAGGING_SCRIPT), str(tagged), str(out)], capture_output=True,
                            text=True, timeout=600, env=subprocess_env(KERAS_BACKEND=backend))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(out.read_text())
    assert runs["backend"] == backend
    for name in ("generator", "tfdata") if backend == "tensorflow" else ("generator",):
        loss = runs[name]["loss"]
        assert all(np.isfinite(loss)) and loss[-1] < loss[0] / 2, name
        assert runs[name]["accuracy"] > 0.9, name  # token % 4 is learnable from the token alone
