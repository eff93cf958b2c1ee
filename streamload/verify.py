"""Checking a built dataset against its manifest: every file present, of the right size and hash."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .manifest import FileInfo, read_manifest, sha256_file


@dataclass(frozen=True)
class ShardProblem:
    """One bad file of one shard, with what is wrong in words."""

    split: str
    shard: int
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file} (split {self.split!r}, shard {self.shard}): {self.problem}"


def verify_dataset(directory: str | os.PathLike, *, progress: bool = True) -> list[ShardProblem]:
    """Recompute every size and SHA-256; an empty list means the dataset is sound.

    An unreadable manifest raises :class:`~streamload.errors.ManifestError` instead, since then no
    shard can be checked at all.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = [(split_name, index, info)
             for split_name, split in manifest.splits.items()
             for index, shard in enumerate(split.shards)
             for info in shard.files.values()]
    problems = []
    total = sum(info.bytes for _, _, info in files)
    with tqdm(total=total, desc="verifying", unit="B", unit_scale=True, disable=not progress) as bar:
        for split_name, index, info in files:
            problem = check_file(directory / info.name, info, bar.update)
            if problem:
                problems.append(ShardProblem(split_name, index, info.name, problem))
    return problems


def check_file(path: Path, info: FileInfo, on_bytes: Callable[[int], object] | None = None) -> str | None:
    """What is wrong with ``path`` compared to its manifest entry, or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != info.bytes:
        kind = "truncated" if size < info.bytes else "too long"
        return f"{kind}: {size} bytes, the manifest says {info.bytes}"
    actual = sha256_file(path, on_bytes)
    if actual != info.sha256:
        return f"checksum mismatch: SHA-256 {actual[:16]}..., the manifest says {info.sha256[:16]}..."
    return None
