"""Where samples come from before they are sharded: IDX files, arrays, NumPy files, image folders, CSV
tables, any Python iterable, deformed copies.

Every source implements :class:`SplitSource`: a known sample count and array specs, and chunks of
bounded size, so a build never holds a whole split in memory. Importing this package does not import
Pillow; image folders import it when they are first read.
"""

from .arrays import ArraySource, NpzArraySource
from .augment import AugmentedSource
from .base import DEFAULT_CHUNK_ROWS, Chunk, SplitSource
from .idx import IdxPairSource
from .images import ImageFolderSource, ImageOptions, image_folder_sources
from .iterables import IterableSource
from .mnist import mnist_sources
from .numpy_files import NpyPairSource, numpy_sources
from .splits import MaskedSource, split_validation
from .tables import CsvSource, csv_sources

__all__ = ["DEFAULT_CHUNK_ROWS", "ArraySource", "AugmentedSource", "Chunk", "CsvSource", "IdxPairSource",
           "ImageFolderSource", "ImageOptions", "IterableSource", "MaskedSource", "NpyPairSource", "NpzArraySource",
           "SplitSource", "csv_sources", "image_folder_sources", "mnist_sources", "numpy_sources", "split_validation"]
