"""Tests for streamload.places.generations: a reader (a forked or spawned process, or a thread) that holds a
lease keeps reading exactly the arrays of its generation while rebuilds happen; garbage collection
leaves only what readers hold; a reader killed with SIGKILL pins nothing; the race between reading
the manifest and locking its generation is retried; version-1 datasets still open.

Readers here read shard files directly through the lease (np.load / h5py), independently of the
read path; every check compares with the arrays that were written."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import lock_held, read_shards, subprocess_env
from shards import make_arrays

from streamload.errors import GenerationGoneError, ManifestError, StreamloadError
from streamload.format.manifest import MANIFEST_NAME, read_manifest
from streamload.places import generations
from streamload.places.generations import (
    GenerationLease,
    acquire,
    acquire_generation,
    collect_garbage,
    list_generations,
)
from streamload.places.layout import BUILD_LOCK_NAME, FLAT_LOCK_NAME
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource
from streamload.write.verify import verify_dataset


def _build(out: Path, seed: int, n: int = 200, fmt: str = "npy", shard_size: int = 50) -> dict[str, np.ndarray]:
    arrays = make_arrays(n, seed)
    build_dataset({"train": ArraySource(**arrays)}, out,
                  BuildOptions(format=fmt, shard_size=shard_size, overwrite=True, progress=False))
    return arrays


def _read(lease: GenerationLease, shards: int | None = None) -> dict[str, np.ndarray]:
    return read_shards(lease.root, lease.manifest, "train", shards)


def _assert_equal(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def _top_level(out: Path) -> set[str]:
    return set(os.listdir(out))


# --- a reader across a rebuild -------------------------------------------------------------------


def _reader(lease: GenerationLease, own_lease: bool, started: Any, rebuilt: Any, results: Any) -> None:
    """Read one shard, wait for the rebuild, then read every shard (the rest opened only now)."""
    try:
        if own_lease:
            lease = lease.for_this_process()
        _read(lease, shards=1)
        started.set()
        assert rebuilt.wait(60), "the test never rebuilt"
        results.put((lease.generation, _read(lease)))
        lease.release()
    except BaseException as exc:  # the parent reports it
        results.put(("error", repr(exc)))
        started.set()


def _start_reader(start: str, lease: GenerationLease) -> tuple[Any, Any, Any, Any]:
    if start == "thread":
        started, rebuilt, results = threading.Event(), threading.Event(), queue.Queue()
        worker: Any = threading.Thread(target=_reader, args=(lease, False, started, rebuilt, results))
    else:
        context = multiprocessing.get_context(start.split("-")[0])
        started, rebuilt, results = context.Event(), context.Event(), context.Queue()
        worker = context.Process(target=_reader, args=(lease, start != "fork-inherited", started, rebuilt, results))
    worker.start()
    return worker, started, rebuilt, results


@pytest.mark.parametrize("start", ["fork", "fork-inherited", "spawn", "thread"])
@pytest.mark.parametrize("layout", ["same", "other"], ids=["same-layout", "hdf5-other-shard-size"])
def test_reader_keeps_its_generation_across_a_rebuild(tmp_path: Path, start: str, layout: str) -> None:
    out = tmp_path / "ds"
    old = _build(out, seed=1)
    lease = acquire(out)
    worker, started, rebuilt, results = _start_reader(start, lease)
    try:
        assert started.wait(60)
        if start != "thread":
            lease.release()  # the worker's own lock (or, forked, the inherited one) must keep gen-000001
        new = _build(out, seed=2, **({} if layout == "same" else {"fmt": "hdf5", "shard_size": 30}))
        assert read_manifest(out).generation == "gen-000002"
        assert list_generations(out) == ["gen-000001", "gen-000002"]  # the old one is in use
        rebuilt.set()
        generation, arrays = results.get(timeout=60)
    finally:
        rebuilt.set()
        worker.join(60)
    assert generation == "gen-000001", arrays
    _assert_equal(arrays, old)
    lease.release()
    collect_garbage(out)  # a forked child that kept the inherited lock collects nothing itself
    assert list_generations(out) == ["gen-000002"]
    assert _top_level(out) == {MANIFEST_NAME, BUILD_LOCK_NAME, "gen-000002"}  # disk use: the current one only
    with acquire(out) as fresh:
        assert fresh.generation == "gen-000002"
        _assert_equal(_read(fresh), new)


def test_disk_use_is_the_current_generation_plus_those_in_use(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    first = acquire(out)
    _build(out, seed=2)
    _build(out, seed=3)
    third = acquire(out)
    _build(out, seed=4)
    assert list_generations(out) == ["gen-000001", "gen-000003", "gen-000004"]
    first.release()
    assert list_generations(out) == ["gen-000003", "gen-000004"]  # release collects what it no longer needs
    third.release()
    assert list_generations(out) == ["gen-000004"]
    sizes = {path.relative_to(out).parts[0] for path in out.rglob("*") if path.is_file() and path.stat().st_size}
    assert sizes == {MANIFEST_NAME, BUILD_LOCK_NAME, "gen-000004"}


READER = """
import sys, time
from streamload.places.generations import acquire
lease = acquire(sys.argv[1])
print(lease.generation, flush=True)
time.sleep(120)
"""


def test_reader_killed_with_sigkill_pins_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    child = subprocess.Popen([sys.executable, "-c", READER, str(out)], stdout=subprocess.PIPE, text=True,
                             env=subprocess_env())
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "gen-000001"
        _build(out, seed=2)
        assert collect_garbage(out) == [] and list_generations(out) == ["gen-000001", "gen-000002"]
    finally:
        child.kill()
        child.wait()
    assert collect_garbage(out) == ["gen-000001"]  # the kernel dropped the dead reader's lock
    assert list_generations(out) == ["gen-000002"]


# --- pickling and forking ------------------------------------------------------------------------


def test_unpickling_locks_the_same_generation_not_the_current_one(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    old = _build(out, seed=1)
    lease = acquire(out)
    blob = pickle.dumps(lease)
    _build(out, seed=2)
    copy = pickle.loads(blob)
    assert (copy.generation, copy.manifest, copy.locked) == ("gen-000001", lease.manifest, True)
    lease.release()
    assert list_generations(out) == ["gen-000001", "gen-000002"]  # the copy still holds it
    _assert_equal(_read(copy), old)
    copy.release()
    assert list_generations(out) == ["gen-000002"]
    with pytest.raises(GenerationGoneError, match="generation gen-000001 is gone") as caught:
        pickle.loads(blob)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, StreamloadError)
    with pytest.raises(GenerationGoneError):
        acquire_generation(out, "gen-000001")
    with pytest.raises(GenerationGoneError, match="not a generation name"):
        acquire_generation(out, "../elsewhere")


def test_release_is_idempotent_and_the_context_manager_releases(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    with acquire(out) as lease:
        assert lease.locked and lease.root == out / "gen-000001" and lease.for_this_process() is lease
    assert not lease.locked
    lease.release()
    assert "released" in repr(lease)


# --- the race between reading the manifest and locking its generation ----------------------------


def _inject_after_manifest_read(monkeypatch: pytest.MonkeyPatch, fault: Any) -> list[str | None]:
    """Run ``fault(number of reads)`` right after acquire reads a manifest; return the generations read.

    Only acquire's own reads count: the rebuilds a fault runs read manifests too (their collectors).
    """
    real_read, reads, busy = generations.read_manifest, [], []

    def read_then_fault(directory: Path) -> Any:
        manifest = real_read(directory)
        if not busy:
            busy.append(True)
            try:
                reads.append(manifest.generation)
                fault(len(reads))
            finally:
                busy.clear()
        return manifest

    monkeypatch.setattr(generations, "read_manifest", read_then_fault)
    return reads


def _blocked_on(inode: int) -> bool:
    """True when some process waits for an flock on the file ``inode`` (a ``->`` line of /proc/locks)."""
    with open("/proc/locks") as locks:
        return any("->" in line and f":{inode} " in line for line in locks)


def test_acquire_retries_when_the_generation_is_collected_before_it_is_locked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected between reading the manifest and locking: a real rebuild, and a collector that holds the
    old generation's lock while the reader waits for it, then renames it away. The reader must notice
    (its lock is on a file no longer at that path) and retry with the new manifest."""
    out = tmp_path / "ds"
    _build(out, seed=1)
    old_lock = out / "gen-000001" / ".lock"
    inode = os.stat(old_lock).st_ino
    waited: list[bool] = []
    collector = lock_held(old_lock)  # a real process holding gen-000001's lock, as a collector does

    def rebuild_with_a_slow_collector(reads: int) -> None:
        if reads > 1:
            return
        collector.__enter__()  # so the rebuild's own collection cannot take gen-000001 now
        _build(out, seed=2)

        def collect() -> None:
            deadline = time.monotonic() + 30
            while not _blocked_on(inode) and time.monotonic() < deadline:
                time.sleep(0.005)
            waited.append(_blocked_on(inode))
            os.rename(out / "gen-000001", out / ".trash-gen-000001-0123abcd")
            collector.__exit__(None, None, None)  # killed: the waiting reader gets a lock on a renamed file

        threading.Thread(target=collect).start()

    reads = _inject_after_manifest_read(monkeypatch, rebuild_with_a_slow_collector)
    lease = acquire(out)
    monkeypatch.undo()
    assert lease.generation == "gen-000002"
    assert reads == ["gen-000001", "gen-000002"] and waited == [True]
    lease.release()
    assert list_generations(out) == ["gen-000002"] and not (out / ".trash-gen-000001-0123abcd").exists()


