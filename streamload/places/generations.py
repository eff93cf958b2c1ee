"""Immutable dataset generations: a rebuild never changes what a running reader reads.

A reader holds a :class:`GenerationLease`: a shared ``flock`` on its generation's ``.lock`` (see
layout.py for the folder layout). The kernel drops it when the process dies, so a killed reader never
pins a generation. Garbage collection deletes a generation only when it can lock it exclusively and
it is older than the current one. Version-1 datasets (shards beside the manifest) are read under a
shared lock on ``DIR/.flat.lock``; a build over one removes the old flat files once nobody holds that
lock. Where the filesystem has no working ``flock``, leases hold no lock and garbage collection keeps
the current and the previous generation, so only a reader older than two rebuilds can lose its files.
"""

from __future__ import annotations

import os
import shutil
import uuid
import weakref
from pathlib import Path
from typing import Any

from ..errors import GenerationGoneError, ManifestError, StreamloadError, UnsafeFileError
from ..format.manifest import MANIFEST_NAME, Manifest, read_manifest
from .layout import (
    BUILD_LOCK_NAME,
    FLAT_LEFTOVERS_NAME,
    FLAT_LOCK_NAME,
    LOCK_NAME,
    STAGING_PREFIX,
    TRASH_PREFIX,
    claim,
    file_names,
    flat_leftovers,
    generation_number,
    is_own_generation,
    is_own_leftover,
    is_real_folder,
    is_regular_file,
    list_generations,
    lock_file,
    shard_root,
    unlock,
)

__all__ = ["GenerationLease", "acquire", "acquire_generation", "collect_garbage", "list_generations", "shard_root"]
_ACQUIRE_TRIES = 8


class GenerationLease:
    """A reader's hold on one generation: while it is held, garbage collection keeps that generation.

    Threads share a lease. A forked child inherits the lock with the descriptor (a flock belongs to
    the open file, which fork shares), so it stays valid even after the parent releases; call
    :meth:`for_this_process` in the child for a lease of its own. Pickled (spawn), a lease travels
    as (folder, generation); unpickling locks that same generation again and reads its manifest
    copy, or raises :class:`~streamload.errors.GenerationGoneError`.
    """

    def __init__(self, directory: Path, generation: str | None, manifest: Manifest, fd: int | None) -> None:
        self.directory, self.generation, self.manifest = Path(directory), generation, manifest
        self._fd, self._pid = fd, os.getpid()
        self._closer = weakref.finalize(self, unlock, fd)

    @property
    def root(self) -> Path:
        return shard_root(self.directory, self.manifest)

    @property
    def locked(self) -> bool:
        """False once released, and always where the filesystem has no working flock."""
        return self._fd is not None and self._closer.alive

    def release(self) -> None:
        """Drop the lock (by closing: LOCK_UN would unlock forked children too), then collect garbage."""
        if not self._closer.alive:
            return
        self._closer()
        try:
            collect_garbage(self.directory)
        except (OSError, StreamloadError):
            pass  # best effort (a read-only folder, a manifest being replaced): the next build collects

    def for_this_process(self) -> GenerationLease:
        """This lease in the process that took it; in a forked child, a new lease on the same generation."""
        return self if os.getpid() == self._pid else _restore(*self._identity())

    def _identity(self) -> tuple[str, str | None, Manifest | None]:
        return str(self.directory), self.generation, self.manifest if self.generation is None else None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _restore, self._identity()

    def __enter__(self) -> GenerationLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self.locked else ("released" if not self._closer.alive else "unlocked")
        return f"GenerationLease({str(self.directory)!r}, {self.generation!r}, {state})"


