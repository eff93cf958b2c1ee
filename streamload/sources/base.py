"""What every source of samples provides before it is sharded.

A source knows its sample count and array specs up front (from headers, not from the data) and
yields chunks of a bounded number of rows, so building never needs a whole split in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ..manifest import ArraySpec

Chunk = dict[str, np.ndarray]
DEFAULT_CHUNK_ROWS = 8192


@runtime_checkable
class SplitSource(Protocol):
    """A finite, ordered stream of samples with known count and per-sample specs."""

    description: str
    num_samples: int
    specs: dict[str, ArraySpec]

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]: ...