def test_acquire_retries_when_the_generation_is_gone_before_it_is_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    new: dict[str, np.ndarray] = {}

    def rebuild(reads: int) -> None:
        if reads == 1:
            new.update(_build(out, seed=2))  # its collection deletes gen-000001: nobody holds it yet
            assert list_generations(out) == ["gen-000002"]

    reads = _inject_after_manifest_read(monkeypatch, rebuild)
    with acquire(out) as lease:
        assert reads == ["gen-000001", "gen-000002"]
        assert lease.generation == "gen-000002"
        _assert_equal(_read(lease), new)


def test_acquire_gives_up_naming_the_folder_when_rebuilds_never_stop(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    reads = _inject_after_manifest_read(monkeypatch, lambda reads: _build(out, seed=reads + 1, n=4))
    with pytest.raises(ManifestError, match=f"{out}: could not lock the current generation in 8 tries"):
        acquire(out)
    assert len(reads) == 8


# --- version-1 datasets --------------------------------------------------------------------------


def _make_version_1(out: Path, seed: int) -> dict[str, np.ndarray]:
    """A dataset as streamload 0.1 wrote it: shards beside a version-1 manifest, no generation."""
    arrays = _build(out, seed=seed)
    data = json.loads((out / MANIFEST_NAME).read_text())
    generation = data["generation"]
    for name in os.listdir(out / generation):
        if name not in (MANIFEST_NAME, ".lock"):
            os.rename(out / generation / name, out / name)
    shutil.rmtree(out / generation)
    (out / BUILD_LOCK_NAME).unlink()
    version_1 = {"format_version": 1, "format": data["format"], "created_by": "streamload 0.1.0",
                 "splits": data["splits"]}
    (out / MANIFEST_NAME).write_text(json.dumps(version_1))
    return arrays


def test_version_1_dataset_opens_and_its_readers_survive_an_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    old = _make_version_1(out, seed=1)
    flat_files = {name for name in os.listdir(out) if name.endswith(".npy")}
    assert len(flat_files) == 8 and verify_dataset(out, progress=False) == []
    lease = acquire(out)
    assert (lease.generation, lease.root, lease.manifest.format_version) == (None, out, 1)
    spawned = pickle.loads(pickle.dumps(lease))
    new = _build(out, seed=2)
    assert read_manifest(out).generation == "gen-000001"
    assert flat_files <= _top_level(out)  # kept: two readers hold the version-1 layout
    _assert_equal(_read(lease), old)
    lease.release()
    assert flat_files <= _top_level(out)
    _assert_equal(_read(spawned), old)
    spawned.release()
    assert _top_level(out) == {MANIFEST_NAME, BUILD_LOCK_NAME, FLAT_LOCK_NAME, "gen-000001"}
    with acquire(out) as fresh:
        _assert_equal(_read(fresh), new)
    with pytest.raises(GenerationGoneError, match="version-1 shards were removed"):
        pickle.loads(pickle.dumps(spawned))


def test_version_1_overwrite_without_readers_removes_the_flat_files_at_once(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _make_version_1(out, seed=1)
    _build(out, seed=2)
    assert _top_level(out) == {MANIFEST_NAME, BUILD_LOCK_NAME, FLAT_LOCK_NAME, "gen-000001"}


# --- filesystems without flock -------------------------------------------------------------------


def test_without_flock_the_previous_generation_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No lock-less filesystem is at hand (NFS without lockd), so flock's ENOLCK is injected."""
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "ds"
    _build(out, seed=1)
    lease = acquire(out)
    assert not lease.locked and lease.generation == "gen-000001"
    _build(out, seed=2)
    assert list_generations(out) == ["gen-000001", "gen-000002"]  # previous kept: a reader may be on it
    _build(out, seed=3)
    assert list_generations(out) == ["gen-000002", "gen-000003"]  # older than the previous: deleted
    lease.release()
    assert list_generations(out) == ["gen-000002", "gen-000003"]


def test_a_generation_missing_without_any_rebuild_is_a_manifest_error_at_once(tmp_path: Path) -> None:
    out, copy = tmp_path / "ds", tmp_path / "copy"
    _build(out, seed=1)
    copy.mkdir()
    shutil.copy(out / MANIFEST_NAME, copy / MANIFEST_NAME)  # the manifest without its generation folder
    with pytest.raises(ManifestError, match=f"{copy / MANIFEST_NAME}: names generation gen-000001, which is "
                                            f"missing from {copy}"):
        acquire(copy)


# --- nothing of the user's is deleted (issue 18, part 3) ------------------------------------------


def _user_files(out: Path) -> dict[str, str]:
    """Things a user may keep in a dataset folder under names close to streamload's, and their contents."""
    planted = {"gen-000123/notes.txt": "the user's own generation-like folder",
               "gen-000124": "a user's file named like a generation",
               ".staging-notes.txt": "a user's hidden file", ".trash-mine/keep.txt": "a user's trash",
               "train-00000-x.npy": "not a shard this dataset lists"}
    for name, text in planted.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return planted


def test_collection_deletes_only_what_streamload_wrote(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    planted = _user_files(out)
    size = (out / "train-00000-x.npy").stat().st_size  # a listing that came with the folder, not a build's:
    listing = [["train-00000-x.npy", 1, 1, size], ["../outside.txt", 1, 1, 7], [MANIFEST_NAME, 1, 1, 1]]
    (out / ".flat-leftovers.json").write_text(json.dumps(listing))
    (tmp_path / "outside.txt").write_text("outside")
    arrays = _build(out, seed=2)  # a rebuild collects the generation it replaced
    assert list_generations(out) == ["gen-000123", "gen-000124", "gen-000125"]  # numbers only grow
    assert {name: (out / name).read_text() for name in planted} == planted
    assert (tmp_path / "outside.txt").read_text() == "outside"
    with acquire(out) as lease:
        _assert_equal(_read(lease), arrays)
    assert not (out / "gen-000001").exists()  # its own old generation went


def test_a_generation_without_its_lock_file_says_so(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _build(out, seed=1)
    (out / "gen-000001" / ".lock").unlink()  # e.g. copied by a tool that skips hidden files
    with pytest.raises(ManifestError, match=r"gen-000001: holds no \.lock file.*hidden files") as caught:
        acquire(out)
    assert "missing" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("dangling", [False, True])
def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path: Path, dangling: bool) -> None:
    from streamload.errors import UnsafeFileError

    out = tmp_path / "ds"
    _build(out, seed=1)
    target = tmp_path / ("nowhere" if dangling else "users-file.txt")
    if not dangling:
        target.write_text("the user's file")
    for lock in (out / "gen-000001" / ".lock", out / FLAT_LOCK_NAME):
        lock.unlink(missing_ok=True)
        lock.symlink_to(target)
        with pytest.raises(UnsafeFileError, match=f"{lock.name}: is a symbolic link"):
            acquire(out) if lock.name == ".lock" else generations._lock_flat(out, read_manifest(out))
        assert (target.read_text() == "the user's file") if not dangling else not os.path.lexists(target)
        lock.unlink()
        if lock.name == ".lock":
            lock.write_text("")