def acquire(directory: str | os.PathLike) -> GenerationLease:
    """Lock the current generation of ``directory`` for reading.

    A garbage collector may delete the generation named by the manifest between reading the
    manifest and locking it (after a rebuild switched away from it): then this tries again with the
    new manifest, a few times, before it raises ManifestError naming the folder.
    """
    directory = Path(directory)
    problem = ""
    for _ in range(_ACQUIRE_TRIES):
        before = _file_id(directory / MANIFEST_NAME)
        manifest = read_manifest(directory)
        try:
            if manifest.generation is not None:
                return _lock_generation(directory, manifest.generation, manifest)
            lease = _lock_flat(directory, manifest)
        except GenerationGoneError as exc:
            if _file_id(directory / MANIFEST_NAME) == before:  # no rebuild switched away: it never existed
                raise ManifestError(f"{directory / MANIFEST_NAME}: names generation {manifest.generation}, which "
                                    f"is missing from {directory} (an incomplete copy?)") from exc
            problem = str(exc)
            continue
        if _file_id(directory / MANIFEST_NAME) == before:  # not replaced before our lock: its files stay
            return lease
        lease._closer()
        problem = "the version-1 manifest was replaced while it was being opened"
    raise ManifestError(f"{directory}: could not lock the current generation in {_ACQUIRE_TRIES} tries "
                        f"(rebuilds keep replacing it): {problem}")


def acquire_generation(directory: str | os.PathLike, generation: str | None) -> GenerationLease:
    """Lock a given generation (a worker continuing its parent's reads); GenerationGoneError if it is gone.

    ``None`` stands for the version-1 layout, which must still be the current manifest.
    """
    directory = Path(directory)
    if generation is None:
        manifest = read_manifest(directory)
        if manifest.generation is not None:
            raise GenerationGoneError(f"{directory}: the version-1 shards were replaced by {manifest.generation}")
        return _restore(str(directory), None, manifest)
    if generation_number(generation) is None:
        raise GenerationGoneError(f"{directory}: {generation!r} is not a generation name (gen-NNNNNN)")
    return _lock_generation(directory, generation, None)


def _restore(directory: str, generation: str | None, manifest: Manifest | None) -> GenerationLease:
    """A lease on exactly this generation (unpickling, a forked child)."""
    if generation is not None:
        return _lock_generation(Path(directory), generation, None)
    assert manifest is not None
    lease = _lock_flat(Path(directory), manifest)
    missing = [name for name in file_names(manifest) if not (lease.root / name).exists()]
    if missing:
        lease._closer()
        raise GenerationGoneError(f"{directory}: the version-1 shards were removed by a rebuild ({missing[0]} is gone)")
    return lease


def _lock_generation(directory: Path, generation: str, manifest: Manifest | None) -> GenerationLease:
    lock_path = directory / generation / LOCK_NAME
    gone = GenerationGoneError(f"{directory}: generation {generation} is gone (deleted after a rebuild); "
                               "open the dataset again to read the current one")
    try:
        fd = lock_file(lock_path, exclusive=False, wait=True)  # waits only while a build or a GC holds it
    except FileNotFoundError:
        if is_real_folder(directory / generation):  # a collector renames the folder away first: never this
            raise ManifestError(f"{directory / generation}: holds no {LOCK_NAME} file, which every streamload "
                                "generation has (copied without its hidden files? copy them too, e.g. cp -a, "
                                "or rebuild)") from None
        raise gone from None
    if fd is not None and _file_id(lock_path) != _fd_id(fd):  # renamed away for deletion before we locked
        os.close(fd)
        raise gone
    try:
        manifest = manifest or read_manifest(directory / generation)  # the generation's immutable copy
        if manifest.generation != generation:
            raise ManifestError(f"{directory / generation / MANIFEST_NAME}: names generation "
                                f"{manifest.generation!r}, but lies in folder {generation}")
    except BaseException:
        unlock(fd)
        raise
    return GenerationLease(directory, generation, manifest, fd)


