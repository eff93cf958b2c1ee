"""IndexSampler: which samples make up batch ``b`` of epoch ``e``, as a pure function of the options."""

import math
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from streamload.options import LoaderOptions
from streamload.read.sampler import IndexSampler, block_layout, block_order, feistel_permute, round_keys

SIZES = [1, 2, 7, 64, 1000, 4097, 65_537]
MODES = ["exact", "block", "none"]


def sampler(n: int, **options: object) -> IndexSampler:
    return IndexSampler(n, LoaderOptions(**options))


def all_batches(s: IndexSampler, epoch: int, offset: int = 0) -> list[np.ndarray]:
    """Every batch of ``epoch`` counted from ``offset``, asking until the sampler says IndexError."""
    batches = []
    while True:
        try:
            batches.append(s.batch_indices(epoch, len(batches), offset))
        except IndexError:
            return batches


def batch_sorted(order: np.ndarray, batch_size: int) -> np.ndarray:
    """An epoch order with each batch's indices sorted (what the sampler hands out)."""
    return np.concatenate([np.sort(order[i:i + batch_size]) for i in range(0, len(order), batch_size)] or [order])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("mode", MODES)
def test_every_epoch_is_a_permutation(n: int, mode: str) -> None:
    s = sampler(n, batch_size=10, shuffle=mode, block_size=16, window_blocks=3)
    for epoch in range(3):
        order = np.concatenate([s.batch_indices(epoch, b) for b in range(s.num_batches)])
        assert np.array_equal(np.sort(order), np.arange(n))
        assert np.array_equal(np.sort(s.epoch_indices(epoch)), np.arange(n))


@pytest.mark.parametrize("mode", MODES)
def test_batch_indices_are_sorted_within_each_batch_and_read_only(mode: str) -> None:
    s = sampler(5000, batch_size=64, shuffle=mode, seed=2, block_size=100, window_blocks=3)
    order = s.epoch_indices(1)
    for b in range(s.num_batches):
        indices = s.batch_indices(1, b)
        assert np.all(np.diff(indices) >= 0)
        assert np.array_equal(indices, np.sort(order[b * 64:(b + 1) * 64]))  # the same samples, sorted
        assert not indices.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            indices[0] = 0


def test_same_seed_same_order_other_epoch_or_seed_other_order() -> None:
    a, b, c = sampler(10_000, seed=3), sampler(10_000, seed=3), sampler(10_000, seed=4)
    assert np.array_equal(a.epoch_indices(5), b.epoch_indices(5))
    assert not np.array_equal(a.epoch_indices(5), a.epoch_indices(6))
    assert not np.array_equal(a.epoch_indices(5), c.epoch_indices(5))


def test_shuffle_none_is_file_order() -> None:
    s = sampler(100, shuffle=False, batch_size=7)
    assert np.array_equal(s.epoch_indices(3), np.arange(100))
    assert np.array_equal(np.concatenate(all_batches(s, 3)), np.arange(100))


def test_batches_in_any_order_match_the_epoch_order() -> None:
    """Keras shuffles batch order and workers compute batches out of order: data must not change."""
    expected = sampler(50_000, batch_size=64).epoch_indices(2)
    fresh = sampler(50_000, batch_size=64)
    for b in np.random.default_rng(0).permutation(fresh.num_batches)[:200]:
        assert np.array_equal(fresh.batch_indices(2, int(b)), np.sort(expected[b * 64:(b + 1) * 64]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start,stop", [(0, 640), (5, 100), (64, 64), (900, 1000)])
def test_window_is_the_epoch_order_sorted_in_batches_counted_from_its_start(mode: str, start: int, stop: int) -> None:
    s = sampler(1000, batch_size=64, shuffle=mode, block_size=50, window_blocks=2)
    window = s.window(1, start, stop)
    assert np.array_equal(window, batch_sorted(s.epoch_indices(1)[start:stop], 64))
    assert not window.flags.writeable


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n,batch,drop,pipelines", [(1000, 64, False, 1), (1000, 64, True, 1), (1003, 50, False, 3),
                                                    (9000, 1, False, 1), (5000, 64, False, 1)])
