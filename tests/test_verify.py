"""Tests for streamload.verify: a sound dataset has no problems, and every damaged file is reported by
name with what is wrong with it (size first, then SHA-256)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SyntheticMnist

from streamload.build import BuildOptions, build_dataset
from streamload.errors import ManifestError
from streamload.manifest import MANIFEST_NAME, read_manifest
from streamload.sources.mnist import sources_from_path
from streamload.verify import ShardProblem, check_file, verify_dataset


@pytest.fixture(params=["npy", "hdf5"])
def dataset(request: pytest.FixtureRequest, synthetic_mnist: SyntheticMnist, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    build_dataset(sources_from_path(synthetic_mnist.folder), out,
                  BuildOptions(format=request.param, shard_size=60, progress=False))
    return out


def _shard_file(dataset: Path, split: str, shard: int) -> str:
    files = read_manifest(dataset).split(split).shards[shard].files
    return files["x"].name if "x" in files else files["hdf5"].name


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_sound_dataset_has_no_problems(dataset: Path) -> None:
    assert verify_dataset(dataset, progress=False) == []


def test_truncated_shard(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 1)
    size = (dataset / name).stat().st_size
    with open(dataset / name, "r+b") as stream:
        stream.truncate(size - 100)
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("train", 1, name)]
    assert problems[0].problem == f"truncated: {size - 100} bytes, the manifest says {size}"


def test_shard_with_bytes_appended(dataset: Path) -> None:
    name = _shard_file(dataset, "test", 0)
    with open(dataset / name, "ab") as stream:
        stream.write(b"\0")
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("test", 0, name)]
    assert problems[0].problem.startswith("too long: ")


def test_bit_flip_in_the_middle_is_a_checksum_mismatch(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 2)
    _flip_middle_byte(dataset / name)
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("train", 2, name)]
    assert problems[0].problem.startswith("checksum mismatch: SHA-256 ")


def test_missing_shard(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 3)
    (dataset / name).unlink()
    problems = verify_dataset(dataset, progress=False)
    assert problems == [ShardProblem("train", 3, name, "missing")]
    assert str(problems[0]) == f"{name} (split 'train', shard 3): missing"


def test_every_problem_is_reported_not_just_the_first(dataset: Path) -> None:
    gone, flipped = _shard_file(dataset, "train", 0), _shard_file(dataset, "test", 0)
    (dataset / gone).unlink()
    _flip_middle_byte(dataset / flipped)
    problems = verify_dataset(dataset, progress=False)
    assert [(p.file, p.problem.split(":")[0]) for p in problems] == [(gone, "missing"), (flipped, "checksum mismatch")]


def test_no_manifest_is_a_manifest_error(dataset: Path, tmp_path: Path) -> None:
    (dataset / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match=str(dataset / MANIFEST_NAME)):
        verify_dataset(dataset, progress=False)
    with pytest.raises(ManifestError):
        verify_dataset(tmp_path / "nowhere", progress=False)


def test_copied_dataset_still_verifies(dataset: Path, tmp_path: Path) -> None:
    """The manifest names files relative to its folder, so a dataset can be moved or copied."""
    shutil.copytree(dataset, tmp_path / "copy")
    assert verify_dataset(tmp_path / "copy", progress=False) == []


def test_check_file_reports_progress_in_bytes(dataset: Path) -> None:
    info = read_manifest(dataset).split("train").shards[0].files
    first = next(iter(info.values()))
    seen: list[int] = []
    assert check_file(dataset / first.name, first, seen.append) is None
    assert sum(seen) == first.bytes
