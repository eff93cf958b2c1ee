"""Reading HDF5 shards: contiguous datasets mapped directly (then h5py is closed), chunked (compressed) ones read
whole chunk by whole chunk through h5py, ragged arrays as a mapped ``KEY.offsets`` dataset and rows read by
``preadv`` runs (see ragged/reader.py). Every dataset must keep its bytes in the shard file itself
(:func:`foreign_storage`), which ``--verify`` checks too."""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...errors import ShardChangedError, ShardDecodeError, ShardFormatError
from ..manifest import HDF5_FILE_ROLE, ShardInfo, offsets_key
from ..ragged.reader import RecordArray
from ..reader import ArraysReader, ByteRanges, MappedArray
from ..records import OFFSETS_DTYPE
from ..shardfiles import OpenShardFile, open_shard_file
from ..specs import ArraySpec

_FADVICE = {getattr(mmap, f"MADV_{name}"): getattr(os, f"POSIX_FADV_{name}")
            for name in ("NORMAL", "RANDOM", "SEQUENTIAL") if hasattr(mmap, f"MADV_{name}")}


class ChunkedArray(OpenShardFile):
    """An HDF5 dataset stored in chunks (compressed): read whole chunks, gather the rows from them.

    ``fd`` is a descriptor of the same file as h5py's, for read hints and change checks.
    """

    def __init__(self, dataset, path: Path, fd: int) -> None:  # noqa: ANN001 - an h5py.Dataset
        super().__init__(path, fd)
        self.dataset = dataset
        self.chunk_rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])

    def take(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((len(rows), *self.dataset.shape[1:]), self.dataset.dtype) if out is None else out
        if not len(rows):  # the loop below would look up the chunk of a first row that is not there
            return out
        self.check()
        chunk_of_row = rows // self.chunk_rows
        bounds = np.flatnonzero(np.diff(chunk_of_row)) + 1
        for first, last in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(rows)].tolist()):
            start = int(chunk_of_row[first]) * self.chunk_rows
            block = self._read(start, min(start + self.chunk_rows, self.dataset.shape[0]))
            out[first:last] = block[rows[first:last] - start]
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of whole chunks; a chunk that cannot be read back names the file, not only h5py."""
        try:
            return self.dataset[start:stop]
        except OSError as exc:  # a chunk that fails to decompress, or bytes gone from a file cut short
            self.check()
            reason = (str(exc).splitlines() or ["unknown error"])[0]
            raise ShardDecodeError(f"{self.path}: dataset {self.dataset.name.lstrip('/')!r}, rows {start}..{stop - 1}: "
                                   f"a stored chunk cannot be read back ({reason}); the file is damaged: restore it or "
                                   "rebuild the dataset") from None

    def ranges(self, rows: np.ndarray) -> ByteRanges | None:
        return self._chunk_ranges(np.unique(rows // self.chunk_rows))

    def span(self, first: int, last: int) -> ByteRanges | None:
        return self._chunk_ranges(np.arange(first // self.chunk_rows, (last - 1) // self.chunk_rows + 1))

    def _chunk_ranges(self, chunks: np.ndarray) -> ByteRanges | None:
        if self.dataset.chunks is None or not len(chunks):
            return None
        tail = (0,) * (self.dataset.ndim - 1)
        infos = [self.dataset.id.get_chunk_info_by_coord((chunk * self.chunk_rows, *tail)) for chunk in chunks.tolist()]
        stored = [(info.byte_offset, info.byte_offset + info.size) for info in infos if info.byte_offset is not None]
        starts, ends = (np.array(column, dtype=np.int64) for column in zip(*stored)) if stored else (np.empty(0),) * 2
        return ByteRanges(self.fd, starts, ends, self)

    def advise(self, advice: int) -> None:
        if advice in _FADVICE:
            os.posix_fadvise(self.fd, 0, 0, _FADVICE[advice])


def open_hdf5(root: Path, shard: ShardInfo, specs: Mapping[str, ArraySpec]) -> ArraysReader:
    """Map contiguous datasets directly (then h5py is closed); keep h5py open only for chunked ones.

    h5py's chunk cache is off: whole chunks are read once per gather, so a cache would only hold
    anonymous memory (1 MiB per open dataset by default) that grows with the number of shards.
    """
    import h5py

    path = root / shard.files[HDF5_FILE_ROLE].name
    fd = open_shard_file(path)  # checked first: h5py follows links and would wait on a FIFO
    try:
        handle = _open_same_file(h5py, path, fd)
        try:
            arrays = _hdf5_arrays(handle, path, fd, shard, specs)
        except BaseException:
            handle.close()
            raise
    finally:
        os.close(fd)
    if all(isinstance(array, MappedArray) or getattr(array, "dataset", True) is None for array in arrays.values()):
        handle.close()  # nothing read through h5py (RecordArray.dataset is None when its rows are stored plainly)
    return ArraysReader(arrays, shard.num_samples)


def _hdf5_arrays(handle, path: Path, fd: int, shard: ShardInfo,  # noqa: ANN001 - an h5py.File
                 specs: Mapping[str, ArraySpec]) -> dict[str, MappedArray | ChunkedArray]:
    """Each array of an HDF5 shard, mapped when stored plainly, each with its own copy of ``fd``."""
    arrays: dict[str, MappedArray | ChunkedArray] = {}
    for key, spec in specs.items():
        if spec.ragged:
            arrays.update(open_hdf5_records(handle, path, fd, key, spec, shard.num_samples))  # type: ignore[arg-type]
            continue
        dataset = checked_dataset(handle, path, key, spec, shard.num_samples)
        offset = dataset.id.get_offset()
        if dataset.chunks is None and dataset.compression is None and offset is not None:
            arrays[key] = MappedArray(path, offset, spec, shard.num_samples, os.dup(fd))
        else:
            arrays[key] = ChunkedArray(dataset, path, os.dup(fd))
    return arrays


def _open_same_file(h5py, path: Path, fd: int):  # noqa: ANN001, ANN202 - the h5py module, an h5py.File
    """h5py's handle of ``path``, which must be the file ``fd`` has open (not one swapped in since)."""
    try:
        handle = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as exc:
        raise ShardFormatError(f"{path}: cannot open as HDF5: {str(exc).splitlines()[0]}") from None
    theirs, ours = _vfd_handle(handle), os.fstat(fd)
    if theirs is not None and (os.fstat(theirs).st_ino, os.fstat(theirs).st_dev) != (ours.st_ino, ours.st_dev):
        handle.close()
        raise ShardChangedError(f"{path}: the shard file was replaced while it was being opened")
    return handle


