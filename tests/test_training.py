import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shards import build, make_arrays

from apps.training import make_optimizer, tutorial_cnn
from streamload import ArraySource, BuildOptions, IterableSource, build_dataset, split_validation
from streamload.errors import InvalidOptionError
from streamload.format.manifest import read_manifest
from streamload.places.generations import shard_root

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


def _one_error_line(result: subprocess.CompletedProcess, program: str, *, before_keras: bool = True) -> str:
    """The one ``program: error:`` line; refused before Keras loads, nothing was printed on stdout either."""
    assert result.returncode == 2 and (result.stdout == "" or not before_keras), result.stdout[-2000:]
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
                                     "--model-out", str(tmp_path / "m.keras")), "train.py", before_keras=False)
    assert shard.name in line


# --- any dataset the builder writes (issue 18 §8) ----------------------------------------------------------

def stripes(kind: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy 12x12 RGB picture of horizontal (0) or vertical (1) stripes: learnable in a few steps."""
    rows, cols = np.mgrid[0:12, 0:12]
    on = (((rows, cols)[kind] + rng.integers(0, 4)) // 2) % 2
    return np.clip(on[..., None] * 200 + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)


def trained(tmp_path: Path, directory: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """train.py on ``directory`` with stdout redirected to a file (not a terminal), and its --json metrics."""
    result = run_train("--data", str(directory), "--epochs", "2", "--batch-size", "16", "--model-out",
                       str(tmp_path / "m.keras"), "--json", str(tmp_path / "metrics.json"), *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "\r" not in result.stdout and "\x08" not in result.stdout  # one line per epoch, no progress-bar frames
    assert len([line for line in result.stdout.splitlines() if line.startswith("Epoch ")]) == 2
    return result, json.loads((tmp_path / "metrics.json").read_text())


def stripe_folder(folder: Path, per_class: int = 40) -> Path:
    """An image folder of two classes of stripe PNGs (12x12 RGB), as a user's photos/ would be."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind, name in enumerate(("horizontal", "vertical")):
        (folder / name).mkdir(parents=True)
        for number in range(per_class):
            Image.fromarray(stripes(kind, rng)).save(folder / name / f"{number}.png")
    return folder


def build_images(photos: Path, out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_shards.py"), "--source", str(photos), "--out",
                    str(out), "--validation-split", "0.25", "--seed", "1", "--jobs", "1", "--quiet", *args], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("store, build_args, train_args", [
    ("decoded", ["--image-size", "12", "12"], []),
    ("encoded", ["--store", "encoded"], ["--image-size", "12", "12", "--random-resized-crop", "--horizontal-flip"]),
])
def test_train_script_trains_an_image_folder_built_with_a_validation_split(tmp_path, store: str,
                                                                           build_args: list[str],
                                                                           train_args: list[str]) -> None:
    build_images(stripe_folder(tmp_path / "photos"), tmp_path / "ds", *build_args)
    assert read_manifest(tmp_path / "ds").split("train").arrays["x"].encoded_image == (store == "encoded")
    result, metrics = trained(tmp_path, tmp_path / "ds", *train_args)
    assert "a small CNN for 2 classes, evaluated on validation" in result.stdout
    assert set(metrics) == {"validation_loss", "validation_accuracy"}
    import keras

    model = keras.models.load_model(tmp_path / "m.keras")
    assert model.input_shape == (None, 12, 12, 3) and model.output_shape == (None, 2)


@pytest.mark.slow
def test_train_script_trains_a_csv_table_without_an_evaluation_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 3))
    lines = ["a,b,c,species"] + [f"{a:.4f},{b:.4f},{c:.4f},{'yes' if a + b > 0 else 'no'}" for a, b, c in features]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_shards.py"), "--source", str(tmp_path / "table.csv"),
                    "--out", str(tmp_path / "table"), "--label-column", "species", "--quiet"], check=True)
    result, metrics = trained(tmp_path, tmp_path / "table")
    assert "an MLP for 2 classes, evaluated on nothing (the dataset has no test or validation split)" in result.stdout
    assert metrics == {} and "not evaluated; model saved to" in result.stdout


