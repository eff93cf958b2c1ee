"""Reading and writing the IDX format of MNIST (LeCun et al.), gzip-compressed or raw.

The header is two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, so any dataset in this layout (Fashion-MNIST, KMNIST, EMNIST...) is readable, not just
MNIST. Rows are streamed in chunks so a file larger than RAM never needs to be loaded whole.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ...base.names import display_name
from ...errors import IdxFormatError, SourceMismatchError
from ...format.specs import ArraySpec
from .base import CHUNK_BYTES, DEFAULT_CHUNK_ROWS, Chunk, rows_per_chunk

# Dtype codes from the IDX specification; multi-byte types are stored big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES_BY_KIND = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
MAX_DIMENSIONS = 32  # numpy arrays have at most 64; no IDX dataset comes near
_READ_PIECE = 16 * 2**20
_PREALLOCATE_BYTES = 2 * CHUNK_BYTES
_READ_INTO_PIECE = 2**20  # gzip decompresses each piece into a bytes object first: keep that small


@dataclass(frozen=True)
class IdxHeader:
    """What the header of an IDX file says: element dtype and full shape."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    header_bytes: int

    @property
    def name(self) -> str:
        """The path as messages print it (control characters escaped)."""
        return display_name(self.path)

    @property
    def num_rows(self) -> int:
        return self.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def total_bytes(self) -> int:
        """Size of the whole uncompressed file: header plus payload."""
        return self.header_bytes + self.num_rows * self.row_bytes


def is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def open_idx(path: str | os.PathLike) -> IO[bytes]:
    """Open an IDX file for reading, transparently un-gzipping by magic bytes, not by name."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _read(stream: IO[bytes], size: int, path: Path, what: str) -> bytes:
    """Up to ``size`` bytes, read in bounded pieces: a header claiming terabytes costs no memory."""
    pieces = []
    try:
        while size > 0 and (piece := stream.read(min(size, _READ_PIECE))):
            pieces.append(piece)
            size -= len(piece)
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:  # a truncated or corrupt gzip stream
        raise IdxFormatError(f"{display_name(path)}: cannot read {what}: {exc}") from exc
    return b"".join(pieces)


def _read_into(stream: IO[bytes], size: int, path: Path, what: str) -> bytearray:
    """``size`` bytes read straight into one buffer: a chunk costs its own size, not its pieces plus their join."""
    data = bytearray(size)
    filled = 0
    with memoryview(data) as view:
        try:
            while filled < size and (got := stream.readinto(view[filled:filled + _READ_INTO_PIECE])):
                filled += got
        except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
            raise IdxFormatError(f"{display_name(path)}: cannot read {what}: {exc}") from exc
    return data if filled == size else data[:filled]


def _read_exact(stream: IO[bytes], size: int, path: Path, what: str) -> bytes | bytearray:
    """Exactly ``size`` bytes; sizes up to ``_PREALLOCATE_BYTES`` (every chunk of a source) into one buffer,
    larger ones (``read_idx`` of a whole file, a lying header) piece by piece, so a short file costs its length."""
    reader = _read_into if size <= _PREALLOCATE_BYTES else _read
    data = reader(stream, size, path, what)
    if len(data) != size:
        raise IdxFormatError(f"{display_name(path)}: truncated {what}: expected {size} bytes, found {len(data)}")
    return data


def _read_to_end(stream: IO[bytes], header: IdxHeader) -> None:
    """After the payload the file must end; for gzip, reading on checks the trailer's CRC-32 and length."""
    extra = _read(stream, 1, header.path, "the end of the gzip stream (its CRC-32 and length trailer)")
    if extra:
        raise IdxFormatError(f"{header.name}: trailing bytes after the IDX payload: the header says {header.shape} "
                             f"({header.total_bytes} bytes in all) but the data goes on")


def read_header(stream: IO[bytes], path: str | os.PathLike) -> IdxHeader:
    """Parse and validate the header at the current position of ``stream``."""
    path = Path(path)
    name = display_name(path)
    magic = _read_exact(stream, 4, path, "IDX magic number")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{name}: wrong IDX magic number 0x{magic.hex()} (expected 0x0000TTNN with a known "
            f"dtype code TT in {sorted(hex(c) for c in IDX_DTYPES)} and NN >= 1 dimensions)"
        )
    if ndim > MAX_DIMENSIONS:
        raise IdxFormatError(f"{name}: IDX header declares {ndim} dimensions; at most {MAX_DIMENSIONS} are supported")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "IDX dimensions"))
    header = IdxHeader(path=path, dtype=IDX_DTYPES[code], shape=tuple(dims), header_bytes=4 + 4 * ndim)
    if header.num_rows and not header.row_bytes:
        raise IdxFormatError(f"{name}: IDX header declares {header.num_rows} samples of shape {header.row_shape}, "
                             "which hold no data")
    if header.total_bytes >= 2**62 or math.prod(d for d in header.shape if d) * header.dtype.itemsize >= 2**62:
        raise IdxFormatError(f"{name}: IDX header declares shape {header.shape}: {header.total_bytes} bytes, "
                             "more than any file holds")
    return header


