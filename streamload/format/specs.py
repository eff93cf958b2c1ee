"""What one sample of an array is: its dtype and shape. Sources describe their arrays with it, writers and
readers check files against it, and the manifest records it. Also what a ``.npy`` file says it holds."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

# numpy parses a .npy header with ast.literal_eval, which CPython before 3.13 cannot run in two threads at once
# (gh-106905: "SystemError: AST constructor recursion depth mismatch"); two Keras worker threads opening shards
# hit it on a 468-shard set. One header at a time: a shard's header is parsed once per process.
_HEADER_LOCK = threading.Lock()
NOMINAL_RECORD_ROWS = 256  # rows a ragged sample is assumed to hold when sizing default shards and chunks
IMAGE_ENCODING = "image"  # a ragged uint8 array whose records are image files, stored as found
ENCODINGS = (IMAGE_ENCODING,)


def _new_header_lock() -> None:
    global _HEADER_LOCK
    _HEADER_LOCK = threading.Lock()  # a fork copies the lock as it was, held if another thread held it


os.register_at_fork(after_in_child=_new_header_lock)


def read_npy_header(source: Path | BinaryIO) -> tuple[tuple[int, int], tuple[int, ...], bool, np.dtype, int]:
    """(format version, shape, Fortran order, dtype, where the data starts) from a ``.npy`` file's header.

    ``source`` is a path or a binary stream at the file's start (a descriptor opened with checks the path
    cannot give). Raises numpy's ValueError (or SyntaxError) when the file does not start with a readable header.
    """
    opened = open(source, "rb") if isinstance(source, (str, os.PathLike)) else contextlib.nullcontext(source)
    with opened as stream:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
        with _HEADER_LOCK:
            shape, fortran, dtype = read(stream)
        return version, tuple(shape), fortran, dtype, stream.tell()


@dataclass(frozen=True)
class ArraySpec:
    """Dtype and per-sample shape of one array (``x``, ``y``, a named feature...) of a split.

    ``scale`` is what readers multiply a model input by when they normalise it, decided at build time
    for every split alike (see write/values.py); None for targets, weights and manifests older than it.

    A leading ``None`` in ``shape`` (``(None,)`` for token ids, ``(None, 3)`` for frames of 3 values)
    makes the array *ragged*: each sample is a record of its own number of rows, stored as a data file
    of concatenated rows plus an offsets index (see records.py), as Keras writes ``Input((None,))``.

    ``encoding`` says the records are not values but files to decode on read: ``"image"`` marks a
    ``uint8`` array of shape ``(None,)`` whose records are image files' bytes exactly as found
    (``build_shards.py --store encoded``); readers decode them to ``(H, W, C)`` pixels. None for
    every other array, and for every manifest written before encoded stores existed.
    """

    dtype: str
    shape: tuple[int | None, ...]
    scale: float | None = None
    encoding: str | None = None

    @property
    def ragged(self) -> bool:
        """Samples of varying length: the first axis of each sample varies."""
        return bool(self.shape) and self.shape[0] is None

    @property
    def encoded_image(self) -> bool:
        """Records that are image files, decoded on read."""
        return self.encoding == IMAGE_ENCODING

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row of a record (ragged), or of the whole sample."""
        return self.shape[1:] if self.ragged else self.shape  # type: ignore[return-value]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * np.dtype(self.dtype).itemsize

    @property
    def sample_bytes(self) -> int:
        """Bytes of one sample; for ragged arrays an estimate (``NOMINAL_RECORD_ROWS`` rows), used only to size
        shards and chunks, never to read."""
        return self.row_bytes * (NOMINAL_RECORD_ROWS if self.ragged else 1)

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySpec:
        """The spec of the samples of ``array`` (its first axis counts samples)."""
        return cls(dtype=np.dtype(array.dtype).newbyteorder("=").str, shape=tuple(array.shape[1:]))
