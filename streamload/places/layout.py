"""Where a dataset's files lie, and the file locks that say who uses them.

A dataset folder DIR (manifest format 2) holds::

    DIR/manifest.json    names the current generation; replaced atomically as the last step of a build
    DIR/gen-000007/      that generation's shards, an identical copy of its manifest and a ``.lock`` file
    DIR/gen-000006/      an older generation, kept while a reader holds a shared lock on its ``.lock``
    DIR/.build.lock      held exclusively by the one build of DIR running now
    DIR/.staging-*       a build in progress (its ``.lock`` held exclusively), or an abandoned one

Every lock is a ``flock`` on an open file: the kernel drops it when the process dies, in whatever PID
namespace it ran, so liveness never depends on process ids. Generation numbers only grow.

Streamload replaces or deletes only what it wrote (see docs/faults.md, "Nothing of the user's"):
a generation folder is its own when it is a real folder holding a regular ``.lock`` and a manifest
copy naming that folder (every generation any version wrote has both); hidden staging, trash and
temporary entries when their names have the exact pattern it gives them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
from pathlib import Path

from ..base.durable import open_in_folder
from ..errors import ForeignDataError, ManifestError
from ..format.manifest import MANIFEST_NAME, Manifest, read_manifest

LOCK_NAME = ".lock"
BUILD_LOCK_NAME = ".build.lock"
FLAT_LOCK_NAME = ".flat.lock"
FLAT_LEFTOVERS_NAME = ".flat-leftovers.json"  # version-1 shard files a build left for garbage collection
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
_GENERATION = re.compile(r"gen-(\d{6,})")
_OWN_LEFTOVER = re.compile(  # names staging.py and generations.py give, random part included
    r"\.staging-gen-\d{6,}-[0-9a-f]{12}|\.trash-gen-\d{6,}-[0-9a-f]{8}"
    r"|\.staging-(manifest\.json|\.flat-leftovers\.json)-[0-9a-f]{8}\.tmp")
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


def lock_file(path: Path, *, exclusive: bool, wait: bool, create: bool = False,
              in_dataset_folder: bool = False) -> int | None:
    """Open and ``flock`` ``path``: the descriptor (closing it unlocks), or None where flock does not work.

    ``in_dataset_folder``: ``path`` lies in the folder the user named (which may be a link), not in
    one streamload made. Raises BlockingIOError when ``wait`` is False and another open file holds a
    conflicting lock, FileNotFoundError when ``path`` is missing (and ``create`` is False),
    UnsafeFileError when it is a symbolic link or not a regular file (never followed).
    """
    fd = -1
    if create:
        try:
            fd = open_in_folder(path, os.O_RDWR | os.O_CREAT, folder_may_be_link=in_dataset_folder)
        except PermissionError:
            pass  # a reader without write access: lock the file if it exists
    if fd < 0:
        fd = open_in_folder(path, os.O_RDONLY, folder_may_be_link=in_dataset_folder)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in _NO_LOCKS:
            return None
        raise
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock ``lock_file`` or ``claim`` returned (None: there was none to release)."""
    if fd is not None:
        os.close(fd)


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def generation_number(name: str | None) -> int | None:
    match = _GENERATION.fullmatch(name or "")
    return int(match.group(1)) if match else None


def list_generations(directory: str | os.PathLike) -> list[str]:
    """The generation folders of ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((name for name in names if generation_number(name) is not None), key=generation_number)


def next_generation(directory: str | os.PathLike) -> str:
    """One more than any generation folder in ``directory``: a published number is never used again."""
    numbers = [generation_number(name) or 0 for name in list_generations(directory)]
    return generation_name(1 + max(numbers, default=0))


def shard_root(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Where the shard files of ``manifest`` live: its generation folder, or DIR itself for version 1."""
    return Path(directory) / manifest.generation if manifest.generation else Path(directory)


def is_own_leftover(name: str) -> bool:
    """A hidden staging folder, trash folder or temporary manifest by the exact name streamload gives it."""
    return _OWN_LEFTOVER.fullmatch(name) is not None


def is_regular_file(path: Path) -> bool:
    """``path`` is a regular file itself (a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_folder(path: Path) -> bool:
    """``path`` is a folder itself (a link to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_own_generation(directory: Path, name: str) -> bool:
    """``DIR/name`` is a generation streamload wrote: a real folder with a regular ``.lock`` and a manifest
    copy naming it. Anything else called ``gen-N`` (a user's folder) is never replaced or deleted."""
    folder = directory / name
    if not (is_real_folder(folder) and is_regular_file(folder / LOCK_NAME) and is_regular_file(folder / MANIFEST_NAME)):
        return False
    try:
        return read_manifest(folder).generation == name
    except ManifestError:
        return False


def claim(path: Path) -> tuple[str, int | None]:
    """Try to lock ``path`` exclusively without waiting.

    ("free", fd) when it is ours now (fd None if the file is missing: nobody can hold it),
    ("held", None) when someone holds it, ("unknown", None) where flock does not work.
    """
    try:
        fd = lock_file(path, exclusive=True, wait=False)
    except BlockingIOError:
        return "held", None
    except FileNotFoundError:
        return "free", None
    return ("unknown", None) if fd is None else ("free", fd)


def file_names(manifest: Manifest) -> list[str]:
    return [info.name for split in manifest.splits.values() for shard in split.shards for info in shard.files.values()]


def check_own_dataset(out: Path) -> None:
    """Raise ForeignDataError unless ``out`` is a dataset streamload wrote, this version or an earlier one.

    Its manifest must be a regular file that reads as a streamload manifest, and its shards must lie
    where streamload puts them: the generation it names (a real folder with ``.lock`` and manifest copy),
    or for version 1 each file it lists, beside it. Anything else is a user's folder and stays as it is.
    """
    path = out / MANIFEST_NAME
    refusal = f"refusing to replace {out} (it is left as it is); move it away or choose another --out"
    if not is_regular_file(path):
        kind = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise ForeignDataError(f"{path}: is {kind}, not a manifest streamload wrote; {refusal}")
    try:
        manifest = read_manifest(out)
    except ManifestError as exc:
        raise ForeignDataError(f"{path}: not a streamload manifest ({exc}); {refusal}") from None
    if manifest.generation is not None and not is_own_generation(out, manifest.generation):
        raise ForeignDataError(f"{out / manifest.generation}: the generation {MANIFEST_NAME} names is missing or "
                               f"not one streamload wrote (no {LOCK_NAME} and manifest copy); {refusal}")
    missing = [name for name in file_names(manifest) if manifest.generation is None and not is_regular_file(out / name)]
    if missing:
        raise ForeignDataError(f"{out / missing[0]}: a shard the version-1 {MANIFEST_NAME} lists is missing; {refusal}")


def flat_leftovers(listing: Path) -> list[list]:
    """The [name, device, inode, size] entries of ``listing`` (none when it is missing or not in this form)."""
    try:
        data = json.loads(listing.read_text(encoding="utf-8")) if is_regular_file(listing) else []
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return []
    entries = data if isinstance(data, list) else []
    return [entry for entry in entries if isinstance(entry, list) and len(entry) == 4
            and isinstance(entry[0], str) and entry[0] == Path(entry[0]).name and not entry[0].startswith(".")
            and all(isinstance(number, int) for number in entry[1:])]
