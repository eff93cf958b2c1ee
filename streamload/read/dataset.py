"""Random access to one split of a sharded dataset: ``gather(indices)`` reads exactly those samples.

Only the manifest is read on construction, and the dataset's current generation is leased (a
shared lock): it reads that generation until it is closed, whatever rebuilds happen meanwhile, and
a pickled copy (a spawned worker) locks the same generation again. Shard readers are opened on first
use and kept in the one per-process cache (a forked or unpickled copy opens its own), so the
dataset pickles as its path, generation, split and options, never as data. Sorted indices are read
shard by shard in file order straight into the output array; unsorted ones are sorted first and
put back in the order asked for.
The dataset is also a Grain ``RandomAccessDataSource`` (``__len__``, ``__getitem__``, ``__getitems__``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..base.process import current_pid
from ..format.dispatch import open_reader
from ..format.manifest import Manifest, SplitInfo
from ..format.ragged.reader import take_records
from ..format.reader import ByteRanges, ShardReader
from ..format.records import Records
from ..options import LoaderOptions
from ..places.dispatch import open_place
from .file_watch import FILES_PER_MAPPED_ARRAY, ChangeWatch, allow_open_files
from .integrity import check_files, recorded
from .remote import RemoteShards, hold_until_collected, upcoming


class ShardedDataset:
    """One split of a dataset on disk."""

    def __init__(self, directory: str | os.PathLike, split: str = "train", verify: bool = False,
                 options: LoaderOptions | None = None) -> None:
        self.place = open_place(directory)  # a local folder, or s3://bucket/prefix (read through the shard cache)
        self.directory = Path(directory) if not self.place.remote else self.place.location
        self.split_name = split
        self.lease = self.place.open()  # this generation stays readable until the dataset is closed
        self.manifest: Manifest = self.lease.manifest
        self.info: SplitInfo = self.manifest.split(split)
        self.remote = (RemoteShards(self.place, self.lease, self.info, options or LoaderOptions())  # type: ignore[arg-type]
                       if self.place.remote else None)
        self.root = self.lease.root if self.remote is None else self.remote.folder
        # check each shard's checksum before its first use (streamload.read.integrity); a bucket's shards are
        # checked (SHA-256) as they are downloaded, always
        self.verify = verify and self.remote is None
        self.advice: int | None = None
        self._starts = self.info.shard_starts
        self.place.check_split(self.lease, self.info)
        allow_open_files(len(self.info.shards) * len(self.info.arrays) * FILES_PER_MAPPED_ARRAY)
        self._readers: list[ShardReader | None] = []
        self._verified: set[str] = set()
        self._pid: int | None = None

    @property
    def generation(self) -> str | None:
        """The generation this dataset reads, fixed at construction: a rebuild never changes what it serves."""
        return self.lease.generation

    def close(self) -> None:
        """Let go of the generation (a newer one may then be collected); reading again is an error."""
        self._readers, self._pid = [], None
        if self.remote is not None:
            self.remote.close()
        self.lease.release()

    def __len__(self) -> int:
        return self.info.num_samples

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.info.arrays)

    def reader(self, shard: int) -> ShardReader:
        """Shard ``shard``'s reader in this process, opened on first use."""
        self.reader_state()
        reader = self._readers[shard]
        if reader is None:
            if self.verify:
                check_files(self.root, self.info.shards[shard].files.values(), self._verified)
            if self.remote is not None:
                return self._remote_reader(shard)
            reader = open_reader(self.manifest.format, self.root, self.info.shards[shard], self.info.arrays)
            self._prepare(reader)
            self._readers[shard] = reader  # threads racing here each open one; the last stored is kept
        return reader

    def _prepare(self, reader: ShardReader) -> None:
        """A reader just opened: the madvise hint, and its files watched (or checked before every read)."""
        if self.advice is not None:
            reader.advise(self.advice)
        if self._watch.watch(reader):
            reader.check()  # a change between opening and watching is seen here
            reader.check_each_take = False

    def _remote_reader(self, shard: int) -> ShardReader:
        """Shard ``shard`` from the local cache (fetched first if absent), held there while its reader lives.
        Readers stay open while the cache's working set has room for them (a random batch may touch every shard:
        reopening each would cost a lease, a header parse and a map a batch); see :meth:`_close_readers`."""
        assert self.remote is not None
        root, files, leases = self.remote.open(shard, self.info.shards[shard])
        try:
            reader = open_reader(self.manifest.format, root, files, self.info.arrays)
        except BaseException:
            for lease in leases:
                lease.release()
            raise
        hold_until_collected(reader, leases)
        self._prepare(reader)
        with self._open_lock:
            self._readers[shard] = reader
            self._open.pop(shard, None)
            self._open[shard] = None
            self._close_readers(self.remote.keep - self.remote.pending(), spare=shard)
        return reader

    def _close_readers(self, most: int, spare: int | None = None) -> None:
        """Drop open readers (their leases end when no thread reads them any more) until at most ``most`` stay:
        those of no shard coming soon first, least recently used first; with ``spare`` (a reader just opened)
        those coming soon too, but never ``spare``. Open readers and shards fetched ahead stay within the
        working set (``keep``) that the cache was sized for. Called with ``_open_lock`` held."""
        closable = [s for s in self._open if s not in self._soon]
        if spare is not None:
            closable += [s for s in self._open if s in self._soon and s != spare]
        for oldest in closable[:max(0, len(self._open) - most)]:
            del self._open[oldest]
            self._readers[oldest] = None

    def prefetch(self, indices: np.ndarray) -> None:
        """Fetch the shards of ``indices`` (the samples of the batches coming, in order of use) ahead, within the
        working set, making room by closing readers of shards not coming soon: a dataset in a bucket only."""
        if not self.fetching_ahead():
            return
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        with self._open_lock:
            soon = upcoming(shards, self.remote.keep)
            self._soon = set(soon)
            wanted = [shard for shard in soon if shard not in self._open]
            if wanted and self.remote.keep < len(self.info.shards):  # room for the shards to fetch ahead; where the
                self._close_readers(self.remote.keep - self.remote.ahead)  # working set holds all, they always fit
            open_now = len(self._open)
        self.remote.prefetch(wanted, open_now)

    def fetching_ahead(self) -> bool:
        """Whether :meth:`prefetch` can do anything: a dataset in a bucket, fetching ahead, with a shard not open and
        one not yet in the cache (otherwise the loader need not even name the shards coming, a cost every batch)."""
        if self.remote is None or self.remote.ahead == 0:
            return False
        self.reader_state()
        return len(self._open) < len(self.info.shards) and not self.remote.all_cached()

    def reader_state(self) -> None:
        """This process's reader cache (made again after a fork or unpickling)."""
        if self._pid != current_pid():
            # before the pid: a thread that sees this process' pid finds the watch
            self._watch = ChangeWatch(ChangeWatch.ANY if self.remote is None else ChangeWatch.WRITES)
            self._verified = recorded(self.root) if self.verify else set()
            self._open: OrderedDict[int, None] = OrderedDict()  # remote shards with a reader, least recent first
            self._soon: set[int] = set()  # the shards the last prefetch named as coming next
            self._open_lock = threading.Lock()
            self._readers, self._pid = [None] * len(self.info.shards), current_pid()

    def _check_unchanged(self) -> None:
        """Once per batch: after any change to a watched file, every reader checks its files before each read."""
        if self._pid == current_pid() and not self._watch.quiet():
            for reader in self._readers:
                if reader is not None:
                    reader.check_each_take = True

    def gather(self, indices: np.ndarray, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Samples ``indices`` (any order, repeats allowed) as fresh C-contiguous arrays, in that order;
        a ragged array's samples as one :class:`~streamload.format.records.Records`."""
        indices = np.asarray(indices, dtype=np.int64)
        keys = self.keys if keys is None else keys
        if len(indices) > 1 and not (indices[1:] >= indices[:-1]).all():
            order = np.argsort(indices, kind="stable")
            in_order = self.gather(indices[order], keys)
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            return {key: array.take(back) if isinstance(array, Records) else array[back]
                    for key, array in in_order.items()}
        if len(indices) and (indices[0] < 0 or indices[-1] >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)}) in {self!r}")
        return self.take_sorted(indices, keys)

    def take_sorted(self, indices: np.ndarray, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """``gather`` for indices already sorted and in range (the sampler's): no checks, no reordering."""
        self._check_unchanged()
        if len(self._starts) == 2:  # one shard: one take per array, no bookkeeping
            reader = self.reader(0)
            return {key: reader.take(key, indices) for key in keys}
        return self._gather_runs(indices, keys)

    def _gather_runs(self, indices: np.ndarray, keys: Sequence[str]) -> dict[str, np.ndarray]:
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        offsets = indices - self._starts[shards]
        edges = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), len(indices)]
        runs = [(int(shards[first]), first, last) for first, last in zip(edges[:-1], edges[1:]) if last > first]
        out = {}
        for key in keys:
            spec = self.info.arrays[key]
            if spec.ragged:  # one cut into runs for the whole batch, one buffer (see format/ragged/reader.py)
                readers = [self.reader(shard) for shard, _, _ in runs]
                parts = [(reader.arrays[key], offsets[first:last])  # type: ignore[attr-defined]
                         for reader, (_, first, last) in zip(readers, runs)]
                check = any(reader.check_each_take for reader in readers)  # off while the watch sees no change
                out[key] = (take_records(parts, check) if parts
                            else Records(np.empty((0, *spec.row_shape), spec.dtype), [0]))
                continue
            array = out[key] = np.empty((len(indices), *spec.shape), dtype=spec.dtype)
            for shard, first, last in runs:
                self.reader(shard).take(key, offsets[first:last], out=array[first:last])
        return out

    def lengths(self, key: str, indices: np.ndarray) -> np.ndarray:
        """Row counts of the records of ragged array ``key`` at ``indices`` (any order), from the offsets alone."""
        indices = np.asarray(indices, dtype=np.int64)
        shards, offsets = self.info.locate(indices)
        out = np.empty(len(indices), np.int64)
        for shard in np.unique(shards).tolist():
            mine = shards == shard
            out[mine] = self.reader(shard).arrays[key].lengths(offsets[mine])  # type: ignore[attr-defined]
        return out

    def _hinted_reader(self, shard: int) -> ShardReader | None:
        """The reader a read hint may use: any shard's for a local dataset; for a bucket, only one already open.
        A hint never fetches: its lease would lie beyond the working set the cache was sized for, and it waited
        for room that only the gather it hints for could free."""
        if self.remote is None:
            return self.reader(shard)
        self.reader_state()
        return self._readers[shard]

    def ranges(self, indices: np.ndarray, keys: Sequence[str] | None = None) -> list[ByteRanges]:
        """Where the bytes of sorted ``indices`` lie, shard by shard (what a gather of them will read), for read
        hints: of a bucket's shards only those already open."""
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        edges = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), len(indices)]
        found = []
        for first, last in zip(edges[:-1], edges[1:]):
            if last > first:
                shard = int(shards[first])
                rows = indices[first:last] - self._starts[shard]
                reader = self._hinted_reader(shard)
                found += [reader.ranges(key, rows) for key in (self.keys if keys is None else keys)] if reader else []
        return [ranges for ranges in found if ranges is not None]

    def span_ranges(self, first: int, last: int, keys: Sequence[str] | None = None) -> list[ByteRanges]:
        """Long sequential ranges covering samples ``[first, last)`` (a block), shard by shard, for read hints: of a
        bucket's shards only those already open."""
        first, last = max(0, first), min(last, len(self))
        shard = int(np.searchsorted(self._starts, first, side="right")) - 1
        found = []
        while first < last:
            end = min(last, int(self._starts[shard + 1]))
            base = int(self._starts[shard])
            reader = self._hinted_reader(shard)
            found += [reader.span(key, first - base, end - base) for key in (keys or self.keys)] if reader else []
            first, shard = end, shard + 1
        return [ranges for ranges in found if ranges is not None]

    def advise(self, advice: int) -> None:
        """A madvise hint (e.g. MADV_RANDOM) for every shard: now for open ones, on opening for the rest.

        Kept through pickling, so worker processes read with the same hint.
        """
        self.advice = advice
        for reader in self._readers if self._pid == current_pid() else ():
            if reader is not None:
                reader.advise(advice)

    # Grain's RandomAccessDataSource protocol: records are dicts of one sample's arrays.
    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {key: array[0] for key, array in self.gather(np.array([int(index)])).items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        arrays = self.gather(np.asarray(indices, dtype=np.int64))
        return [{key: array[i] for key, array in arrays.items()} for i in range(len(indices))]

    _getitems = __getitems__  # the name Grain's batched-read protocol looks for (0.2: SupportsBatchedRead...)

    def __getstate__(self) -> dict[str, object]:
        state = {**self.__dict__, "_readers": [], "_verified": set(), "_pid": None}  # re-opened in the new process
        for name in ("_watch", "_open", "_open_lock", "_soon"):
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        return (f"ShardedDataset({str(self.directory)!r}, split={self.split_name!r}, samples={len(self)}, "
                f"format={self.manifest.format!r}, shards={len(self.info.shards)})")
