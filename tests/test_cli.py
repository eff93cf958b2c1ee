"""Tests for streamload.cli and scripts/build_shards.py: builds, --verify, --augment-to, exit codes, and
the one clear message an offline machine without MNIST gets."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, MakeMnist, SyntheticMnist, leftovers, read_split, subprocess_env, tree_snapshot
from shards import make_writable

from streamload.cli import main
from streamload.format.manifest import read_manifest
from streamload.write.sources.idx import write_idx
from streamload.write.sources.mnist import MNIST_DIR_ENV
from streamload.write.verify import verify_dataset


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUILD_SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or subprocess_env())


def _assert_holds(out: Path, mnist: SyntheticMnist) -> None:
    for split in ("train", "test"):
        back = read_split(out, split)
        for key in ("x", "y"):
            np.testing.assert_array_equal(back[key], mnist.arrays[split][key])


def _offline_env(home: Path) -> dict[str, str]:
    """No MNIST anywhere: no env folder, and an empty home and Keras cache."""
    return subprocess_env(**{MNIST_DIR_ENV: None, "HOME": str(home), "KERAS_HOME": str(home)})


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_script_builds_quietly(synthetic_mnist: SyntheticMnist, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "ds"
    result = _run("--format", fmt, "--source", str(synthetic_mnist.folder), "--out", str(out),
                  "--shard-size", "64", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert read_manifest(out).format == fmt
    assert [s.num_samples for s in read_manifest(out).split("train").shards] == [64, 64, 64, 11]
    assert verify_dataset(out, progress=False) == []
    _assert_holds(out, synthetic_mnist)


def test_summary_without_quiet(synthetic_mnist: SyntheticMnist, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert main(["--format", "hdf5", "--compression", "lzf", "--source", str(synthetic_mnist.folder),
                 "--out", str(out), "--shard-size", "100"]) == 0
    stdout = capsys.readouterr().out
    assert "train: 203 samples in 3 hdf5 shard(s)" in stdout
    assert "test: 37 samples in 1 hdf5 shard(s)" in stdout
    assert f"wrote {out / 'manifest.json'}" in stdout
    _assert_holds(out, synthetic_mnist)


def test_env_folder_is_the_default_source(make_mnist: MakeMnist, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    mnist = make_mnist()
    monkeypatch.setenv(MNIST_DIR_ENV, str(mnist.folder))
    assert main(["--out", str(tmp_path / "ds"), "--quiet", "--no-download"]) == 0
    _assert_holds(tmp_path / "ds", mnist)


def test_npz_source_as_file_or_folder(make_mnist: MakeMnist, tmp_path: Path) -> None:
    mnist = make_mnist()
    folder = tmp_path / "keras"
    folder.mkdir()
    arrays = mnist.arrays
    np.savez(folder / "mnist.npz", x_train=arrays["train"]["x"], y_train=arrays["train"]["y"],
             x_test=arrays["test"]["x"], y_test=arrays["test"]["y"])
    for name, source in (("from-file", folder / "mnist.npz"), ("from-folder", folder)):
        assert main(["--source", str(source), "--out", str(tmp_path / name), "--quiet"]) == 0
        _assert_holds(tmp_path / name, mnist)


# --- offline, nothing local ----------------------------------------------------------------------


def _assert_one_clear_error(result: subprocess.CompletedProcess[str], out: Path) -> None:
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("build_shards.py")]
    errors = [line for line in ours if line.startswith("build_shards.py: error: ")]
    assert len(ours) == 1 and len(errors) == 1, result.stderr  # TensorFlow's own log lines aside
    assert "--source" in errors[0] and MNIST_DIR_ENV in errors[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and leftovers(out) == []


def test_offline_without_download_fails_clearly(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "ds"
    home.mkdir()
    result = _run("--out", str(out), "--no-download", "--quiet", env=_offline_env(home))
    _assert_one_clear_error(result, out)
    assert result.stdout == ""
    assert "downloading is off" in result.stderr


@pytest.mark.slow
def test_offline_download_failure_fails_clearly(tmp_path: Path) -> None:
    """Imports Keras (several seconds) and tries the real download, which fails here: no DNS."""
    home, out = tmp_path / "home", tmp_path / "ds"
    home.mkdir()
    result = _run("--out", str(out), "--quiet", env=_offline_env(home), timeout=300)
    _assert_one_clear_error(result, out)
    assert "download failed" in result.stderr
    assert result.stdout == ""  # --quiet: Keras' "Downloading data from ..." goes to stderr
    assert not (home / "datasets" / "mnist.npz").exists()


# --- exit status 2: bad input, nothing touched ---------------------------------------------------


@pytest.fixture()
def existing(make_mnist: MakeMnist, tmp_path: Path) -> Path:
    out = tmp_path / "existing"
    assert main(["--source", str(make_mnist("old", n_train=20, n_test=4).folder), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("args, message", [
    (["--shard-size", "0"], "shard size must be a positive"),
    (["--compression", "gzip"], "compression 'gzip' is not available for format 'npy'"),
    (["--augment-to", "0"], "--augment-to must be a positive"),
    ([], "--overwrite"),
])
def test_bad_input_exits_2_and_touches_nothing(synthetic_mnist: SyntheticMnist, existing: Path,
                                               capsys: pytest.CaptureFixture[str], args: list[str],
                                               message: str) -> None:
    before = tree_snapshot(existing)
    assert main(["--source", str(synthetic_mnist.folder), "--out", str(existing), "--quiet", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("build_shards.py: error: ") and message in captured.err
    assert tree_snapshot(existing) == before and leftovers(existing) == []


def test_missing_source_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "--source" in err and MNIST_DIR_ENV in err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args", [[], ["--format", "zarr", "--out", "x"], ["--compression", "zip", "--out", "x"]])
def test_usage_errors_exit_2(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --- --verify ------------------------------------------------------------------------------------


def test_verify_exit_codes_and_bad_file_names(existing: Path) -> None:
    sound = _run("--verify", str(existing))
    assert sound.returncode == 0, sound.stderr
    assert "every shard matches" in sound.stdout
    quiet = _run("--verify", str(existing), "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    manifest = read_manifest(existing)
    root, shards = existing / str(manifest.generation), manifest.split("train").shards
    truncated, flipped = shards[0].files["x"].name, shards[0].files["y"].name
    with open(make_writable(root / truncated), "r+b") as stream:
        stream.truncate(10)
    data = bytearray(make_writable(root / flipped).read_bytes())
    data[-3] ^= 0x80  # a label: the header is intact
    (root / flipped).write_bytes(bytes(data))
    bad = _run("--verify", str(existing), "--quiet")
    assert bad.returncode == 1 and bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert [line.split()[1] for line in lines] == [truncated, flipped]
    assert "truncated" in lines[0] and "checksum mismatch" in lines[1]


def test_verify_without_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--verify", str(tmp_path)]) == 2
    assert f"{tmp_path / 'manifest.json'}: no manifest" in capsys.readouterr().err


# --- --augment-to --------------------------------------------------------------------------------


def _augment(source: Path, out: Path, seed: int) -> None:
    assert main(["--source", str(source), "--out", str(out), "--augment-to", "1000", "--seed", str(seed),
                 "--shard-size", "300", "--quiet"]) == 0


def test_augment_to(make_mnist: MakeMnist, tmp_path: Path) -> None:
    mnist = make_mnist(n_train=70, n_test=11)
    _augment(mnist.folder, tmp_path / "a", seed=5)
    _augment(mnist.folder, tmp_path / "b", seed=5)
    _augment(mnist.folder, tmp_path / "c", seed=6)
    manifest = read_manifest(tmp_path / "a")
    assert [s.num_samples for s in manifest.split("train").shards] == [300, 300, 300, 100]
    train, test = read_split(tmp_path / "a", "train"), read_split(tmp_path / "a", "test")
    np.testing.assert_array_equal(train["y"], mnist.arrays["train"]["y"][np.arange(1000) % 70])
    assert train["x"].shape == (1000, 28, 28) and train["x"].dtype == np.uint8
    assert not np.array_equal(train["x"][:70], mnist.arrays["train"]["x"])
    for key in ("x", "y"):
        np.testing.assert_array_equal(test[key], mnist.arrays["test"][key])  # test split is not augmented
    assert tree_snapshot(tmp_path / "b") == tree_snapshot(tmp_path / "a")  # same seed, same bytes
    assert not np.array_equal(read_split(tmp_path / "c", "train")["x"], train["x"])


# --- a killed CLI build --------------------------------------------------------------------------


def test_killed_cli_build_keeps_the_old_dataset(make_mnist: MakeMnist, existing: Path) -> None:
    before, manifest = tree_snapshot(existing), read_manifest(existing)
    source = make_mnist("big", n_train=500, n_test=5).folder
    child = subprocess.Popen([*BUILD_SCRIPT, "--source", str(source), "--out", str(existing), "--overwrite",
                              "--augment-to", "2000000", "--shard-size", "5000", "--quiet"],
                             env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (found := list(existing.glob(".staging-gen-000002-*/train-00001.x.npy"))):  # shard 1 begun
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the build never got going"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    staging = found[0].parent
    assert leftovers(existing) == [staging.name] and not (staging / "manifest.json").exists()
    assert tree_snapshot(existing) == before and read_manifest(existing) == manifest
    assert verify_dataset(existing, progress=False) == []

    assert main(["--source", str(source), "--out", str(existing), "--overwrite", "--quiet"]) == 0
    assert leftovers(existing) == [] and verify_dataset(existing, progress=False) == []
    assert read_manifest(existing).split("train").num_samples == 500


# --- sources refused at build time, in one line --------------------------------------------------


def _swap(folder: Path) -> None:
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    images.rename(folder / "tmp")
    labels.rename(images)
    (folder / "tmp").rename(labels)


def _cut_trailer(folder: Path) -> None:
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])


def _label_12(folder: Path) -> None:
    labels = np.zeros(203, np.uint8)
    labels[150] = 12
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)


@pytest.mark.parametrize("damage, args, message", [
    (_swap, [], "train-images-idx3-ubyte.gz: images must have rank >= 2"),
    (_cut_trailer, [], "t10k-images-idx3-ubyte.gz: cannot read the end of the gzip stream"),
    (_label_12, ["--num-classes", "10"], "label 12 at sample 150 lies outside the class range [0, 10)"),
    (None, ["--num-classes", "0"], "number of classes must be a positive integer"),
], ids=["swapped-files", "gzip-trailer-cut", "label-over-num-classes", "num-classes-0"])
def test_refused_sources_exit_2_in_one_line(make_mnist: MakeMnist, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            damage: object, args: list[str], message: str) -> None:
    mnist = make_mnist()
    if damage is not None:
        damage(mnist.folder)  # type: ignore[operator]
    out = tmp_path / "ds"
    assert main(["--source", str(mnist.folder), "--out", str(out), "--quiet", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith("build_shards.py: error: ") and message in captured.err
    assert not out.exists() and leftovers(out) == []


def test_num_classes_is_recorded(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    assert main(["--source", str(synthetic_mnist.folder), "--out", str(tmp_path / "ds"), "--quiet",
                 "--num-classes", "12"]) == 0
    labels = read_manifest(tmp_path / "ds").labels
    y = np.concatenate([synthetic_mnist.arrays[split]["y"] for split in ("train", "test")])
    assert labels is not None and (labels.num_classes, labels.minimum, labels.maximum) == (12, y.min(), y.max())


def test_verify_names_the_shard_and_the_field_of_a_header_mismatch(existing: Path) -> None:
    for path in (existing / "manifest.json", existing / str(read_manifest(existing).generation) / "manifest.json"):
        data = json.loads(path.read_text())
        data["splits"]["test"]["arrays"]["x"]["dtype"] = "<f4"  # still a valid manifest; not what the files hold
        path.write_text(json.dumps(data))
    result = _run("--verify", str(existing), "--quiet")
    assert result.returncode == 1 and result.stdout == ""
    name = read_manifest(existing).split("test").shards[0].files["x"].name
    assert result.stderr == (f"BAD {name} (split 'test', shard 0): array 'x': header says dtype |u1, "
                             "the manifest says <f4\n")


def test_pixel_scale_and_allow_nonfinite_reach_the_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[2, 1] = np.nan
    np.savez(tmp_path / "data.npz", x=x, y=np.zeros(4, np.uint8))
    out = tmp_path / "ds"
    assert main(["--source", str(tmp_path / "data.npz"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample 2, column 1 holds nan" in err and "--allow-nonfinite" in err
    assert main(["--source", str(tmp_path / "data.npz"), "--out", str(out), "--quiet", "--allow-nonfinite",
                 "--pixel-scale", "1/255"]) == 0
    assert read_manifest(out).split("train").arrays["x"].scale == 1 / 255


@pytest.mark.parametrize("scale", ["abc", "1/0", "0", "-1"])
def test_a_bad_pixel_scale_exits_2(scale: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 2), np.uint8), y=np.zeros(2, np.uint8))
    try:
        code = main(["--source", str(tmp_path / "data.npz"), "--out", str(tmp_path / "ds"), "--pixel-scale", scale])
    except SystemExit as exit_:  # argparse's own usage error
        code = exit_.code
    assert code == 2 and "pixel" in capsys.readouterr().err and not (tmp_path / "ds").exists()


# --- refusals in one line (issues 18 and 21) -----------------------------------------------------


def _users_file(tmp_path: Path) -> Path:
    target = tmp_path / "thesis.tex"
    target.write_text("precious")
    return target


@pytest.mark.parametrize("case", ["negative-seed", "dangling-out-link", "build-lock-link", "foreign-manifest"])
def test_refusals_exit_2_in_one_line_and_touch_nothing(synthetic_mnist: SyntheticMnist, tmp_path: Path,
                                                       case: str) -> None:
    out, extra, message = tmp_path / "ds", [], ""
    if case == "negative-seed":
        extra, message = ["--seed", "-1", "--validation-split", "0.2"], "--seed must be 0 or more, got -1"
    elif case == "dangling-out-link":
        out.symlink_to(tmp_path / "unmounted" / "ds")
        message = f"{out}: is a symbolic link to {tmp_path / 'unmounted' / 'ds'}, which does not exist"
    elif case == "build-lock-link":
        out.mkdir()
        (out / ".build.lock").symlink_to(_users_file(tmp_path))
        message = f"{out / '.build.lock'}: is a symbolic link"
    else:
        out.mkdir()
        (out / "manifest.json").write_text('{"name": "my web app"}')
        message = f"{out / 'manifest.json'}: not a streamload manifest"
    before = tree_snapshot(tmp_path)
    result = _run("--source", str(synthetic_mnist.folder), "--out", str(out), "--overwrite", "--quiet", *extra)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("build_shards.py: error: ") and message in result.stderr
    assert tree_snapshot(tmp_path) == before and not list(tmp_path.glob(".ds.*"))


def test_verify_of_a_generation_folder_names_the_command_that_works(existing: Path) -> None:
    generation = existing / str(read_manifest(existing).generation)
    result = _run("--verify", str(generation))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.strip().endswith(f"--verify {existing}")
    assert _run("--verify", str(existing)).returncode == 0


def test_error_lines_never_carry_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "x\x1b[2Jy\rz"  # an escape sequence would clear the terminal, \r rewrite the line
    for argv in (["--source", str(hostile / "a.npz"), "--out", str(tmp_path / "ds")], ["--verify", str(hostile)]):
        code = main([*argv, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert "\x1b" not in err and "\r" not in err and "x\\x1b[2Jy\\rz" in err