def checked_dataset(handle, path: Path, key: str, spec: ArraySpec,  # noqa: ANN001, ANN201 - h5py
                    rows: int | None):
    """Dataset ``key``, stored in the file, of ``rows`` samples as ``spec`` says (``rows`` None: any number of a
    ragged array's rows)."""
    foreign = foreign_storage(handle, key)
    if foreign is not None:
        raise ShardFormatError(f"{path}: dataset {key!r} {foreign}")
    if key not in handle:
        raise ShardFormatError(f"{path}: no dataset {key!r}")
    dataset = handle[key]
    expected = (rows, *spec.row_shape) if spec.ragged else (rows, *spec.shape)
    shape_ok = len(dataset.shape) == len(expected) and all(a == b for a, b in zip(dataset.shape, expected)
                                                           if b is not None)
    if not shape_ok or dataset.dtype != np.dtype(spec.dtype):
        raise ShardFormatError(f"{path}: dataset {key!r} is {dataset.dtype} {dataset.shape}, "
                               f"the manifest says {spec.dtype} {expected}")
    return dataset


def _vfd_handle(handle) -> int | None:  # noqa: ANN001 - an h5py.File
    """HDF5's file descriptor (sec2 driver), or None for drivers without one."""
    try:
        fd = handle.id.get_vfd_handle()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return fd if isinstance(fd, int) else None


def foreign_storage(handle, key: str) -> str | None:  # noqa: ANN001 - an h5py.File
    """Why dataset ``key`` does not keep its bytes inside this HDF5 file, or None when it does (or is absent).

    External storage, virtual datasets and external or soft links all read other files: a shard made by
    someone else could serve ``/etc/passwd`` as training data, while ``--verify`` hashes only the shard.
    """
    import h5py

    parts = key.split("/")
    for depth in range(1, len(parts) + 1):  # every group on the way must be a plain member of the file
        link = handle.get("/".join(parts[:depth]), getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            return f"is an HDF5 {type(link).__name__} to data elsewhere, not a dataset stored in the shard file"
    dataset = handle[key]
    if not isinstance(dataset, h5py.Dataset):
        return "is a group, not a dataset"
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return "is a virtual dataset (its data lies in other files), not stored in the shard file"
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        return f"has HDF5 storage layout {plist.get_layout()}; shards store datasets contiguous or chunked"
    if plist.get_external_count():
        return "uses HDF5 external storage (its data lies in other files), not stored in the shard file"
    return None


def open_hdf5_records(handle, path: Path, fd: int, key: str, spec: ArraySpec,  # noqa: ANN001 - an h5py.File
                      num_samples: int) -> dict[str, MappedArray | RecordArray]:
    """Ragged array ``key`` of an HDF5 shard: the ``KEY.offsets`` dataset mapped, the rows read by ``preadv`` when
    stored contiguously (else through h5py); each object with its own copy of ``fd``."""
    index_spec = ArraySpec(OFFSETS_DTYPE.str, ())
    index_set = checked_dataset(handle, path, offsets_key(key), index_spec, num_samples + 1)
    index_offset = index_set.id.get_offset()
    if index_set.chunks is not None or index_offset is None:
        raise ShardFormatError(f"{path}: dataset {offsets_key(key)!r} is not stored contiguously; streamload "
                               "writes offsets so that they can be mapped")
    index = MappedArray(path, index_offset, index_spec, num_samples + 1, os.dup(fd))
    data = checked_dataset(handle, path, key, spec, None)
    offset = data.id.get_offset()
    chunked = data.chunks is not None or data.compression is not None
    records = RecordArray(path, os.dup(fd), spec, index, None if chunked else offset, data if chunked else None)
    if data.shape[0] != records.total_rows:
        raise ShardFormatError(f"{path}: offsets {offsets_key(key)!r} end at row {records.total_rows}, dataset {key!r} "
                               f"holds {data.shape[0]}")
    return {key: records, offsets_key(key): index}