def _lock_flat(directory: Path, manifest: Manifest) -> GenerationLease:
    try:
        fd = lock_file(directory / FLAT_LOCK_NAME, exclusive=False, wait=True, create=True, in_dataset_folder=True)
    except PermissionError:
        fd = None  # a read-only folder nobody can rebuild: nothing to protect against
    return GenerationLease(directory, None, manifest, fd)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _fd_id(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


# --- garbage collection --------------------------------------------------------------------------


def collect_garbage(directory: str | os.PathLike, *, build_lock_held: bool = False) -> list[str]:
    """Delete what no reader can need; return the names removed.

    Removed: generations older than the current one that no reader holds, version-1 shard files a
    build replaced (once no reader holds them), trash of interrupted collections, and, when no
    build is running (``DIR/.build.lock`` is free, or held by the caller: ``build_lock_held``),
    abandoned staging folders. The current generation is never removed.
    """
    directory = Path(directory)
    if build_lock_held:
        return _collect(directory, staging=True)
    try:
        build_fd = lock_file(directory / BUILD_LOCK_NAME, exclusive=True, wait=False, in_dataset_folder=True)
    except (BlockingIOError, FileNotFoundError, PermissionError, UnsafeFileError):
        return _collect(directory, staging=False)
    try:
        return _collect(directory, staging=build_fd is not None)  # without flock, live staging looks dead
    finally:
        unlock(build_fd)


def _collect(directory: Path, staging: bool) -> list[str]:
    try:
        current = read_manifest(directory).generation
    except ManifestError:
        return []  # not a dataset (yet): nothing is known to be garbage
    removed = _collect_generations(directory, current)
    if current is not None:
        removed += _collect_flat_leftovers(directory, current)
    names = [name for name in sorted(os.listdir(directory)) if is_own_leftover(name)]  # never a user's name
    removed += [name for name in names if name.startswith(TRASH_PREFIX) and _remove(directory / name)]
    if staging:
        removed += [name for name in names if name.startswith(STAGING_PREFIX) and _abandoned(directory / name)
                    and _remove(directory / name)]
    return removed


def _collect_generations(directory: Path, current: str | None) -> list[str]:
    newest = generation_number(current)
    old = [name for name in list_generations(directory)
           if (newest is None or (generation_number(name) or 0) < newest) and is_own_generation(directory, name)]
    removed = []
    for name in old:
        state, fd = claim(directory / name / LOCK_NAME)
        if state == "held" or (state == "unknown" and (newest is None or name == old[-1])):
            continue  # a reader holds it; or no flock here: keep the previous generation
        try:
            if _retire(directory, name):
                removed.append(name)
        finally:
            unlock(fd)
    return removed


def _retire(directory: Path, name: str) -> bool:
    """Rename first, so a reader that locks the old path afterwards sees it gone; then delete."""
    trash = directory / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(directory / name, trash)
    except FileNotFoundError:
        return False  # another collector got there first
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _abandoned(path: Path) -> bool:
    """A staging folder whose lock nobody holds (the caller holds the build lock, so no build is starting)."""
    if not is_real_folder(path):
        return is_regular_file(path)  # a manifest temp file of a killed build (a link of that name stays)
    try:
        state, fd = claim(path / LOCK_NAME)
    except UnsafeFileError:
        return False  # a link planted as its lock: not ours to judge, so it stays
    unlock(fd)
    return state == "free"


def _remove(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return not os.path.lexists(path)


def _collect_flat_leftovers(directory: Path, current: str) -> list[str]:
    listing = directory / FLAT_LEFTOVERS_NAME
    if not is_regular_file(listing):
        return []
    try:
        fd = lock_file(directory / FLAT_LOCK_NAME, exclusive=True, wait=False, create=True, in_dataset_folder=True)
    except BlockingIOError:
        return []  # a version-1 reader is still on
    if fd is None and (generation_number(current) or 0) <= 1:
        return []  # no flock: keep the previous layout
    try:
        names = [entry[0] for entry in flat_leftovers(listing) if _still_the_same_file(directory / entry[0], entry)]
        for name in names:
            (directory / name).unlink(missing_ok=True)
        listing.unlink()
    finally:
        unlock(fd)
    return names


def _still_the_same_file(path: Path, entry: list) -> bool:
    """The file a build listed (same device, inode and size), not another one put at its name since."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return [info.st_dev, info.st_ino, info.st_size] == entry[1:]
