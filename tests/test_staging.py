"""Tests for streamload.write.staging through real builds: builds killed part-way (SIGKILL) never damage the
dataset; liveness of a build is its lock (a lock-holding process, a build in another PID namespace),
never its process id; builds of one folder never overlap; a full disk is one clear error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    BUILD_SCRIPT,
    MakeMnist,
    SyntheticMnist,
    leftovers,
    lock_held,
    read_split,
    subprocess_env,
    tree_snapshot,
)

from streamload.errors import DatasetBusyError, OutOfSpaceError
from streamload.format.manifest import MANIFEST_NAME, read_manifest
from streamload.places.layout import BUILD_LOCK_NAME, LOCK_NAME, list_generations
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource
from streamload.write.sources.mnist import sources_from_path
from streamload.write.verify import verify_dataset

QUIET = {"progress": False}

# A build of 600 samples in shards of 100 that stops after three chunks until GATE exists (never, if
# the test kills it): a real process whose staging folder is half written for as long as the test needs.
BUILDER = """
import sys, time
from pathlib import Path
import numpy as np
from streamload import ArraySource, BuildOptions, build_dataset

out, fmt, gate, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

class GatedSource(ArraySource):
    def iter_chunks(self, chunk_rows):
        for index, chunk in enumerate(super().iter_chunks(chunk_rows)):
            while index >= 3 and not gate.exists():
                time.sleep(0.01)
            yield chunk

