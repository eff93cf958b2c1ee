"""Samples of varying length from NumPy files: ``X`` plus ``X_lengths`` in an ``.npz`` or a folder of ``.npy``
files, built by the command line, for inputs and targets alike; object arrays refused unless ``--allow-pickle``
says the file is trusted."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILD_SCRIPT, subprocess_env

from streamload.errors import SourceFormatError, SourceMismatchError
from streamload.read.dataset import ShardedDataset
from streamload.write.sources.iterables import IterableSource
from streamload.write.sources.numpy_files import numpy_sources


def _sequences(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 500, rng.integers(0, 12)).astype(np.int32) for _ in range(n)]


def _records_of(directory: Path, split: str = "train", key: str = "x") -> list[np.ndarray]:
    dataset = ShardedDataset(directory, split)
    return [dataset[i][key] for i in range(len(dataset))]


def _same(records: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(records, expected, strict=True))


def _build(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BUILD_SCRIPT, "--source", str(source), "--out", str(out), "--shard-size", "17", "--quiet",
                           *extra], capture_output=True, text=True, env=subprocess_env(), timeout=300)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_npz_with_lengths_builds_from_the_command_line(tmp_path, fmt) -> None:
    train, test = _sequences(60), _sequences(25, seed=1)
    path = tmp_path / "tokens.npz"
    np.savez(path, x_train=np.concatenate(train), x_train_lengths=[len(s) for s in train], y_train=np.arange(60) % 3,
             x_test=np.concatenate(test), x_test_lengths=[len(s) for s in test], y_test=np.arange(25) % 3)
    result = _build(path, tmp_path / "out", "--format", fmt)
    assert result.returncode == 0, result.stderr
    for split, expected in (("train", train), ("test", test)):
        assert all(np.array_equal(a, b) for a, b in zip(_records_of(tmp_path / "out", split), expected, strict=True))


def test_npy_folder_with_lengths(tmp_path) -> None:
    seqs = _sequences(40)
    np.save(tmp_path / "x.npy", np.concatenate(seqs))
    np.save(tmp_path / "x_lengths.npy", np.array([len(s) for s in seqs]))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    (source,) = numpy_sources(tmp_path).values()
    assert source.specs["x"].shape == (None,) and source.num_samples == 40
    chunks = list(source.iter_chunks(16))
    assert [len(c["x"]) for c in chunks] == [16, 16, 8]
    assert all(np.array_equal(c["x"][i], seqs[16 * k + i]) for k, c in enumerate(chunks) for i in range(len(c["x"])))


def test_lengths_that_do_not_add_up_are_refused(tmp_path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.arange(10), x_lengths=[3, 3, 3], y=[0, 1, 2])
    with pytest.raises(SourceMismatchError, match=f"{path}: x_lengths adds up to 9 rows, x holds 10"):
        numpy_sources(path)


def test_object_arrays_need_allow_pickle(tmp_path) -> None:
    seqs = _sequences(30)
    objects = np.empty(30, dtype=object)
    objects[:] = seqs
    path = tmp_path / "objects.npz"
    np.savez(path, x=objects, y=np.arange(30) % 2)
    with pytest.raises(SourceFormatError, match=r"holds Python objects.*x_lengths.*--allow-pickle"):
        numpy_sources(path)
    refused = _build(path, tmp_path / "refused")
    assert refused.returncode != 0 and "--allow-pickle" in refused.stderr and not (tmp_path / "refused").exists()
    result = _build(path, tmp_path / "out", "--allow-pickle")
    assert result.returncode == 0, result.stderr
    assert all(np.array_equal(a, b) for a, b in zip(_records_of(tmp_path / "out"), seqs, strict=True))


def test_iterable_of_varying_lengths_needs_ragged_and_then_builds(tmp_path) -> None:
    from streamload import BuildOptions, build_dataset

    seqs = _sequences(50)
    items = [(s, i % 3) for i, s in enumerate(seqs)]
    with pytest.raises(SourceMismatchError, match=r"pass ragged=\['x'\]"):
        list(IterableSource(items).iter_chunks())
    for given in (items, iter(items)):  # a list, and a one-shot iterator spilled to disk first
        build_dataset({"train": IterableSource(given, ragged=["x"])}, tmp_path / "out",
                      BuildOptions(progress=False, chunk_rows=7, overwrite=True))
        assert all(np.array_equal(a, b) for a, b in zip(_records_of(tmp_path / "out"), seqs, strict=True))


def test_validation_split_of_sequences_keeps_every_record_once(tmp_path) -> None:
    seqs = _sequences(100)
    path = tmp_path / "t.npz"
    np.savez(path, x=np.concatenate(seqs), x_lengths=[len(s) for s in seqs], y=np.arange(100) % 3)
    result = _build(path, tmp_path / "out", "--validation-split", "0.2")
    assert result.returncode == 0, result.stderr
    train, validation = _records_of(tmp_path / "out"), _records_of(tmp_path / "out", "validation")
    assert (len(train), len(validation)) == (80, 20)
    assert sorted(map(tuple, train + validation)) == sorted(map(tuple, seqs))


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_npz_with_ragged_targets_builds_and_trains_a_tagger_s_batches(tmp_path, fmt) -> None:
    from streamload.read.loader import BatchLoader

    tokens = _sequences(60)
    tags = [(s % 4).astype(np.uint8) for s in tokens]
    path = tmp_path / "tagged.npz"
    np.savez(path, x=np.concatenate(tokens), x_lengths=[len(s) for s in tokens], y=np.concatenate(tags),
             y_lengths=[len(t) for t in tags])
    result = _build(path, tmp_path / "out", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert _same(_records_of(tmp_path / "out"), tokens) and _same(_records_of(tmp_path / "out", key="y"), tags)
    x, y, weights = BatchLoader(tmp_path / "out", batch_size=8, shuffle=False).load(0, 0)
    assert y.shape == x["x"].shape and np.array_equal(weights.astype(bool), x["x_mask"])


def test_npy_folder_with_fixed_inputs_and_ragged_targets(tmp_path) -> None:
    captions = _sequences(30, seed=2)
    np.save(tmp_path / "x.npy", np.arange(30 * 4, dtype=np.float32).reshape(30, 4))
    np.save(tmp_path / "y.npy", np.concatenate(captions))
    np.save(tmp_path / "y_lengths.npy", np.array([len(c) for c in captions]))
    (source,) = numpy_sources(tmp_path).values()
    assert source.specs["x"].shape == (4,) and source.specs["y"].shape == (None,) and source.num_samples == 30
    assert "y + y_lengths" in source.description
    chunks = list(source.iter_chunks(16))
    assert np.array_equal(np.concatenate([c["x"] for c in chunks]), np.load(tmp_path / "x.npy"))
    assert _same([c["y"][i] for c in chunks for i in range(len(c["y"]))], captions)
    np.save(tmp_path / "x.npy", np.zeros((29, 4), np.float32))
    with pytest.raises(SourceMismatchError, match=f"{tmp_path}: x has 29 samples, y_lengths has 30"):
        numpy_sources(tmp_path)


def test_trusted_object_targets_become_records(tmp_path) -> None:
    tokens = _sequences(20)
    objects = np.empty(20, dtype=object)
    objects[:] = [(s % 4).astype(np.uint8) for s in tokens]
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.arange(20), y=objects)
    result = _build(path, tmp_path / "out", "--allow-pickle")
    assert result.returncode == 0, result.stderr
    assert _same(_records_of(tmp_path / "out", key="y"), list(objects))