def check_raw_size(header: IdxHeader) -> None:
    """An uncompressed file must be exactly header + payload long: cut or with bytes after, it is refused."""
    if is_gzip(header.path):
        return  # sizes inside a gzip stream are checked while reading it to its end
    size = os.path.getsize(header.path)
    if size < header.total_bytes:
        payload = header.total_bytes - header.header_bytes
        raise IdxFormatError(f"{header.name}: truncated IDX payload: expected {payload} bytes, found "
                             f"{max(0, size - header.header_bytes)} (after the {header.header_bytes}-byte header)")
    if size > header.total_bytes:
        raise IdxFormatError(f"{header.name}: {size - header.total_bytes} trailing bytes after the IDX payload: the "
                             f"header says {header.shape} ({header.total_bytes} bytes in all), the file has {size}")


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    with open_idx(path) as stream:
        return read_header(stream, path)


def iter_idx_rows(path: str | os.PathLike, chunk_rows: int) -> Iterator[np.ndarray]:
    """Yield consecutive native-endian chunks of at most ``chunk_rows`` rows; memory stays O(chunk)."""
    with open_idx(path) as stream:
        header = read_header(stream, path)
        check_raw_size(header)
        native = header.dtype.newbyteorder("=")
        for start in range(0, header.num_rows, chunk_rows):
            count = min(chunk_rows, header.num_rows - start)
            what = f"IDX payload (rows {start}..{start + count - 1} of {header.num_rows})"
            raw = _read_exact(stream, count * header.row_bytes, header.path, what)
            chunk = np.frombuffer(raw, dtype=header.dtype).reshape((count, *header.row_shape))
            if start + count == header.num_rows:
                _read_to_end(stream, header)  # before the last chunk is used: a bad CRC fails the whole file
            yield chunk.astype(native, copy=False)
        if header.num_rows == 0:
            _read_to_end(stream, header)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a whole IDX file; for files that fit in memory (tests, the augmentation source)."""
    header = read_idx_header(path)
    chunks = list(iter_idx_rows(path, max(1, header.num_rows)))
    return np.concatenate(chunks) if chunks else np.empty(header.shape, header.dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip when the name ends in .gz, unless ``compress`` says)."""
    path = Path(path)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES_BY_KIND or array.ndim == 0:
        raise IdxFormatError(f"{display_name(path)}: IDX cannot store an array of dtype {array.dtype} and rank "
                             f"{array.ndim}")
    code = _CODES_BY_KIND[native]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    use_gzip = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if use_gzip else open(path, "wb")) as out:
        out.write(header + payload)
    return path


class IdxPairSource:
    """Images and labels in two IDX files, checked against each other before anything is read."""

    def __init__(self, images: str | os.PathLike, labels: str | os.PathLike) -> None:
        self.images, self.labels = read_idx_header(images), read_idx_header(labels)
        _check_ranks(self.images, self.labels)
        check_raw_size(self.images)
        check_raw_size(self.labels)
        if self.images.num_rows != self.labels.num_rows:
            raise SourceMismatchError(
                f"{self.images.name} has {self.images.num_rows} images but {self.labels.name} has "
                f"{self.labels.num_rows} labels; they must pair up one to one"
            )
        self.description = f"{self.images.name} + {display_name(self.labels.path.name)}"
        self.num_samples = self.images.num_rows
        self.specs = {"x": _spec_of(self.images), "y": _spec_of(self.labels)}

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """At most ``chunk_rows`` rows at a time, fewer when they are large: a chunk stays near ``CHUNK_BYTES``."""
        rows = rows_per_chunk(self.specs, chunk_rows)
        pairs = zip(iter_idx_rows(self.images.path, rows), iter_idx_rows(self.labels.path, rows))
        for x, y in pairs:
            yield {"x": x, "y": y}


def _check_ranks(images: IdxHeader, labels: IdxHeader) -> None:
    """Images are samples of rank >= 1 (a file of rank >= 2), labels one number per sample (rank 1)."""
    problems = []
    if len(images.shape) < 2:
        problems.append(f"{images.name}: images must have rank >= 2 (samples, then pixels), this file has shape "
                        f"{images.shape}")
    if len(labels.shape) != 1:
        problems.append(f"{labels.name}: labels must have rank 1 (one per sample), this file has shape {labels.shape}")
    if problems:
        swapped = " (are the images and labels files swapped?)" if len(labels.shape) >= 2 else ""
        raise SourceMismatchError("; ".join(problems) + swapped)


def _spec_of(header: IdxHeader) -> ArraySpec:
    return ArraySpec(dtype=header.dtype.newbyteorder("=").str, shape=header.row_shape)