def test_a_resumed_epoch_covers_exactly_the_positions_from_its_offset(mode: str, n: int, batch: int, drop: bool,
                                                                      pipelines: int) -> None:
    s = sampler(n, batch_size=batch, shuffle=mode, seed=5, drop_remainder=drop, num_pipelines=pipelines,
                pipeline_index=pipelines - 1, block_size=128, window_blocks=2)
    order = s.epoch_indices(4)
    assert len(order) == s.samples_per_epoch
    for offset in sorted({0, 1, batch - 1, batch, 333, s.samples_per_epoch - 1}):
        batches = all_batches(s, 4, offset)
        assert len(batches) == math.ceil((s.samples_per_epoch - offset) / batch)
        whole = sum(len(indices) == batch for indices in batches)
        assert s.batches_from(offset) == (whole if drop else len(batches))  # drop_remainder serves whole ones only
        for b, indices in enumerate(batches):  # cut into batches from the offset, each sorted
            assert np.array_equal(indices, np.sort(order[offset + b * batch:offset + (b + 1) * batch]))
        assert np.array_equal(np.sort(np.concatenate(batches)), np.sort(order[offset:]))
        with pytest.raises(IndexError):
            s.batch_indices(4, -1, offset)
    with pytest.raises(IndexError):
        s.batch_indices(4, 0, s.samples_per_epoch)
    with pytest.raises(IndexError):  # not positions before the epoch (Feistel would map them to some sample)
        s.batch_indices(4, 1, -batch)


def test_resumed_and_whole_epochs_do_not_mix_in_the_cache() -> None:
    s = sampler(10_000, batch_size=32, seed=1)
    resumed = s.batch_indices(0, 0, offset=10)
    whole = s.batch_indices(0, 0)
    order = s.epoch_indices(0)
    assert np.array_equal(resumed, np.sort(order[10:42])) and np.array_equal(whole, np.sort(order[:32]))


def test_permutation_is_close_to_uniform() -> None:
    """Where does position 0..9 of a 10-element order land, over 20k seeds: chi-squared with 81 dof."""
    counts = np.zeros((10, 10))
    for seed in range(20_000):
        counts[np.arange(10), feistel_permute(np.arange(10), 10, round_keys(seed, 0))] += 1
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 140  # 81 +- 13 for a uniform shuffle; 4 Feistel rounds score ~700 here


@pytest.mark.parametrize("n", [1, 2, 3, 5, 1000, 1025, 65_536])
def test_feistel_is_a_bijection_on_its_domain(n: int) -> None:
    image = feistel_permute(np.arange(n), n, round_keys(7, 1, 0))
    assert image.dtype == np.int64 and np.array_equal(np.sort(image), np.arange(n))


def test_consecutive_positions_are_uncorrelated() -> None:
    order = sampler(1_000_000).indices(0, np.arange(100_000))
    assert abs(np.corrcoef(order[:-1], order[1:])[0, 1]) < 0.02


