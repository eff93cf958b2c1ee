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
# Optional attributes a source may set to say what its arrays are for (else ``x`` is the input and
# ``y`` the target): ``features`` (tuple of array names), ``target`` and ``sample_weight`` (names or
# None). Also optional: ``class_names`` (tuple of str, label i is class_names[i]) and ``skipped``
# (samples of the source left out, e.g. unreadable images; read after ``iter_chunks`` is exhausted).
SOURCE_ROLES = ("features", "target", "sample_weight")


@runtime_checkable
class SplitSource(Protocol):
    """A finite, ordered stream of samples with known count and per-sample specs."""

    description: str
    num_samples: int
    specs: dict[str, ArraySpec]

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]: ...
