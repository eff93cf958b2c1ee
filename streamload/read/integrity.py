"""Opt-in checks of shard contents before they are used (``LoaderOptions(verify="once")``).

A flipped bit in a shard would otherwise be served as data until someone runs ``--verify``. With
``verify="once"`` each shard file is checked against the CRC-32 its manifest recorded (SHA-256 for
format-1 manifests) before its first use, and only once per generation: a file that passed is noted
in the generation's ``.verified`` record, so worker processes and later runs do not hash it again.
A shard that fails raises :class:`~streamload.errors.ShardCorruptError` naming the file.
"""

from __future__ import annotations

import os
import shlex
import zlib
from collections.abc import Iterable
from pathlib import Path

from ..base.durable import open_in_folder
from ..errors import ShardCorruptError, UnsafeFileError
from ..format.manifest import FileInfo, sha256_file
from ..format.shardfiles import open_shard_file
from ..places.layout import generation_number

RECORD = ".verified"
_BLOCK = 4 * 2**20


def crc32_file(path: Path) -> int:
    """CRC-32 of a shard file, opened as one (no link followed, no FIFO waited on)."""
    crc = 0
    with os.fdopen(open_shard_file(path), "rb") as stream:
        while block := stream.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def verify_command(root: Path) -> str:
    """The command that checks every shard of the dataset ``root`` (a generation folder or the dataset) is in."""
    dataset = root.parent if generation_number(root.name) is not None else root
    return f"python3 -m streamload.cli --verify {shlex.quote(str(dataset))}"


def _entry(info: FileInfo) -> str:
    return f"{info.name} {info.crc32 if info.crc32 is not None else info.sha256}"


def recorded(root: Path) -> set[str]:
    """The files of this generation that passed a check before (empty if none or unreadable).

    A record that is a link or not a regular file raises UnsafeFileError: it is never followed.
    """
    try:
        fd = open_in_folder(root / RECORD, os.O_RDONLY, folder_may_be_link=_is_dataset_folder(root))
    except UnsafeFileError:
        raise
    except OSError:
        return set()
    with open(fd, "rb") as stream:
        return set(stream.read().decode("utf-8", "replace").splitlines())


def _is_dataset_folder(root: Path) -> bool:
    """The folder the user named (version-1 shards lie there; it may be a link), not a generation folder."""
    return generation_number(root.name) is None


def check_files(root: Path, files: Iterable[FileInfo], passed: set[str]) -> None:
    """Check each file not in ``passed`` against the manifest; add it there, and to the record, when sound."""
    for info in files:
        entry = _entry(info)
        if entry in passed:
            continue
        path = root / info.name
        if info.crc32 is not None:
            actual, expected = f"{crc32_file(path):08x}", f"{info.crc32:08x}"
            kind = "CRC-32"
        else:
            actual, expected, kind = sha256_file(path), info.sha256, "SHA-256"
        if actual != expected:
            raise ShardCorruptError(f"{path}: corrupt shard: its {kind} is {actual}, the manifest says {expected}; "
                                    f"restore or rebuild it (`{verify_command(root)}` checks every shard)")
        _note(root, entry)  # first: a refused record (a planted link) fails every later use too, not only this one
        passed.add(entry)


def _note(root: Path, entry: str) -> None:
    """Append to the record, never through a link; a read-only dataset just checks again in the next process."""
    try:
        fd = open_in_folder(root / RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                            folder_may_be_link=_is_dataset_folder(root))
    except UnsafeFileError:
        raise
    except OSError:
        return
    try:
        os.write(fd, f"{entry}\n".encode())  # one short O_APPEND write: lines of racing writers never interleave
    finally:
        os.close(fd)
