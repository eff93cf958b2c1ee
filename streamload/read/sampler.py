"""Which samples make up batch ``i`` of epoch ``e``: a pure function of (seed, epoch, position).

The exact shuffle is a keyed bijection on ``[0, n)``: a Feistel network on the smallest power of
two that holds ``n``, with cycle walking back into range (as in format-preserving encryption and
Grain's index shuffle). It costs O(batch) time and O(1) memory per batch whatever ``n`` is, so no
permutation array of the dataset's size is ever built, and any batch can be computed out of order:
Keras' own shuffling of batch order, worker processes and resuming mid-epoch all see the same data.

Each batch's indices are sorted: a batch is a set of samples for training, and sorted indices let
the reader visit every shard once, in file order, and write rows straight into place.

Length bucketing (``bucket_by_length``, for ragged inputs padded per batch) reorders the epoch's order
window by window: the positions ``[w * W, (w + 1) * W)`` of the shuffled order (``W`` = ``BUCKET_BATCHES``
batches) are sorted by record length, cut into batches, and those batches put in a random order keyed by
(seed, epoch, w). Each window is a permutation of the same positions, so the epoch still holds every
sample exactly once; it stays a pure function of (seed, epoch), computed a window at a time from the
offsets alone, so resume, worker processes and out-of-order batches see the same batches. Only the
short last batch of an epoch stays last (the tf.data plan expects it there). A window of 64 batches
keeps batches random across the epoch while sorting enough samples that neighbours have similar lengths.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ..errors import InvalidOptionError
from ..options import LoaderOptions

FEISTEL_ROUNDS = 8  # fewer rounds measurably bias small domains (chi-squared over seeds, n = 10 and 37)
INDEX_BLOCK_POSITIONS = 65536  # indices are computed this many at a time: numpy's per-call cost dominates below
_CACHED_INDEX_BLOCKS = 4  # 4 blocks of 65536 int64 indices: 2 MB, whatever the dataset's size
PROBE_CHUNK = 1024  # probes of the order ahead computed (and cached) at a time, see IndexSampler.probes
_STREAM_EXACT, _STREAM_BLOCKS, _STREAM_WINDOW, _STREAM_BUCKETS = 0, 1, 2, 3
BUCKET_BATCHES = 64  # batches per window sorted by length (see the module docstring)
Lengths = Callable[[np.ndarray], np.ndarray]  # global sample indices -> their record lengths
_M1, _M2, _SHIFT = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(15)


@functools.lru_cache(maxsize=4096)
def round_keys(seed: int, *stream: int) -> np.ndarray:
    """Independent 32-bit round keys for one (seed, epoch, purpose...) stream (read-only, cached)."""
    keys = np.random.SeedSequence([seed, *stream]).generate_state(FEISTEL_ROUNDS, dtype=np.uint32)
    keys.flags.writeable = False
    return keys


def _encrypt(values: np.ndarray, widths: tuple[int, int], keys: np.ndarray) -> np.ndarray:
    """One pass of the unbalanced Feistel network: ``(a, b) -> (b, a ^ F(b))``, widths swapping.

    F is a multiply-xorshift-multiply hash of ``b ^ key`` in 32-bit arithmetic (SIMD in numpy,
    unlike 64-bit multiplies), of which the top bits are kept: every input bit reaches them.
    """
    width_a, width_b = widths
    a = (values >> width_b).astype(np.uint32)
    b = (values & ((1 << width_b) - 1)).astype(np.uint32)
    mixed = np.empty_like(a)
    for key in keys:
        np.bitwise_xor(b, key, out=mixed)
        mixed *= _M1
        mixed ^= mixed >> _SHIFT
        mixed *= _M2
        mixed >>= np.uint32(32 - width_a)
        mixed ^= a
        a, b, mixed = b, mixed, a
        width_a, width_b = width_b, width_a
    out = a.astype(np.int64)
    out <<= width_b
    out |= b
    return out


def feistel_permute(positions: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """Apply the keyed permutation of ``[0, n)`` to ``positions`` (vectorised), as int64.

    The network permutes ``[0, 2**bits)`` for any split of the bits, so the domain is the next
    power of two (< 2n) and cycle walking back into ``[0, n)`` needs fewer than two passes on average.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if n <= 1:
        return positions.copy()
    bits = max(2, (n - 1).bit_length())
    widths = (bits - bits // 2, bits // 2)
    out = _encrypt(positions, widths, keys)
    outside = np.flatnonzero(out >= n)
    while outside.size:  # cycle walking back into [0, n)
        out[outside] = _encrypt(out[outside], widths, keys)
        outside = outside[out[outside] >= n]
    return out


class IndexSampler:
    """Maps (epoch, batch) to global sample indices for one input pipeline.

    Pipeline ``k`` of ``K`` takes epoch positions ``k, k + K, k + 2K, ...``: pipelines are disjoint
    and each gets exactly ``n // K`` samples per epoch, so synchronous workers step together. The
    ``n % K`` positions left over at the end of the epoch's order are skipped; the order changes
    every epoch, so a different few samples are skipped each time, and none is ever duplicated.
    """

    def __init__(self, num_samples: int, options: LoaderOptions, lengths: Lengths | None = None) -> None:
        self.num_samples, self.options, self.lengths = num_samples, options, lengths
        self.batch_size = options.batch_size
        self.samples_per_pipeline = num_samples // options.num_pipelines
        rounding = math.floor if options.drop_remainder else math.ceil
        self.num_batches = rounding(self.samples_per_pipeline / options.batch_size)
        self.samples_per_epoch = min(self.samples_per_pipeline, self.num_batches * options.batch_size)
        self._block_batches = max(1, INDEX_BLOCK_POSITIONS // options.batch_size)
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()  # (epoch, offset, block)
        self._layouts: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # block mode, per epoch
        self._probes: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()  # (epoch, stride, chunk)

    def indices(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Global sample indices at pipeline-local ``positions`` of ``epoch``, in that order."""
        opts = self.options
        global_positions = np.asarray(positions, dtype=np.int64) * opts.num_pipelines + opts.pipeline_index
        if opts.shuffle == "exact":
            return feistel_permute(global_positions, self.num_samples, round_keys(opts.seed, epoch, _STREAM_EXACT))
        if opts.shuffle == "block":
            return block_order(global_positions, self.num_samples, opts, epoch, self._block_layout(epoch))
        return global_positions

    def batches_from(self, offset: int) -> int:
        """Batches of an epoch counted from sample ``offset``: a resumed epoch's rest (``num_batches`` from 0)."""
        remaining = max(0, self.samples_per_epoch - offset)
        full, rest = divmod(remaining, self.batch_size)
        return full + (1 if rest and not self.options.drop_remainder else 0)

    def batch_indices(self, epoch: int, batch: int, offset: int = 0) -> np.ndarray:
        """Sorted indices (read-only) of batch ``batch`` of ``epoch``, batches counted from sample ``offset``.

        Computed with their neighbours, ``INDEX_BLOCK_POSITIONS`` at a time, and cached. ``offset``
        is 0 except in an epoch resumed mid-way, whose batches start where the state left off.
        """
        start = offset + batch * self.batch_size
        if batch < 0 or offset < 0 or start >= self.samples_per_epoch:  # a negative offset would wrap silently
            raise IndexError(f"batch {batch} (from sample {offset}) is outside the {self.samples_per_epoch} samples "
                             f"of an epoch")
        block, row = divmod(batch, self._block_batches)
        indices = self._cache.get((epoch, offset, block))
        if indices is None:
            first = offset + block * self._block_batches * self.batch_size
            last = min(first + self._block_batches * self.batch_size, self.samples_per_epoch)
            indices = self._cache[(epoch, offset, block)] = self.window(epoch, first, last)
            self._trim(self._cache)
        return indices[row * self.batch_size:(row + 1) * self.batch_size]

    def probes(self, epoch: int, start: int, stride: int, count: int) -> np.ndarray:
        """Indices at up to ``count`` positions of ``epoch`` from ``start`` on, one every ``stride``: which samples
        (so which shards) come next. The positions lie on a grid fixed per (epoch, stride), computed
        ``PROBE_CHUNK`` at a time and cached, so asking every batch costs a slice, not a new block order.
        """
        first = -(-start // stride)  # grid points: positions first * stride, (first + 1) * stride, ...
        last = min(first + count, -(-self.samples_per_epoch // stride))
        parts = []
        for chunk in range(first // PROBE_CHUNK, (last - 1) // PROBE_CHUNK + 1 if last > first else 0):
            values, base = self._probe_chunk(epoch, stride, chunk), chunk * PROBE_CHUNK
            parts.append(values[max(first, base) - base:min(last, base + PROBE_CHUNK) - base])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _probe_chunk(self, epoch: int, stride: int, chunk: int) -> np.ndarray:
        values = self._probes.get((epoch, stride, chunk))
        if values is None:
            positions = np.arange(chunk * PROBE_CHUNK, (chunk + 1) * PROBE_CHUNK, dtype=np.int64) * stride
            values = self.indices(epoch, positions[positions < self.samples_per_epoch])
            values.flags.writeable = False
            self._probes[(epoch, stride, chunk)] = values
            self._trim(self._probes)
        return values

    def window(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Indices at positions ``[start, stop)`` of ``epoch``, sorted within each batch counted from ``start``."""
        if self.options.bucket_by_length:
            indices = self.bucketed(epoch, start, stop)
        else:
            indices = self.indices(epoch, np.arange(start, stop, dtype=np.int64))
        full = len(indices) - len(indices) % self.batch_size
        indices[:full] = np.sort(indices[:full].reshape(-1, self.batch_size), axis=1).ravel()
        indices[full:].sort()
        indices.flags.writeable = False
        return indices

    def bucketed(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """The length-bucketed order at positions ``[start, stop)`` of ``epoch``: whole windows computed, then cut."""
        if self.lengths is None:
            raise InvalidOptionError("bucket_by_length needs a model input of varying length to sort by")
        size = BUCKET_BATCHES * self.batch_size
        parts = []
        for window in range(start // size, (max(start, stop - 1)) // size + 1):
            low, high = window * size, min((window + 1) * size, self.samples_per_epoch)
            order = self._bucket_window(epoch, window, low, high)
            parts.append(order[max(start, low) - low:max(0, min(stop, high) - low)])
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _bucket_window(self, epoch: int, window: int, low: int, high: int) -> np.ndarray:
        base = self.indices(epoch, np.arange(low, high, dtype=np.int64))
        by_length = base[np.argsort(self.lengths(base), kind="stable")]  # type: ignore[misc]
        full = len(by_length) // self.batch_size
        order = feistel_permute(np.arange(full), full, round_keys(self.options.seed, epoch, _STREAM_BUCKETS, window))
        batches = by_length[:full * self.batch_size].reshape(full, self.batch_size)[order].ravel()
        return np.concatenate((batches, by_length[full * self.batch_size:]))

    def _block_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        layout = self._layouts.get(epoch)
        if layout is None:
            layout = self._layouts[epoch] = block_layout(self.num_samples, self.options, epoch)
            self._trim(self._layouts)
        return layout

    @staticmethod
    def _trim(cache: OrderedDict) -> None:
        """Forget the oldest entries; tolerant of threads trimming the same cache at once."""
        while len(cache) > _CACHED_INDEX_BLOCKS:
            try:
                cache.popitem(last=False)
            except KeyError:
                break

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_cache": OrderedDict(), "_layouts": OrderedDict(), "_probes": OrderedDict()}

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Every index of one epoch for this pipeline, in order (O(n) memory: for tests and tools)."""
        return self.indices(epoch, np.arange(self.samples_per_epoch, dtype=np.int64))


def padded_cells(sampler: IndexSampler, lengths: Lengths, epoch: int = 0) -> tuple[int, int]:
    """(rows of every batch of ``epoch`` padded to its longest record, rows really held): what padding costs.

    Read from the offsets alone, no data; ``1 - held / padded`` is the share of a model's input that is padding.
    """
    order = sampler.window(epoch, 0, sampler.samples_per_epoch)
    found = lengths(order)
    full = len(found) // sampler.batch_size * sampler.batch_size
    batches = found[:full].reshape(-1, sampler.batch_size)
    padded = int(batches.max(axis=1, initial=0).sum()) * sampler.batch_size
    if full < len(found):
        padded += int(found[full:].max()) * (len(found) - full)
    return padded, int(found.sum())


def block_layout(n: int, opts: LoaderOptions, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(block order, first position of each window) of an epoch: O(n / block_size), cached per epoch."""
    num_blocks = -(-n // opts.block_size)
    block_perm = feistel_permute(np.arange(num_blocks), num_blocks, round_keys(opts.seed, epoch, _STREAM_BLOCKS))
    block_sizes = np.minimum(opts.block_size, n - block_perm * opts.block_size)
    window_of_slot = np.arange(num_blocks) // opts.window_blocks
    window_sizes = np.bincount(window_of_slot, weights=block_sizes).astype(np.int64)
    return block_perm, np.concatenate(([0], np.cumsum(window_sizes)))


def block_order(positions: np.ndarray, n: int, opts: LoaderOptions, epoch: int,
                layout: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Block shuffle: contiguous blocks in a random order, samples random inside windows of blocks.

    A window of ``window_blocks`` blocks is read as a few long sequential runs, so a cold disk
    streams at full bandwidth; the price is that samples more than a window apart in the order
    come from different windows, so neighbouring batches are drawn from the same few blocks.
    """
    block_perm, window_starts = block_layout(n, opts, epoch) if layout is None else layout
    windows = np.searchsorted(window_starts, positions, side="right") - 1
    out = np.empty(len(positions), dtype=np.int64)
    for window in np.unique(windows):
        selected = windows == window
        slots = slice(window * opts.window_blocks, (window + 1) * opts.window_blocks)
        blocks = np.sort(block_perm[slots])
        sizes = np.minimum(opts.block_size, n - blocks * opts.block_size)
        local = positions[selected] - window_starts[window]
        shuffled = feistel_permute(local, int(sizes.sum()), round_keys(opts.seed, epoch, _STREAM_WINDOW, int(window)))
        block_starts = np.concatenate(([0], np.cumsum(sizes)))
        which = np.searchsorted(block_starts, shuffled, side="right") - 1
        out[selected] = blocks[which] * opts.block_size + (shuffled - block_starts[which])
    return out
