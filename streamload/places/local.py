"""A dataset in a local folder: generations under ``DIR`` (see layout.py), leased by ``flock`` (generations.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ShardFormatError
from ..format.manifest import SplitInfo
from ..format.shardfiles import irregular_shard
from .generations import GenerationLease, acquire


class LocalPlace:
    """The dataset folder ``directory``."""

    remote = False

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    @property
    def location(self) -> str:
        return str(self.directory)

    def open(self) -> GenerationLease:
        return acquire(self.directory)  # this generation stays on disk until the lease is released

    def check_split(self, hold: GenerationLease, split: SplitInfo) -> None:
        """Every shard file of the split is there at its recorded size: a missing or cut file fails at open.

        One ``lstat`` per file (a millisecond for hundreds of shards), so a damaged dataset is reported
        before training starts rather than deep inside it; mapping a file cut short would crash with SIGBUS.
        A link (which could lead outside the dataset) or a FIFO (whose opening waits forever) is refused.
        """
        directory, root = self.directory, hold.root
        for shard in split.shards:
            for file in shard.files.values():
                path = root / file.name
                try:
                    status = os.lstat(path)
                except FileNotFoundError:
                    raise ShardFormatError(f"{path}: missing, though the manifest lists it; rebuild the dataset or "
                                           f"restore the file (`build_shards.py --verify {directory}` checks all)"
                                           ) from None
                irregular = irregular_shard(path, status.st_mode)
                if irregular is not None:
                    raise irregular
                size = status.st_size
                if size != file.bytes:
                    raise ShardFormatError(f"{path}: {size} bytes, the manifest says {file.bytes}; the file is damaged "
                                           f"(`build_shards.py --verify {directory}` checks all)")

    def __repr__(self) -> str:
        return f"LocalPlace({self.location!r})"
