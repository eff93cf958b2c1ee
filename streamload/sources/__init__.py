"""Where samples come from before they are sharded: IDX files, arrays and ``.npz`` archives, deformed copies.

Every source implements :class:`SplitSource`: a known sample count and array specs, and chunks of
bounded size, so a build never holds a whole split in memory.
"""

from .arrays import ArraySource, NpzArraySource
from .augment import AugmentedSource
from .base import DEFAULT_CHUNK_ROWS, Chunk, SplitSource
from .idx import IdxPairSource
from .mnist import mnist_sources

__all__ = ["DEFAULT_CHUNK_ROWS", "ArraySource", "AugmentedSource", "Chunk", "IdxPairSource", "NpzArraySource",
           "SplitSource", "mnist_sources"]