rng = np.random.default_rng(seed)
x, y = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8), rng.integers(0, 10, 600, dtype=np.uint8)
options = BuildOptions(format=fmt, shard_size=100, chunk_rows=100, overwrite=True, progress=False)
build_dataset({"train": GatedSource(x=x, y=y)}, out, options)
"""


def _builder_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, 256, (600, 28, 28), dtype=np.uint8), "y": rng.integers(0, 10, 600, dtype=np.uint8)}


def _start_builder(out: Path, gate: Path, fmt: str = "npy", seed: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(out), fmt, str(gate), str(seed)],
                            env=subprocess_env(), stderr=subprocess.PIPE, text=True)


def _wait_for_file(folder: Path, pattern: str, child: subprocess.Popen[str], timeout: float = 60.0) -> Path:
    """The first match of ``pattern`` under ``folder`` once it exists (the builder is half-way)."""
    deadline = time.monotonic() + timeout
    while not (found := sorted(folder.glob(pattern))):
        assert child.poll() is None, f"build exited early: {child.stderr.read() if child.stderr else ''}"
        assert time.monotonic() < deadline, f"{folder}/{pattern} did not appear"
        time.sleep(0.01)
    return found[0]


def _finish(child: subprocess.Popen[str], gate: Path) -> None:
    gate.touch()
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def _quick_build(mnist: SyntheticMnist, out: Path, **options: object) -> None:
    build_dataset(sources_from_path(mnist.folder), out, BuildOptions(**{**QUIET, **options}))  # type: ignore[arg-type]


def _assert_holds(out: Path, arrays: dict[str, np.ndarray], split: str = "train") -> None:
    back = read_split(out, split)
    for key in arrays:
        np.testing.assert_array_equal(back[key], arrays[key])


# --- killed builds -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_killed_build_keeps_the_old_dataset(make_mnist: MakeMnist, tmp_path: Path, fmt: str) -> None:
    old = make_mnist("old", n_train=50, n_test=5)
    out = tmp_path / "ds"
    _quick_build(old, out, shard_size=20)
    before, manifest = tree_snapshot(out), read_manifest(out)
    child = _start_builder(out, tmp_path / "never", fmt)
    try:
        staged = _wait_for_file(out, ".staging-gen-000002-*/train-00002.*", child)
    finally:
        _kill(child)
    staging = staged.parent
    assert not (staging / MANIFEST_NAME).exists()  # abandoned, visibly incomplete
    assert leftovers(out) == [staging.name]
    assert tree_snapshot(out) == before and read_manifest(out) == manifest
    _assert_holds(out, old.arrays["train"])
    assert verify_dataset(out, progress=False) == []
    assert leftovers(out) == []  # verify's lease, released, collected it: no build holds the folder's lock

    x = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    manifest = build_dataset({"train": ArraySource(x=x, y=np.arange(5, dtype=np.uint8))}, out,
                             BuildOptions(overwrite=True, progress=False))
    assert manifest.generation == "gen-000002"  # never published, so no reader can hold that number
    assert leftovers(out) == [] and verify_dataset(out, progress=False) == []
    np.testing.assert_array_equal(read_split(out, "train")["x"], x)


def test_killed_first_build_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    child = _start_builder(out, tmp_path / "never")
    try:
        building = _wait_for_file(tmp_path, ".ds.building-*/.staging-gen-000001-*/train-00002.x.npy", child)
    finally:
        _kill(child)
    assert not out.exists()
    folder = building.parent.parent
    assert leftovers(out) == [folder.name]
    build_dataset({"train": ArraySource(**_builder_arrays(5))}, out, BuildOptions(**QUIET))
    assert leftovers(out) == []  # its build lock died with it: removed at once, no waiting
    _assert_holds(out, _builder_arrays(5))


# --- liveness by lock, never by process id -------------------------------------------------------


def test_building_folders_are_judged_by_their_lock(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    # named as new_building_folder names them (12 hex digits): other names are never a build's to remove
    folders = {name: tmp_path / f".ds.building-{index:012x}" for index, name in enumerate(("dead", "live", "fresh",
                                                                                         "stale"))}
    other, users = tmp_path / f".other.building-{0:012x}", tmp_path / ".ds.building-notes"
    for folder in (*folders.values(), other, users):
        (folder / "half").mkdir(parents=True)
    for folder in (folders["dead"], other, users):
        (folder / BUILD_LOCK_NAME).touch()  # a lock file nobody holds: its build died
    hour_ago = time.time() - 3600
    os.utime(folders["stale"], (hour_ago, hour_ago))  # no lock file, an hour old: killed before it locked
    with lock_held(folders["live"] / BUILD_LOCK_NAME):
        _quick_build(synthetic_mnist, out)
        assert folders["live"].exists()  # whatever PID it has or lacks: its lock is held
    assert not folders["dead"].exists() and not folders["stale"].exists()
    assert folders["fresh"].exists()  # no lock yet but just created: its build may be about to lock it
    assert other.exists() and users.exists()  # another dataset's; a name no build of ours gives
    _assert_holds(out, synthetic_mnist.arrays["train"])


def test_staging_inside_is_removed_only_when_its_lock_is_free(synthetic_mnist: SyntheticMnist,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _quick_build(synthetic_mnist, out)
    dead, held = out / f".staging-gen-000005-{5:012x}", out / f".staging-gen-000006-{6:012x}"
    for folder in (dead, held):
        (folder / "train-00000.x.npy").parent.mkdir()
        (folder / "train-00000.x.npy").write_bytes(b"half")
        (folder / LOCK_NAME).touch()
    with lock_held(held / LOCK_NAME):
        _quick_build(synthetic_mnist, out, overwrite=True)
        assert held.exists() and not dead.exists()
    assert read_manifest(out).generation == "gen-000002"


def test_glob_characters_in_the_name_are_matched_literally(synthetic_mnist: SyntheticMnist, tmp_path: Path) -> None:
    out = tmp_path / "mnist[8m]"
    dead, lookalike = tmp_path / f".mnist[8m].building-{0:012x}", tmp_path / f".mnist8.building-{0:012x}"
    for folder in (dead, lookalike):
        folder.mkdir()
        (folder / BUILD_LOCK_NAME).touch()
    _quick_build(synthetic_mnist, out)
    assert not dead.exists() and lookalike.exists()
    _assert_holds(out, synthetic_mnist.arrays["train"])


def _pid_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode == 0


needs_pid_namespaces = pytest.mark.skipif(not _pid_namespaces(),
                                          reason="unshare --pid is not available or not permitted here; "
                                                 "test_building_folders_are_judged_by_their_lock covers liveness")


def _build_in_new_pid_namespace(mnist: SyntheticMnist, out: Path) -> subprocess.CompletedProcess[str]:
    """build_shards.py as PID 1 of a namespace of its own: no process id outside means anything to it."""
    return subprocess.run(["unshare", "--pid", "--fork", *BUILD_SCRIPT, "--source", str(mnist.folder),
                           "--out", str(out), "--overwrite", "--quiet"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)


@needs_pid_namespaces
def test_new_dataset_built_twice_from_two_pid_namespaces(make_mnist: MakeMnist, tmp_path: Path) -> None:
    """While a first build of a new folder runs, a second one from another PID namespace must leave
    its staging alone; both succeed, and the last to finish is the dataset."""
    out, gate = tmp_path / "ds", tmp_path / "gate"
    first = _start_builder(out, gate)
    try:
        staged = _wait_for_file(tmp_path, ".ds.building-*/.staging-gen-000001-*/train-00002.x.npy", first)
        second = make_mnist("second", n_train=40, n_test=4)
        result = _build_in_new_pid_namespace(second, out)
        assert result.returncode == 0, result.stderr
        assert staged.exists()
        _assert_holds(out, second.arrays["train"])  # finished first: it created the dataset
    finally:
        _finish(first, gate)  # exit 0: its staging was never touched; it publishes over the second's
    assert read_manifest(out).generation == "gen-000002"
    _assert_holds(out, _builder_arrays(1))
    assert leftovers(out) == [] and verify_dataset(out, progress=False) == []


@needs_pid_namespaces
def test_second_build_from_another_pid_namespace_is_refused_while_the_first_runs(
        make_mnist: MakeMnist, tmp_path: Path) -> None:
    out, gate = tmp_path / "ds", tmp_path / "gate"
    mnist = make_mnist(n_train=40, n_test=4)
    _quick_build(mnist, out)
    first = _start_builder(out, gate)
    try:
        staged = _wait_for_file(out, ".staging-gen-000002-*/train-00002.x.npy", first)
        second = _build_in_new_pid_namespace(mnist, out)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f"build_shards.py: error: {out}: another build is writing this dataset (pid ")
        assert len(second.stderr.splitlines()) == 1 and staged.exists()
    finally:
        _finish(first, gate)
    _assert_holds(out, _builder_arrays(1))
    assert list_generations(out) == ["gen-000002"] and leftovers(out) == []


def test_concurrent_build_of_one_folder_fails_fast_naming_the_holder(make_mnist: MakeMnist, tmp_path: Path) -> None:
    out, gate = tmp_path / "ds", tmp_path / "gate"
    mnist = make_mnist(n_train=40, n_test=4)
    _quick_build(mnist, out)
    first = _start_builder(out, gate)
    try:
        _wait_for_file(out, ".staging-gen-000002-*/train-00002.x.npy", first)
        with pytest.raises(DatasetBusyError, match=rf"another build is writing this dataset \(pid {first.pid} on "):
            _quick_build(mnist, out, overwrite=True)
    finally:
        _finish(first, gate)
    _assert_holds(out, _builder_arrays(1))
    _quick_build(mnist, out, overwrite=True)  # the lock died with the first build's end
    _assert_holds(out, mnist.arrays["train"])


# --- a full disk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_full_disk_is_one_clear_error_and_changes_nothing(small_disk: Path, make_mnist: MakeMnist, fmt: str) -> None:
    small = make_mnist("small", n_train=60, n_test=5)
    out = small_disk / "ds"
    _quick_build(small, out, format=fmt)  # fits: 60 * 785 bytes
    before = tree_snapshot(out)
    big = make_mnist("big", n_train=3000, n_test=5)  # 2.3 MiB: does not fit
    with pytest.raises(OutOfSpaceError) as caught:
        _quick_build(big, out, format=fmt, overwrite=True)
    message, needed = str(caught.value), 3005 * (28 * 28 + 1) / 2**20
    assert message.startswith(f"{out}: no space left on the device while writing the dataset (it needs about "
                              f"{needed:.1f} MiB uncompressed, ")
    assert "\n" not in message and caught.value.errno == 28
    assert tree_snapshot(out) == before and leftovers(out) == []
    assert verify_dataset(out, progress=False) == []
    free = shutil.disk_usage(small_disk).free
    _quick_build(small, out, format=fmt, overwrite=True)  # all the space the failed build took is back
    assert shutil.disk_usage(small_disk).free >= free - 2**16


def test_full_disk_in_the_command_line_is_one_line_exit_2(small_disk: Path, make_mnist: MakeMnist) -> None:
    big = make_mnist("big", n_train=3000, n_test=5)
    out = small_disk / "ds"
    for fmt in ("npy", "hdf5"):
        result = subprocess.run([*BUILD_SCRIPT, "--source", str(big.folder), "--out", str(out), "--format", fmt,
                                 "--quiet"], env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"build_shards.py: error: {out}: no space left on the device"), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr  # not h5py's multi-line report
        assert not out.exists() and os.listdir(small_disk) == []


# --- a planted link is never followed (issue 21, part 1) -----------------------------------------


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize("existing", [False, True])
def test_a_build_lock_link_is_refused_and_its_target_untouched(tmp_path: Path, dangling: bool,
                                                               existing: bool) -> None:
    from streamload.errors import UnsafeFileError

    out = tmp_path / "ds"
    arrays = {"x": np.arange(40, dtype=np.uint8).reshape(20, 2), "y": np.arange(20, dtype=np.uint8) % 3}
    if existing:  # a dataset of ours, or a folder holding only the link (no --overwrite needed today)
        build_dataset({"train": ArraySource(**arrays)}, out, BuildOptions(**QUIET))
        (out / BUILD_LOCK_NAME).unlink()
    else:
        out.mkdir()
    target = tmp_path / ("site-packages-to-be.pth" if dangling else "thesis.tex")
    if not dangling:
        target.write_text("precious")
    (out / BUILD_LOCK_NAME).symlink_to(target)
    before = tree_snapshot(out)
    with pytest.raises(UnsafeFileError, match=f"{out / BUILD_LOCK_NAME}: is a symbolic link") as caught:
        build_dataset({"train": ArraySource(**arrays)}, out, BuildOptions(overwrite=True, **QUIET))
    assert "\n" not in str(caught.value)
    assert (target.read_text() == "precious") if not dangling else not os.path.lexists(target)
    assert (out / BUILD_LOCK_NAME).is_symlink() and tree_snapshot(out) == before