@pytest.mark.parametrize("n,pipelines,batch", [(100, 3, 7), (1000, 4, 64), (10, 10, 1), (65_537, 5, 100), (7, 2, 3)])
@pytest.mark.parametrize("mode", ["exact", "block", "none"])
def test_pipelines_are_disjoint_equal_and_cover_all_but_the_remainder(n: int, pipelines: int, batch: int,
                                                                       mode: str) -> None:
    parts = []
    for k in range(pipelines):
        s = sampler(n, batch_size=batch, shuffle=mode, num_pipelines=pipelines, pipeline_index=k, block_size=8,
                    window_blocks=2)
        parts.append(np.concatenate(all_batches(s, 1)))
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint, no duplicate inside an epoch
    assert {len(p) for p in parts} == {n // pipelines}  # equal shares: synchronous workers step together
    assert len(joined) == n - n % pipelines  # only the remainder is skipped


def test_skipped_remainder_changes_between_epochs() -> None:
    def skipped(e: int) -> set[int]:
        seen = np.concatenate([sampler(103, num_pipelines=4, pipeline_index=k).epoch_indices(e) for k in range(4)])
        return set(range(103)) - set(seen.tolist())

    assert len({frozenset(skipped(e)) for e in range(5)}) > 1


@pytest.mark.parametrize("drop", [False, True])
def test_batch_count_and_sizes(drop: bool) -> None:
    s = sampler(1000, batch_size=64, drop_remainder=drop)
    sizes = [len(s.batch_indices(0, b)) for b in range(s.num_batches)]
    assert sizes == ([64] * 15 if drop else [64] * 15 + [40])
    assert s.samples_per_epoch == sum(sizes)
    for outside in (s.num_batches, -1):
        with pytest.raises(IndexError):
            s.batch_indices(0, outside)


def test_block_mode_keeps_blocks_together_within_windows() -> None:
    """Block order: each window of 4 blocks of 100 covers exactly 4 whole blocks."""
    order = sampler(4000, shuffle="block", block_size=100, window_blocks=4).epoch_indices(0)
    for window in order.reshape(-1, 400):
        blocks = np.unique(window // 100)
        assert len(blocks) == 4 and np.array_equal(np.sort(window), np.concatenate([np.arange(b * 100, b * 100 + 100)
                                                                                    for b in blocks]))
    assert not np.array_equal(order[:400], np.sort(order[:400]))  # shuffled inside the window


def test_block_layout_orders_every_block_once_and_counts_window_sizes() -> None:
    options = LoaderOptions(shuffle="block", block_size=100, window_blocks=3, seed=4)
    n = 1050  # 11 blocks, the last one of 50 samples
    block_perm, window_starts = block_layout(n, options, 2)
    assert np.array_equal(np.sort(block_perm), np.arange(11))
    sizes = np.minimum(100, n - block_perm * 100)
    assert np.array_equal(window_starts, np.concatenate(([0], np.cumsum(sizes.reshape(-1)[:9].reshape(3, 3).sum(1)),
                                                         [n])))
    positions = np.arange(n)
    assert np.array_equal(block_order(positions, n, options, 2), block_order(positions, n, options, 2,
                                                                              (block_perm, window_starts)))


def test_block_mode_is_deterministic_per_seed_and_epoch() -> None:
    first, again = (sampler(5000, shuffle="block", block_size=64, window_blocks=2) for _ in range(2))
    assert np.array_equal(first.epoch_indices(1), again.epoch_indices(1))
    assert not np.array_equal(first.epoch_indices(1), again.epoch_indices(2))


@pytest.mark.parametrize("mode", ["exact", "block"])
def test_one_sampler_shared_by_threads_gives_the_same_batches(mode: str) -> None:
    """Keras' worker threads share one generator: the sampler's caches must survive racing trims."""
    options = dict(batch_size=8, shuffle=mode, block_size=64, window_blocks=2)
    expected = sampler(20_000, **options).epoch_indices(3)
    shared = sampler(20_000, **options)
    wanted = np.random.default_rng(1).permutation(shared.num_batches)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: shared.batch_indices(3, int(b)), wanted))
    for batch, indices in zip(wanted, got):
        assert np.array_equal(indices, np.sort(expected[batch * 8:(batch + 1) * 8]))


def test_sampler_pickles_without_its_caches() -> None:
    s = sampler(1_000_000, batch_size=64, shuffle="block", block_size=512)
    expected = [s.batch_indices(1, b).copy() for b in range(0, 3000, 97)]
    blob = pickle.dumps(s)
    assert len(blob) < 2_000  # the cached index blocks (4096 positions each) stay behind
    clone = pickle.loads(blob)
    assert all(np.array_equal(clone.batch_indices(1, b), want) for b, want in zip(range(0, 3000, 97), expected))


# --- length bucketing -------------------------------------------------------------------------------


