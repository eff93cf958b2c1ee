"""Tests for streamload.write.sources.mnist: where MNIST is found, what the error says when it is not, and the real
MNIST copy built end to end against the published facts of the dataset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import MakeMnist, SyntheticMnist, read_split

from streamload.errors import AmbiguousSourceError, SourceFormatError, SourceNotFoundError
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import IdxPairSource, NpzArraySource, SplitSource
from streamload.write.sources.idx import write_idx
from streamload.write.sources.mnist import MNIST_DIR_ENV, mnist_sources, sources_from_path
from streamload.write.verify import verify_dataset


def _data(sources: dict[str, SplitSource]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for split, source in sources.items():
        chunks = list(source.iter_chunks(64))
        out[split] = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in ("x", "y")}
    return out


def _assert_same(sources: dict[str, SplitSource], mnist: SyntheticMnist) -> None:
    assert sorted(sources) == ["test", "train"]
    data = _data(sources)
    for split in ("train", "test"):
        for key in ("x", "y"):
            np.testing.assert_array_equal(data[split][key], mnist.arrays[split][key])


def _write_npz(path: Path, mnist: SyntheticMnist) -> Path:
    arrays = mnist.arrays
    np.savez(path, x_train=arrays["train"]["x"], y_train=arrays["train"]["y"],
             x_test=arrays["test"]["x"], y_test=arrays["test"]["y"])
    return path


def test_idx_folder_gz_or_raw(synthetic_mnist: SyntheticMnist) -> None:
    sources = sources_from_path(synthetic_mnist.folder)
    assert all(isinstance(source, IdxPairSource) for source in sources.values())
    _assert_same(sources, synthetic_mnist)


def test_dotted_file_names_are_accepted(make_mnist: MakeMnist) -> None:
    mnist = make_mnist(gz=False)
    for file in list(mnist.folder.iterdir()):
        file.rename(file.with_name(file.name.replace("-idx", ".idx")))
    assert (mnist.folder / "train-images.idx3-ubyte").is_file()
    _assert_same(sources_from_path(mnist.folder), mnist)


def test_npz_file_and_folder_holding_mnist_npz(make_mnist: MakeMnist, tmp_path: Path) -> None:
    mnist = make_mnist()
    folder = tmp_path / "keras"
    folder.mkdir()
    npz = _write_npz(folder / "mnist.npz", mnist)
    for path in (npz, folder):
        sources = sources_from_path(path)
        assert all(isinstance(source, NpzArraySource) for source in sources.values())
        _assert_same(sources, mnist)


def test_missing_idx_files_are_listed_with_the_help(make_mnist: MakeMnist) -> None:
    mnist = make_mnist()
    (mnist.folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceNotFoundError) as caught:
        sources_from_path(mnist.folder)
    message = str(caught.value)
    assert str(mnist.folder) in message and "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte," not in message.split(";")[0]  # only the missing one is listed
    assert "--source" in message and MNIST_DIR_ENV in message


@pytest.mark.parametrize("second", ["train-images-idx3-ubyte", "train-images.idx3-ubyte.gz"])
def test_the_same_idx_file_twice_is_refused_naming_both(make_mnist: MakeMnist, second: str) -> None:
    """Beside train-images-idx3-ubyte.gz, a raw (or dotted) copy with other images: which one to build is no
    guess to make. Refused even when the contents agree, without reading either."""
    mnist = make_mnist(gz=True)
    write_idx(mnist.folder / second, mnist.arrays["train"]["x"][::-1].copy(), compress=second.endswith(".gz"))
    names = sorted(["train-images-idx3-ubyte.gz", second], key=["train-images-idx3-ubyte",
                   "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte.gz"].index)
    with pytest.raises(AmbiguousSourceError, match=f"^{mnist.folder}: holds {names[0]} and {names[1]}, the same "
                                                    "IDX file twice; keep one"):
        sources_from_path(mnist.folder)
    write_idx(mnist.folder / second, mnist.arrays["train"]["x"], compress=second.endswith(".gz"))  # equal now
    with pytest.raises(AmbiguousSourceError):
        sources_from_path(mnist.folder)


def test_an_idx_name_that_is_no_regular_file_is_refused_unopened(make_mnist: MakeMnist) -> None:
    mnist = make_mnist(gz=False)
    (mnist.folder / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(mnist.folder / "t10k-labels-idx1-ubyte")  # opening it would wait for a writer forever
    with pytest.raises(SourceFormatError, match="t10k-labels-idx1-ubyte: not a regular file"):
        sources_from_path(mnist.folder)


def test_nonexistent_path_is_source_not_found(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=f"{tmp_path / 'nowhere'}.*--source.*{MNIST_DIR_ENV}"):
        sources_from_path(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):  # the built-in a generic caller catches
        sources_from_path(tmp_path / "nowhere")


def test_resolution_order_source_then_env_then_keras_cache(make_mnist: MakeMnist, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env, cached = make_mnist("a", seed=1), make_mnist("b", seed=2), make_mnist("c", seed=3)
    keras_home = tmp_path / "keras_home"
    (keras_home / "datasets").mkdir(parents=True)
    _write_npz(keras_home / "datasets" / "mnist.npz", cached)
    environ = {MNIST_DIR_ENV: str(env.folder), "KERAS_HOME": str(keras_home)}
    _assert_same(mnist_sources(explicit.folder, environ=environ, download=False), explicit)
    _assert_same(mnist_sources(environ=environ, download=False), env)
    _assert_same(mnist_sources(environ={MNIST_DIR_ENV: "", "KERAS_HOME": str(keras_home)}, download=False), cached)


def test_nothing_local_and_no_download_names_the_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SourceNotFoundError) as caught:
        mnist_sources(environ={"KERAS_HOME": str(tmp_path)}, download=False)
    assert "--source" in str(caught.value) and MNIST_DIR_ENV in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_env_folder_that_is_wrong_is_reported_not_skipped(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=str(tmp_path / "missing")):
        mnist_sources(environ={MNIST_DIR_ENV: str(tmp_path / "missing")}, download=False)


# --- the real MNIST ----------------------------------------------------------------------------

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FILE_STEMS = {("train", "x"): "train-images-idx3-ubyte", ("train", "y"): "train-labels-idx1-ubyte",
              ("test", "x"): "t10k-images-idx3-ubyte", ("test", "y"): "t10k-labels-idx1-ubyte"}


def _published_sha256(mnist_dir: Path) -> dict[str, str]:
    """``SHA256SUMS.raw`` lines are ``<hex>  <file name without .gz>``, hashes of the decoded files."""
    sums = {}
    for line in (mnist_dir / "SHA256SUMS.raw").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name] = digest
    return sums


def test_real_mnist_headers(mnist_dir: Path) -> None:
    sources = sources_from_path(mnist_dir)
    assert sources["train"].num_samples == 60000 and sources["test"].num_samples == 10000
    assert sources["train"].specs["x"].shape == (28, 28) and sources["train"].specs["x"].dtype == "|u1"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_real_mnist_builds_with_the_published_facts(mnist_dir: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "mnist"
    build_dataset(sources_from_path(mnist_dir), out, BuildOptions(format=fmt, progress=False))
    assert verify_dataset(out, progress=False) == []
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train["x"].shape == (60000, 28, 28) and test["x"].shape == (10000, 28, 28)
    assert train["x"].dtype == np.uint8 and train["y"].dtype == np.uint8
    assert np.bincount(train["y"], minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(test["y"], minlength=10).tolist() == TEST_COUNTS
    assert train["y"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert round(float(train["x"].mean(dtype=np.float64)), 4) == 33.3184
    published = _published_sha256(mnist_dir)
    assert set(published) == set(FILE_STEMS.values())
    for (split, key), stem in FILE_STEMS.items():
        decoded = write_idx(tmp_path / stem, {"train": train, "test": test}[split][key])  # raw IDX from the shards
        assert hashlib.sha256(decoded.read_bytes()).hexdigest() == published[stem], stem


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")], ids=["ci", "local"])
def test_real_mnist_tests_fail_under_ci_when_the_copy_is_missing(tmp_path, ci: str, outcome: str) -> None:
    """Under CI a missing MNIST copy must not turn the real-MNIST tests into silent skips."""
    import subprocess
    import sys

    from conftest import subprocess_env

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"{__file__}::test_real_mnist_headers"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env=subprocess_env(CI=ci, STREAMLOAD_MNIST_DIR=str(tmp_path / "none")))
    assert outcome in result.stdout and result.returncode == (1 if ci else 0), result.stdout[-2000:]
    assert ("CI=true: the real-MNIST tests must run" in result.stdout) == bool(ci)
