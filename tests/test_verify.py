"""Tests for streamload.write.verify: a sound dataset has no problems, and every damaged file is reported by
name with what is wrong with it: size, header against the manifest (dtype, shape, row count, format,
file roles), SHA-256 and CRC-32, and labels outside the recorded range. Manifests edited by hand so
that they still load (every field valid) but disagree with the shard files are the main fault here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SyntheticMnist
from shards import build, make_writable, plant_foreign_hdf5, rehash_manifests, shard_folder

from streamload.errors import ManifestError
from streamload.format.manifest import MANIFEST_NAME, read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.mnist import sources_from_path
from streamload.write.verify import ShardProblem, check_file, verify_dataset


@pytest.fixture(params=["npy", "hdf5"])
def dataset(request: pytest.FixtureRequest, synthetic_mnist: SyntheticMnist, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    build_dataset(sources_from_path(synthetic_mnist.folder), out,
                  BuildOptions(format=request.param, shard_size=60, progress=False))
    return out


def _shard_file(dataset: Path, split: str, shard: int) -> str:
    files = read_manifest(dataset).split(split).shards[shard].files
    return files["x"].name if "x" in files else files["hdf5"].name


def _root(dataset: Path) -> Path:
    return dataset / str(read_manifest(dataset).generation)


def _flip_middle_byte(path: Path) -> None:
    make_writable(path)  # shards are written read-only
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_sound_dataset_has_no_problems(dataset: Path) -> None:
    assert verify_dataset(dataset, progress=False) == []


def test_truncated_shard(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 1)
    size = (_root(dataset) / name).stat().st_size
    with open(make_writable(_root(dataset) / name), "r+b") as stream:
        stream.truncate(size - 100)
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("train", 1, name)]
    assert problems[0].problem == f"truncated: {size - 100} bytes, the manifest says {size}"


def test_shard_with_bytes_appended(dataset: Path) -> None:
    name = _shard_file(dataset, "test", 0)
    with open(make_writable(_root(dataset) / name), "ab") as stream:
        stream.write(b"\0")
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("test", 0, name)]
    assert problems[0].problem.startswith("too long: ")


def test_bit_flip_in_the_middle_is_a_checksum_mismatch(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 2)
    _flip_middle_byte(_root(dataset) / name)
    problems = verify_dataset(dataset, progress=False)
    assert [(p.split, p.shard, p.file) for p in problems] == [("train", 2, name)]
    assert problems[0].problem.startswith("checksum mismatch: SHA-256 ")


def test_missing_shard(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 3)
    (_root(dataset) / name).unlink()
    problems = verify_dataset(dataset, progress=False)
    assert problems == [ShardProblem("train", 3, name, "missing")]
    assert str(problems[0]) == f"{name} (split 'train', shard 3): missing"


def test_every_problem_is_reported_not_just_the_first(dataset: Path) -> None:
    gone, flipped = _shard_file(dataset, "train", 0), _shard_file(dataset, "test", 0)
    (_root(dataset) / gone).unlink()
    _flip_middle_byte(_root(dataset) / flipped)
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
    assert check_file(_root(dataset) / first.name, first, seen.append) is None
    assert sum(seen) == first.bytes


# --- the manifest disagrees with the shard files (edited, still a valid manifest) ----------------


def _edit(dataset: Path, change: Callable[[dict], None], copy: bool = True) -> None:
    """Change DIR/manifest.json (and, with ``copy``, the generation's copy the same way)."""
    paths = [dataset / MANIFEST_NAME] + ([_root(dataset) / MANIFEST_NAME] if copy else [])
    for path in paths:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    read_manifest(dataset)  # still loads: only verify can tell it from the files


def _problems(dataset: Path) -> list[tuple[str, int, str]]:
    return [(p.split, p.shard, p.problem) for p in verify_dataset(dataset, progress=False)]


def _move_one_sample(data: dict) -> None:
    """Shard 0 of train says one sample fewer and shard 1 one more: totals and hashes stay right."""
    shards = data["splits"]["train"]["shards"]
    shards[0]["num_samples"] -= 1
    shards[1]["num_samples"] += 1


def test_sample_counts_that_disagree_with_the_headers(dataset: Path) -> None:
    _edit(dataset, _move_one_sample)
    fmt = read_manifest(dataset).format
    said = "header" if fmt == "npy" else "file"
    x_60 = f"array 'x': {said} says shape (60, 28, 28), the manifest says (59, 28, 28)"
    y_60 = f"array 'y': {said} says shape (60,), the manifest says (59,)"
    problems = _problems(dataset)
    if fmt == "npy":
        assert problems == [("train", 0, x_60), ("train", 0, y_60),
                            ("train", 1, x_60.replace("(59", "(61")), ("train", 1, y_60.replace("(59", "(61"))]
    else:
        assert problems == [("train", 0, f"{x_60}; {y_60}"),
                            ("train", 1, f"{x_60}; {y_60}".replace("(59", "(61"))]


def test_dtype_and_shape_that_disagree_with_the_headers(dataset: Path) -> None:
    def change(data: dict) -> None:
        data["splits"]["test"]["arrays"]["x"] = {"dtype": "<f4", "shape": [784]}
    _edit(dataset, change)
    fmt = read_manifest(dataset).format
    said = "header" if fmt == "npy" else "file"
    expected = (f"array 'x': {said} says dtype |u1, the manifest says <f4; "
                f"array 'x': {said} says shape (37, 28, 28), the manifest says (37, 784)")
    assert _problems(dataset) == [("test", 0, expected)]


def test_file_roles_swapped(dataset: Path) -> None:
    """The manifest's x entry names the y file and the other way round (hashes swapped with them)."""
    def change(data: dict) -> None:
        files = data["splits"]["test"]["shards"][0]["files"]
        if "x" in files:
            files["x"], files["y"] = files["y"], files["x"]
        else:
            data["splits"]["test"]["arrays"] = {"y": data["splits"]["test"]["arrays"]["x"], "x": {"dtype": "|u1",
                                                                                                  "shape": []}}
    _edit(dataset, change)
    problems = _problems(dataset)
    assert [(split, shard) for split, shard, _ in problems] == [("test", 0)] * len(problems) and problems
    text = " ".join(problem for *_, problem in problems)
    assert "array 'x'" in text and "says shape (37,), the manifest says (37, 28, 28)" in text


def test_format_that_disagrees_with_the_files(dataset: Path) -> None:
    def change(data: dict) -> None:
        npy = data["format"] == "npy"
        data["format"] = "hdf5" if npy else "npy"
        for split in data["splits"].values():
            for shard in split["shards"]:
                files = shard["files"]
                shard["files"] = {"hdf5": files["x"]} if npy else {"x": files["hdf5"], "y": files["hdf5"]}
    _edit(dataset, change)
    problems = _problems(dataset)
    assert len(problems) == (5 if read_manifest(dataset).format == "hdf5" else 10)  # every file of the 5 shards
    expected = "not a readable HDF5 file" if read_manifest(dataset).format == "hdf5" else "not a .npy header"
    assert all(expected in problem for *_, problem in problems), problems


def test_crc32_mismatch_with_a_matching_sha256(dataset: Path) -> None:
    def change(data: dict) -> None:
        info = next(iter(data["splits"]["train"]["shards"][2]["files"].values()))
        info["crc32"] ^= 1
    _edit(dataset, change)
    ((split, shard, problem),) = _problems(dataset)
    assert (split, shard) == ("train", 2) and problem.startswith("checksum mismatch: CRC-32 ")


def test_labels_outside_the_recorded_range(dataset: Path) -> None:
    def change(data: dict) -> None:
        data["labels"].update(num_classes=9, max=8)
    _edit(dataset, change)
    problems = _problems(dataset)
    assert problems and all("array 'y': labels lie in [0, 9], outside the manifest's labels range [0, 8] of 9 "
                            "classes" == problem for *_, problem in problems)


def test_manifest_and_its_generation_copy_must_agree(dataset: Path) -> None:
    _edit(dataset, _move_one_sample, copy=False)
    problems = verify_dataset(dataset, progress=False)
    assert str(problems[0]) == f"{read_manifest(dataset).generation}/{MANIFEST_NAME}: differs from " \
                               f"{dataset / MANIFEST_NAME}"


# --- hostile shards: links, FIFOs, data outside the file, contents in messages ------------------------


def test_a_shard_that_is_a_symbolic_link_is_a_problem(dataset: Path) -> None:
    name = _shard_file(dataset, "train", 1)
    outside = dataset.parent / "outside"
    (_root(dataset) / name).rename(outside)  # the very bytes the manifest records, reached through a link
    (_root(dataset) / name).symlink_to(outside)
    assert _problems(dataset) == [("train", 1, "is a symbolic link; shard files must be regular files inside the "
                                                "dataset folder")]


VERIFY = ("import sys; from streamload.write.verify import verify_dataset; "
          "print(*verify_dataset(sys.argv[1], progress=False))")


def test_a_shard_that_is_a_fifo_is_a_problem_without_waiting(dataset: Path) -> None:
    """In a child with a time limit: opening a FIFO waits for a writer (h5py waits holding the GIL)."""
    import os
    import subprocess
    import sys

    from conftest import subprocess_env

    name = _shard_file(dataset, "train", 1)
    (_root(dataset) / name).unlink()
    os.mkfifo(_root(dataset) / name)

    def change(data: dict) -> None:  # the size a FIFO has, so that only opening it can tell
        next(iter(data["splits"]["train"]["shards"][1]["files"].values()))["bytes"] = 0
    _edit(dataset, change)
    try:
        result = subprocess.run([sys.executable, "-c", VERIFY, str(dataset)], capture_output=True, text=True,
                                timeout=60, env=subprocess_env())
    except subprocess.TimeoutExpired:
        pytest.fail("--verify waited on a shard that is a FIFO")
    assert result.stdout.strip() == f"{name} (split 'train', shard 1): is not a regular file; shard files must be " \
                                    "regular files inside the dataset folder", result.stderr[-2000:]


@pytest.mark.parametrize("kind", ["external", "virtual", "external_link"])
def test_hdf5_data_stored_outside_the_shard_is_a_problem(tmp_path: Path, kind: str) -> None:
    directory, _ = build(tmp_path, 100, "hdf5", name="ds")
    plant_foreign_hdf5(directory, kind)  # sizes and hashes of the shard file recorded: only its layout tells
    words = {"external": "uses HDF5 external storage (its data lies in other files), not stored in the shard file",
             "virtual": "is a virtual dataset (its data lies in other files), not stored in the shard file",
             "external_link": "is an HDF5 ExternalLink to data elsewhere, not a dataset stored in the shard file"}[kind]
    assert _problems(directory) == [("train", 0, f"array 'x': {words}")]


def test_problems_never_quote_the_bytes_of_a_file(tmp_path: Path) -> None:
    directory, _ = build(tmp_path, 100, "npy", name="ds")
    path = shard_folder(directory) / "train-00000.x.npy"
    path.unlink()
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    rehash_manifests(directory)
    assert _problems(directory) == [("train", 0, "header: not a .npy header (no readable .npy magic and header)")]


def _damage_offsets(directory: Path, fmt: str, damage: Callable) -> str:
    """Damage the offsets of the first train shard's ragged ``x`` and record the new hashes (as a hostile or
    careless author would): only the offsets check can then see it. Returns the damaged file's name."""
    import h5py
    import numpy as np

    folder = shard_folder(directory)
    name = "train-00000.x.offsets.npy" if fmt == "npy" else "train-00000.h5"
    path = make_writable(folder / name)
    if fmt == "npy":
        offsets = np.load(path, mmap_mode="r+")
        damage(offsets)
        offsets.flush()
        del offsets
    else:
        with h5py.File(path, "r+") as handle:
            offsets = handle["x.offsets"][()]
            damage(offsets)
            handle["x.offsets"][...] = offsets
    rehash_manifests(directory)
    return name


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("damage,problem", [
    (lambda o: o.__setitem__(3, o[5] + 1), "offsets: decrease at sample 3"),
    (lambda o: o.__setitem__(-1, o[-1] + 1), "past the end of the"),
    (lambda o: o.__setitem__(0, 1), "offsets: start at 1")])
def test_damaged_offsets_are_named(tmp_path: Path, fmt: str, damage: Callable, problem: str) -> None:
    from shards import build_sequences

    directory, _, _ = build_sequences(tmp_path, 60, fmt, shard_size=30)
    assert verify_dataset(directory, progress=False) == []
    name = _damage_offsets(directory, fmt, damage)
    problems = verify_dataset(directory, progress=False)
    assert [(p.file, p.shard) for p in problems] == [(name, 0)]
    assert problem in problems[0].problem