@pytest.mark.slow
def test_train_script_trains_a_multi_input_dataset_by_input_name(tmp_path) -> None:
    def samples():
        rng = np.random.default_rng(0)
        for _ in range(300):
            meta = rng.standard_normal(4).astype(np.float32)
            yield {"image": rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), "meta": meta,
                   "label": int(meta[0] > 0)}

    build_dataset(split_validation({"train": IterableSource(samples(), target="label")}, 0.2, seed=0),
                  tmp_path / "multi", BuildOptions(progress=False))
    result, metrics = trained(tmp_path, tmp_path / "multi", "--min-accuracy", "0.5")
    assert "a 2-input model (image, meta) for 2 classes, evaluated on validation" in result.stdout
    assert 0.5 <= metrics["validation_accuracy"] <= 1
    import keras

    model = keras.models.load_model(tmp_path / "m.keras")
    assert sorted(layer.name for layer in model.inputs) == ["image", "meta"]


@pytest.mark.slow
def test_train_script_trains_a_float_target_as_a_regression(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    y = (x @ np.arange(5, dtype=np.float32)).astype(np.float32)
    build_dataset({"train": ArraySource(x=x[:240], y=y[:240]), "test": ArraySource(x=x[240:], y=y[240:])},
                  tmp_path / "reg", BuildOptions(progress=False))
    result, metrics = trained(tmp_path, tmp_path / "reg")
    assert "an MLP for a float target of shape (), evaluated on test" in result.stdout
    assert set(metrics) == {"test_loss", "test_mae"}


@pytest.mark.parametrize("case, message", [
    ("no-target", "the dataset has no target array; train.py trains supervised models"),
    ("no-train", "no 'train' split (it has test)"),
    ("multi-label", "target 'y' holds uint8 of shape (3,); train.py trains on scalar class labels or float targets"),
    ("min-accuracy", "--min-accuracy needs class labels and a test or validation split"),
])
def test_train_script_refuses_what_it_cannot_train_in_one_line_before_keras(tmp_path, case: str,
                                                                             message: str) -> None:
    x = np.zeros((20, 4), np.float32)
    sources = {"no-target": {"train": ArraySource(x=x)}, "no-train": {"test": ArraySource(x=x, y=np.zeros(20, "u1"))},
               "multi-label": {"train": ArraySource(x=x, y=np.zeros((20, 3), "u1"))},
               "min-accuracy": {"train": ArraySource(x=x, y=np.zeros(20, "f4"))}}[case]
    build_dataset(sources, tmp_path / "ds", BuildOptions(progress=False))
    extra = ["--min-accuracy", "0.5"] if case == "min-accuracy" else []
    result = subprocess.run([sys.executable, "-c", WITNESS, str(ROOT / "scripts" / "train.py"), "--data",
                             str(tmp_path / "ds"), *extra], capture_output=True, text=True, timeout=300)
    line = _one_error_line(result, "train.py")
    assert message in line and str(tmp_path / "ds") in line
    assert result.stderr.splitlines()[-1] == "keras loaded: False"


@pytest.mark.slow
@pytest.mark.parametrize("store, args, message", [
    ("encoded", [], "input 'x' holds image files decoded on read (--store encoded); pass --image-size HEIGHT WIDTH"),
    ("decoded", ["--image-size", "12", "12"], "--image-size and the other image options decode images stored as"),
])
def test_train_script_refuses_image_options_that_do_not_fit_the_store_before_keras(tmp_path, store: str,
                                                                                  args: list[str],
                                                                                  message: str) -> None:
    build_images(stripe_folder(tmp_path / "photos", 4), tmp_path / "ds", "--store", store)
    result = subprocess.run([sys.executable, "-c", WITNESS, str(ROOT / "scripts" / "train.py"), "--data",
                             str(tmp_path / "ds"), *args], capture_output=True, text=True, timeout=300)
    line = _one_error_line(result, "train.py")
    assert message in line and (store == "decoded" or str(tmp_path / "ds") in line)
    assert result.stderr.splitlines()[-1] == "keras loaded: False"


# runs a script as __main__, then says whether it imported Keras (refusals must come before that import)
WITNESS = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    sys.stderr.write(f"keras loaded: {'keras' in sys.modules}\\n")
"""


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
    line = _one_error_line(run_train(*common), "train.py", before_keras=False)  # found when resuming
    assert f"{folder / 'latest.json'}: does not name a checkpoint folder" in line
