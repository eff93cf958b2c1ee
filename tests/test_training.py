import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shards import build, make_arrays

from apps.training import make_optimizer, tutorial_cnn
from streamload.errors import InvalidOptionError
from streamload.generations import shard_root
from streamload.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_cnn_architecture() -> None:
    layers = [type(layer).__name__ for layer in tutorial_cnn().layers]
    assert layers == ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]


def test_optimizer_defaults_that_learn() -> None:
    assert make_optimizer("adadelta").get_config()["learning_rate"] == pytest.approx(1.0)
    assert make_optimizer("adam").get_config()["learning_rate"] == pytest.approx(1e-3)
    with pytest.raises(InvalidOptionError):
        make_optimizer("rmsprop")


def run_train(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], capture_output=True,
                          text=True, env=env, timeout=900)


def test_train_script_runs_and_saves(tmp_path) -> None:
    directory, _ = build(tmp_path, 640, "npy", 200, test_n=100)
    test_arrays = make_arrays(100, seed=1)  # what build() wrote as the test split
    result = run_train("--data", str(directory), "--steps-per-epoch", "3", "--model-out",
                       str(tmp_path / "m.keras"), "--json", str(tmp_path / "metrics.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # the reported accuracy is the saved model's on the test split, recomputed here from the arrays written
    import keras

    model = keras.models.load_model(tmp_path / "m.keras")
    x = test_arrays["x"].astype("float32")[..., None] * np.float32(1 / 255)
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(1) == test_arrays["y"]))
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow
def test_one_epoch_on_real_mnist_reaches_97_5_percent(tmp_path, mnist_dir) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_shards.py"), "--source", str(mnist_dir), "--out",
                    str(tmp_path / "mnist"), "--quiet"], check=True)
    result = run_train("--data", str(tmp_path / "mnist"), "--epochs", "1", "--model-out", str(tmp_path / "m.keras"),
                       "--min-accuracy", "0.975", "--json", str(tmp_path / "metrics.json"))
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] >= 0.975


def _one_error_line(result: subprocess.CompletedProcess, program: str) -> str:
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith(program)]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--batch-size", "-5"], "--batch-size must be positive, got -5"),
    (["--learning-rate", "0"], "--learning-rate must be positive, got 0.0"),
], ids=["epochs", "batch-size", "learning-rate"])
def test_train_script_reports_bad_options_in_one_line(tmp_path, args: list[str], message: str) -> None:
    directory, _ = build(tmp_path, 20, "npy", 10, test_n=5)
    line = _one_error_line(run_train("--data", str(directory), *args), "train.py")
    assert line.endswith(message)


def test_train_script_reports_a_missing_dataset_in_one_line(tmp_path) -> None:
    line = _one_error_line(run_train("--data", str(tmp_path / "nowhere")), "train.py")
    assert line.startswith(f"train.py: error: {tmp_path / 'nowhere' / 'manifest.json'}: no manifest")


def test_train_script_reports_a_damaged_shard_in_one_line(tmp_path) -> None:
    """The manifest opens; the fault shows only when training reads the shard (an OSError from the read path)."""
    directory, _ = build(tmp_path, 640, "npy", 200, test_n=100)
    manifest = read_manifest(directory)
    shard = shard_root(directory, manifest) / manifest.split("train").shards[1].files["x"].name
    shard.unlink()
    line = _one_error_line(run_train("--data", str(directory), "--steps-per-epoch", "10", "--shuffle", "none",
                                     "--model-out", str(tmp_path / "m.keras")), "train.py")
    assert shard.name in line


def test_train_script_checkpoints_leave_the_users_files_and_refuse_a_pointer_outside(tmp_path) -> None:
    directory, _ = build(tmp_path, 640, "npy", 200, test_n=100)
    folder = tmp_path / "ck"
    (folder / "checkpoint-best").mkdir(parents=True)
    (folder / "checkpoint-best" / "model.keras").write_text("the user's best model")
    (folder / "checkpoint-03.keras").write_text("the user's epoch 3")
    common = ["--data", str(directory), "--steps-per-epoch", "3", "--model-out", str(tmp_path / "m.keras"),
              "--checkpoint-dir", str(folder), "--save-freq", "1"]
    result = run_train(*common)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "checkpoint-best" / "model.keras").read_text() == "the user's best model"
    assert (folder / "checkpoint-03.keras").read_text() == "the user's epoch 3"
    assert sorted(path.name for path in folder.iterdir()) == ["checkpoint-03.keras", "checkpoint-best"]
    (folder / "latest.json").write_text(json.dumps({"checkpoint": str(tmp_path)}))  # weights from outside
    line = _one_error_line(run_train(*common), "train.py")
    assert f"{folder / 'latest.json'}: does not name a checkpoint folder" in line