def _bucketing(n: int, seed: int = 0, **options):  # noqa: ANN001, ANN202
    from streamload.options import LoaderOptions
    from streamload.read.sampler import IndexSampler

    lengths = np.random.default_rng(99).integers(0, 500, n)
    opts = LoaderOptions(bucket_by_length=True, seed=seed, **{"batch_size": 16, **options})
    return IndexSampler(n, opts, lengths.__getitem__), lengths


@pytest.mark.parametrize("shuffle", ["exact", "block", "none"])
@pytest.mark.parametrize("n,drop", [(5000, False), (2003, False), (2003, True)])
def test_bucketed_epoch_is_a_permutation_a_pure_function_of_seed_and_epoch(shuffle, n, drop) -> None:
    sampler, _ = _bucketing(n, shuffle=shuffle, drop_remainder=drop, block_size=64, window_blocks=2)
    for epoch in (0, 1):
        order = np.concatenate([sampler.batch_indices(epoch, b) for b in range(sampler.num_batches)])
        assert len(order) == sampler.samples_per_epoch and len(np.unique(order)) == len(order)
        if not drop:
            assert np.array_equal(np.sort(order), np.arange(n))
        again, _ = _bucketing(n, shuffle=shuffle, drop_remainder=drop, block_size=64, window_blocks=2)
        assert np.array_equal(order, np.concatenate([again.batch_indices(epoch, b) for b in range(again.num_batches)]))
    other, _ = _bucketing(n, seed=1, shuffle=shuffle, drop_remainder=drop, block_size=64, window_blocks=2)
    assert not np.array_equal(sampler.batch_indices(0, 3), other.batch_indices(0, 3))


def test_bucketing_cuts_padding_and_keeps_batches_random() -> None:
    from streamload.read.sampler import padded_cells

    sampler, lengths = _bucketing(5000)
    plain, _ = _bucketing(5000)
    plain.options = plain.options.__class__(batch_size=16)  # the same order without buckets
    bucketed, held = padded_cells(sampler, lengths.__getitem__)
    unbucketed, held_too = padded_cells(plain, lengths.__getitem__)
    assert held == held_too == lengths.sum() and bucketed < 0.6 * unbucketed
    firsts = [int(lengths[sampler.batch_indices(0, b)].max()) for b in range(sampler.num_batches)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # batch order is shuffled


def test_bucketed_batches_resume_from_any_batch_boundary() -> None:
    sampler, _ = _bucketing(3000)
    full = [sampler.batch_indices(2, b) for b in range(sampler.num_batches)]
    for done in (1, 17, 64, 100):
        resumed = [sampler.batch_indices(2, b, offset=done * 16) for b in range(sampler.num_batches - done)]
        assert all(np.array_equal(a, b) for a, b in zip(resumed, full[done:]))


def test_bucketing_without_lengths_is_refused() -> None:
    from streamload.errors import InvalidOptionError
    from streamload.options import LoaderOptions
    from streamload.read.sampler import IndexSampler

    with pytest.raises(InvalidOptionError, match="bucket_by_length needs"):
        IndexSampler(100, LoaderOptions(bucket_by_length=True)).batch_indices(0, 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start,stride,count", [(0, 1, 10), (5, 1, 3000), (1000, 7, 2000), (0, 4096, 1024),
                                                (99_990, 3, 100), (100_000, 1, 5)])
def test_probes_are_the_epoch_order_on_a_fixed_grid(mode: str, start: int, stride: int, count: int) -> None:
    """The shards coming next are named from probes of the order ahead: the indices at every ``stride``-th position
    from ``start`` on (chunks of the grid cached, across chunk edges and up to the epoch's end)."""
    s = sampler(100_000, batch_size=64, shuffle=mode, block_size=512)
    order = s.epoch_indices(2)
    first = -(-start // stride) * stride
    want = order[first::stride][:count]
    assert np.array_equal(s.probes(2, start, stride, count), want)
    assert np.array_equal(s.probes(2, start, stride, count), want)  # again, from the cache
