"""Tests for streamload.build: exact round trips, bad input that leaves the output alone, overwrite,
and builds killed part-way (a real process, SIGKILL) that never damage the dataset at the target."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MakeMnist, SyntheticMnist, leftovers, read_split, subprocess_env, tree_snapshot

from streamload.build import BuildOptions, build_dataset
from streamload.errors import (
    DatasetExistsError,
    IdxFormatError,
    InvalidOptionError,
    SourceMismatchError,
    SourceNotFoundError,
)
from streamload.manifest import MANIFEST_NAME, read_manifest
from streamload.sources import ArraySource
from streamload.sources.idx import write_idx
from streamload.sources.mnist import MNIST_DIR_ENV, mnist_sources, sources_from_path
from streamload.verify import verify_dataset

QUIET = {"progress": False}


def _build(src: Path, out: Path, **options: object) -> None:
    build_dataset(sources_from_path(src), out, BuildOptions(**{**QUIET, **options}))  # type: ignore[arg-type]


def _assert_holds(out: Path, mnist: SyntheticMnist) -> None:
    for split in ("train", "test"):
        back = read_split(out, split)
        for key in ("x", "y"):
            assert back[key].dtype == mnist.arrays[split][key].dtype.newbyteorder("=")
            np.testing.assert_array_equal(back[key], mnist.arrays[split][key])


FORMATS = [("npy", None), ("hdf5", None), ("hdf5", "gzip"), ("hdf5", "lzf")]


@pytest.mark.parametrize("fmt, compression", FORMATS, ids=["npy", "hdf5", "hdf5-gzip", "hdf5-lzf"])
@pytest.mark.parametrize("shard_size", [None, 64, 203, 1000], ids=["default", "uneven", "exact", "over"])
def test_round_trip(synthetic_mnist: SyntheticMnist, tmp_path: Path, fmt: str, compression: str | None,
                    shard_size: int | None) -> None:
    out = tmp_path / "ds"
    _build(synthetic_mnist.folder, out, format=fmt, compression=compression, shard_size=shard_size, chunk_rows=50)
    manifest = read_manifest(out)
    assert manifest.format == fmt
    per_shard = shard_size or 10**9
    assert len(manifest.split("train").shards) == math.ceil(203 / per_shard)
    assert [s.num_samples for s in manifest.split("test").shards] == [min(37, per_shard)] * math.ceil(37 / per_shard)
    _assert_holds(out, synthetic_mnist)
    assert verify_dataset(out, progress=False) == []
    assert leftovers(out) == []


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_shard_size_one(make_mnist: MakeMnist, tmp_path: Path, fmt: str) -> None:
    mnist = make_mnist(n_train=12, n_test=3)
    _build(mnist.folder, tmp_path / "ds", format=fmt, shard_size=1)
    assert [s.num_samples for s in read_manifest(tmp_path / "ds").split("train").shards] == [1] * 12
    _assert_holds(tmp_path / "ds", mnist)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize("image_dtype", [">i2", ">f4", "i1"])
def test_any_idx_dtype_is_stored_native_endian(make_mnist: MakeMnist, tmp_path: Path, fmt: str,
                                               image_dtype: str) -> None:
    mnist = make_mnist(n_train=40, n_test=9, image_dtype=image_dtype)
    _build(mnist.folder, tmp_path / "ds", format=fmt, shard_size=16)
    manifest = read_manifest(tmp_path / "ds")
    native = np.dtype(image_dtype).newbyteorder("=")
    assert manifest.split("train").arrays["x"].dtype == native.str
    assert read_split(tmp_path / "ds", "train")["x"].dtype.isnative
    _assert_holds(tmp_path / "ds", mnist)


def test_empty_existing_folder_is_a_valid_target(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    _build(synthetic_mnist.folder, tmp_path / "ds")
    _assert_holds(tmp_path / "ds", synthetic_mnist)


def test_missing_parent_folders_are_created(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    _build(synthetic_mnist.folder, tmp_path / "a" / "b" / "ds")
    _assert_holds(tmp_path / "a" / "b" / "ds", synthetic_mnist)


def test_overwrite_replaces_a_dataset_completely(make_mnist: MakeMnist, tmp_path: Path) -> None:
    first, second = make_mnist("first", seed=1), make_mnist("second", n_train=50, n_test=5, seed=2)
    out = tmp_path / "ds"
    _build(first.folder, out, format="npy", shard_size=30)
    _build(second.folder, out, format="hdf5", shard_size=20, overwrite=True)
    assert read_manifest(out).format == "hdf5"
    assert not list(out.glob("*.npy"))  # nothing of the old dataset is left inside
    assert verify_dataset(out, progress=False) == []
    _assert_holds(out, second)
    assert leftovers(out) == []


# --- bad input leaves the output untouched -------------------------------------------------------


def _wrong_magic(mnist: SyntheticMnist) -> None:
    path = mnist.folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x00\x01\x08\x01" + len(mnist.arrays["train"]["y"]).to_bytes(4, "big") + bytes(3000))


def _truncate(name: str) -> object:
    def damage(mnist: SyntheticMnist) -> None:
        path = mnist.folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.8)])  # late in the file: some shards are written first
    return damage


def _count_mismatch(mnist: SyntheticMnist) -> None:
    write_idx(mnist.folder / "t10k-labels-idx1-ubyte.gz", mnist.arrays["test"]["y"][:-1])


def _no_source(mnist: SyntheticMnist) -> None:
    (mnist.folder / "train-images-idx3-ubyte.gz").unlink()


SOURCE_DAMAGE = {
    "wrong-magic": (_wrong_magic, IdxFormatError, False),
    "truncated-gz": (_truncate("train-images-idx3-ubyte.gz"), IdxFormatError, False),
    "truncated-raw": (_truncate("train-images-idx3-ubyte"), IdxFormatError, True),
    "count-mismatch": (_count_mismatch, SourceMismatchError, False),
    "no-source": (_no_source, SourceNotFoundError, False),
}
BAD_OPTIONS = {
    "shard-size-0": ({"shard_size": 0}, InvalidOptionError),
    "shard-size-negative": ({"shard_size": -3}, InvalidOptionError),
    "unknown-format": ({"format": "zarr"}, InvalidOptionError),
    "npy-compression": ({"format": "npy", "compression": "gzip"}, InvalidOptionError),
    "unknown-compression": ({"format": "hdf5", "compression": "zstd"}, InvalidOptionError),
    "chunk-rows-0": ({"chunk_rows": 0}, InvalidOptionError),
}


@pytest.fixture(params=["existing-dataset", "no-target"])
def target(request: pytest.FixtureRequest, make_mnist: MakeMnist, tmp_path: Path) -> Path:
    """An output path that holds a sound dataset, or does not exist yet."""
    out = tmp_path / "out" / "ds"
    if request.param == "existing-dataset":
        _build(make_mnist("old", n_train=30, n_test=5, seed=9).folder, out, shard_size=7)
    return out


def _attempt(src: Path, out: Path, options: dict[str, object]) -> None:
    build_dataset(mnist_sources(src, download=False), out, BuildOptions(**{**QUIET, **options}))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", SOURCE_DAMAGE)
def test_bad_source_leaves_target_untouched(make_mnist: MakeMnist, target: Path, case: str) -> None:
    damage, error, raw = SOURCE_DAMAGE[case]
    mnist = make_mnist(gz=not raw, n_train=3000, n_test=10)
    damage(mnist)
    before = tree_snapshot(target)
    with pytest.raises(error) as caught:
        _attempt(mnist.folder, target, {"overwrite": True, "shard_size": 100, "chunk_rows": 100})
    assert str(mnist.folder) in str(caught.value)
    assert tree_snapshot(target) == before
    assert leftovers(target) == []
    if before is not None:
        assert verify_dataset(target, progress=False) == []


def test_missing_source_error_names_the_ways_out(target: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        _attempt(tmp_path / "nowhere", target, {"overwrite": True})
    assert "--source" in str(caught.value) and MNIST_DIR_ENV in str(caught.value)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_options_leave_target_untouched(synthetic_mnist: SyntheticMnist, target: Path, case: str) -> None:
    options, error = BAD_OPTIONS[case]
    before = tree_snapshot(target)
    with pytest.raises(error):
        _attempt(synthetic_mnist.folder, target, {"overwrite": True, **options})
    assert tree_snapshot(target) == before
    assert leftovers(target) == []


def test_existing_dataset_needs_overwrite(make_mnist: MakeMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(make_mnist("old", seed=1).folder, out)
    before = tree_snapshot(out)
    with pytest.raises(DatasetExistsError, match=f"{out}: .*--overwrite"):
        _build(make_mnist("new", seed=2).folder, out)
    assert tree_snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_non_dataset_folder_is_never_replaced(synthetic_mnist: SyntheticMnist, tmp_path: Path,
                                              overwrite: bool) -> None:
    out = tmp_path / "home"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "thesis.tex").write_text("precious")
    before = tree_snapshot(out)
    with pytest.raises(DatasetExistsError, match=f"{out}: folder is not empty and holds no {MANIFEST_NAME}"):
        _build(synthetic_mnist.folder, out, overwrite=overwrite)
    assert tree_snapshot(out) == before and leftovers(out) == []


def test_file_at_target_is_never_replaced(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.write_text("not a folder")
    with pytest.raises(DatasetExistsError, match="not a folder"):
        _build(synthetic_mnist.folder, out, overwrite=True)
    assert out.read_text() == "not a folder" and leftovers(out) == []


# --- abandoned builds ----------------------------------------------------------------------------


class _RecordingSource(ArraySource):
    """An ArraySource that counts the chunks a build has taken from it."""

    chunks_read = 0

    def iter_chunks(self, chunk_rows: int = 8192):  # noqa: ANN201 - same as the base
        for chunk in super().iter_chunks(chunk_rows):
            self.chunks_read += 1
            yield chunk


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_of_dead_builds_is_removed_and_of_live_ones_kept(synthetic_mnist: SyntheticMnist,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "ds"
    dead = tmp_path / f".ds.building-{_dead_pid()}"
    other_target = tmp_path / f".other.building-{_dead_pid()}"
    live_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".ds.building-{live_child.pid}"
        for folder in (dead, other_target, live):
            (folder / "half").mkdir(parents=True)
        _build(synthetic_mnist.folder, out)
        assert not dead.exists()
        assert live.exists() and other_target.exists()  # still being written / another dataset's
    finally:
        live_child.kill()
        live_child.wait()
    _assert_holds(out, synthetic_mnist)


@pytest.mark.parametrize("overwrite", [False, True])
def test_dataset_retired_by_a_killed_swap_is_put_back(make_mnist: MakeMnist, tmp_path: Path,
                                                       overwrite: bool) -> None:
    """The fallback swap renames out -> .out.retired-PID, then staging -> out; killed in between, the
    next build must restore the old dataset, and without --overwrite refuse to replace it."""
    old, new = make_mnist("old", seed=1), make_mnist("new", seed=2)
    out = tmp_path / "ds"
    _build(old.folder, out)
    before = tree_snapshot(out)
    out.rename(tmp_path / f".ds.retired-{_dead_pid()}")
    if overwrite:
        _build(new.folder, out, overwrite=True)
        _assert_holds(out, new)
    else:
        source = _RecordingSource(x=new.arrays["train"]["x"], y=new.arrays["train"]["y"])
        with pytest.raises(DatasetExistsError, match="--overwrite"):
            build_dataset({"train": source}, out, BuildOptions(progress=False))
        assert source.chunks_read == 0  # refused up front, not after writing a whole dataset
        assert tree_snapshot(out) == before
    assert leftovers(out) == []


KILLED_BUILD = """
import sys, time
import numpy as np
from streamload import ArraySource, BuildOptions, build_dataset

