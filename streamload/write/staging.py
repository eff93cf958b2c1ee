"""The write side of generations: where a build writes, and the atomic switch that publishes it.

A build of DIR holds ``DIR/.build.lock`` for its whole life (so builds of one folder never overlap)
and writes into ``DIR/.staging-gen-N-<random>/``, whose ``.lock`` it also holds. Liveness is these
locks, which the kernel releases when the process dies, never a process id (ids do not cross PID
namespaces or machines). When the shards are complete and fsynced the staging folder is renamed to
``DIR/gen-N`` and ``DIR/manifest.json`` is replaced atomically: that rename is the switch.

A dataset that does not exist yet is built the same way inside ``.NAME.building-<random>`` next to
it, renamed into place only when complete, so a new DIR appears only when the build succeeded.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import json
import os
import re
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path

from ..base.durable import fsync_path, replace_durably, write_durably
from ..errors import DatasetBusyError, UnsafeFileError
from ..format.manifest import MANIFEST_NAME, Manifest
from ..places.layout import (
    BUILD_LOCK_NAME,
    FLAT_LEFTOVERS_NAME,
    LOCK_NAME,
    STAGING_PREFIX,
    claim,
    file_names,
    flat_leftovers,
    is_real_folder,
    lock_file,
    unlock,
)

FRESH_FOLDER_GRACE_S = 60.0  # a building folder without its lock file yet is this young at most


def build_lock(directory: Path) -> int | None:
    """Take ``DIR/.build.lock`` for this build, or raise DatasetBusyError naming the build that holds it.

    Returns the descriptor to close at the end, or None where the filesystem has no flock.
    """
    path = directory / BUILD_LOCK_NAME
    try:
        fd = lock_file(path, exclusive=True, wait=False, create=True, in_dataset_folder=True)
    except BlockingIOError:
        raise DatasetBusyError(f"{directory}: another build is writing this dataset ({_holder(path)}); "
                               "wait for it to finish, or stop it") from None
    if fd is not None and os.fstat(fd).st_nlink == 1:  # a hard link may be a user's file: lock it, never write
        try:
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        except OSError:
            pass  # who holds it is only a courtesy for the error message of a second build
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "holder unknown"
    except (OSError, UnicodeDecodeError):
        return "holder unknown"


class Staging:
    """A hidden folder ``DIR/.staging-gen-N-<random>`` one build writes generation N into.

    Its ``.lock`` is held exclusively from creation until the generation is published (or the build
    dies), so a collector can tell it from an abandoned one. Leaving the ``with`` block without
    publishing deletes it.
    """

    def __init__(self, directory: Path, generation: str, path: Path | None = None) -> None:
        """``path``: a complete generation folder elsewhere on the same filesystem to publish instead."""
        self.directory, self.generation = directory, generation
        self.path = path or _new_folder(directory, f"{STAGING_PREFIX}{generation}-")
        try:
            self._fd = lock_file(self.path / LOCK_NAME, exclusive=True, wait=False, create=True)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self.published = False

    def publish(self, manifest: Manifest) -> Manifest:
        """Manifest copy, fsync, rename to ``DIR/gen-N``, then switch ``DIR/manifest.json`` to it."""
        manifest = dataclasses.replace(manifest, generation=self.generation)
        text = manifest.to_json()
        write_durably(self.path / MANIFEST_NAME, text)
        fsync_path(self.path)
        os.rename(self.path, self.directory / self.generation)
        self.published = True
        fsync_path(self.directory)
        switch_manifest(self.directory, text)
        return manifest

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)
        unlock(self._fd)  # after the switch: a reader may wait for this lock a moment, never miss it
        self._fd = None


def switch_manifest(directory: Path, text: str) -> None:
    """Replace ``DIR/manifest.json`` atomically and durably: readers see the old one or the new one."""
    replace_durably(directory / MANIFEST_NAME, text, temporary_prefix=STAGING_PREFIX)


def new_building_folder(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return _new_folder(out.parent, f".{out.name}.building-")


def _new_folder(parent: Path, prefix: str) -> Path:
    """A fresh folder with a random name; unlike mkdtemp's 0700 it gets the umask's mode, as the dataset should."""
    while True:
        path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def move_into_place(building: Path, out: Path) -> bool:
    """Rename a complete new dataset to ``out``; False if a non-empty ``out`` appeared meanwhile."""
    try:
        os.rename(building, out)  # atomic; replaces an empty folder only
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    fsync_path(out.parent)
    return True


def remove_abandoned_folders(out: Path) -> list[str]:
    """Delete ``.NAME.building-*`` folders next to ``out`` whose build is dead (its build lock is free).

    Only real folders by the exact name ``new_building_folder`` gives, with a regular lock file or none.
    """
    removed = []
    pattern = re.compile(re.escape(f".{out.name}.building-") + "[0-9a-f]{12}")
    for folder in out.parent.glob(f"{glob.escape(f'.{out.name}.building-')}*"):
        if not pattern.fullmatch(folder.name) or not is_real_folder(folder):
            continue
        try:
            state, fd = claim(folder / BUILD_LOCK_NAME)
        except UnsafeFileError:
            continue  # a link planted as its lock: not a folder a build of ours left
        if state != "free":
            continue  # a live build, whatever PID namespace or machine it runs in; or no flock to tell
        if fd is None and time.time() - folder.stat().st_mtime < FRESH_FOLDER_GRACE_S:
            continue  # no lock file yet: created an instant ago, its build is about to lock it
        shutil.rmtree(folder, ignore_errors=True)
        unlock(fd)
        removed.append(folder.name)
    return removed


def note_flat_leftovers(directory: Path, manifest: Manifest) -> None:
    """Before a build switches DIR away from a version-1 manifest: list its files for collection.

    Each file is listed with its identity (device, inode, size): collection deletes a file only while
    it is still that very file, so a listing nobody here wrote (one unpacked with the folder) names
    nothing that can be deleted.
    """
    listing = directory / FLAT_LEFTOVERS_NAME
    entries = {entry[0]: entry for entry in flat_leftovers(listing)}
    for name in file_names(manifest):
        info = os.lstat(directory / name)
        if stat.S_ISREG(info.st_mode):
            entries[name] = [name, info.st_dev, info.st_ino, info.st_size]
    replace_durably(listing, json.dumps(sorted(entries.values())), temporary_prefix=STAGING_PREFIX)

