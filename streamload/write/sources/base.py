"""What every source of samples provides before it is sharded.

A source knows its sample count and array specs up front (from headers, not from the data) and
yields chunks of a bounded number of rows, so building never needs a whole split in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from ...format.specs import ArraySpec

Chunk = dict[str, np.ndarray]
DEFAULT_CHUNK_ROWS = 8192
CHUNK_BYTES = 64 * 2**20  # a chunk of large samples (photos) is cut to about this size
# Optional attributes a source may set to say what its arrays are for (else ``x`` is the input and
# ``y`` the target): ``features`` (tuple of array names), ``target`` and ``sample_weight`` (names or
# None). Also optional: ``class_names`` (tuple of str, label i is class_names[i]) and ``skipped``
# (samples of the source left out, e.g. unreadable images; read after ``iter_chunks`` is exhausted) and
# ``column_names`` (array name -> names of a sample's columns, for messages; a CSV table's headers).
SOURCE_ROLES = ("features", "target", "sample_weight")


@runtime_checkable
class SplitSource(Protocol):
    """A finite, ordered stream of samples with known count and per-sample specs."""

    description: str
    num_samples: int
    specs: dict[str, ArraySpec]

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]: ...


def rows_per_chunk(specs: dict[str, ArraySpec], chunk_rows: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """At most ``chunk_rows`` rows, fewer when the samples are large: a chunk stays near ``chunk_bytes``."""
    sample_bytes = sum(spec.sample_bytes for spec in specs.values())
    return max(1, min(chunk_rows, chunk_bytes // max(1, sample_bytes)))


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type holding class labels 0..num_classes-1 (uint8 up to 256 classes)."""
    return np.dtype(np.min_scalar_type(max(num_classes - 1, 0)))