class SlowSource(ArraySource):
    def iter_chunks(self, chunk_rows):
        for chunk in super().iter_chunks(chunk_rows):
            time.sleep(0.05)  # a build that takes seconds: stands in for a big or augmented source
            yield chunk

rng = np.random.default_rng(1)
x, y = rng.integers(0, 256, (6000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 6000, dtype=np.uint8)
options = BuildOptions(format=sys.argv[2], shard_size=100, chunk_rows=100, overwrite=True, progress=False)
build_dataset({"train": SlowSource(x=x, y=y)}, sys.argv[1], options)
"""


def _wait_for(path: Path, child: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.poll() is None, f"build exited early: {child.stderr.read() if child.stderr else ''}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_killed_build_keeps_the_old_dataset(make_mnist: MakeMnist, tmp_path: Path, fmt: str) -> None:
    old = make_mnist("old", n_train=50, n_test=5)
    out = tmp_path / "ds"
    _build(old.folder, out, shard_size=20)
    before, manifest = tree_snapshot(out), read_manifest(out)
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(out), fmt], env=subprocess_env(),
                             stderr=subprocess.PIPE)
    staging = tmp_path / f".ds.building-{child.pid}"
    try:
        _wait_for(staging / ("train-00002.x.npy" if fmt == "npy" else "train-00002.h5"), child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert tree_snapshot(out) == before and read_manifest(out) == manifest
    assert verify_dataset(out, progress=False) == []
    _assert_holds(out, old)
    assert staging.is_dir() and not (staging / MANIFEST_NAME).exists()  # abandoned, visibly incomplete
    assert leftovers(out) == [staging.name]

    x = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    build_dataset({"train": ArraySource(x=x, y=np.arange(5, dtype=np.uint8))}, out,
                  BuildOptions(overwrite=True, progress=False))
    assert leftovers(out) == [] and verify_dataset(out, progress=False) == []
    np.testing.assert_array_equal(read_split(out, "train")["x"], x)


def test_abandoned_staging_is_found_for_names_with_glob_characters(synthetic_mnist: SyntheticMnist,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "mnist[8m]"
    dead = tmp_path / f".mnist[8m].building-{_dead_pid()}"
    lookalike = tmp_path / f".mnist8.building-{_dead_pid()}"  # what the unescaped pattern would match
    dead.mkdir()
    lookalike.mkdir()
    _build(synthetic_mnist.folder, out)
    assert not dead.exists() and lookalike.exists()
    _assert_holds(out, synthetic_mnist)
