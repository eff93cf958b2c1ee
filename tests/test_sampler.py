import numpy as np
import pytest

from streamload.errors import InvalidOptionError
from streamload.sampler import IndexSampler, SamplerOptions, feistel_permute, round_keys, shuffle_mode

SIZES = [1, 2, 7, 64, 1000, 4097, 65_537]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("mode", ["exact", "block", "none"])
def test_every_epoch_is_a_permutation(n: int, mode: str) -> None:
    sampler = IndexSampler(n, SamplerOptions(batch_size=10, shuffle=mode, block_size=16, window_blocks=3))
    for e in range(3):
        order = np.concatenate([sampler.batch_indices(e, b) for b in range(sampler.num_batches)])
        assert np.array_equal(np.sort(order), np.arange(n))


def test_same_seed_same_order_other_epoch_or_seed_other_order() -> None:
    a = IndexSampler(10_000, SamplerOptions(seed=3))
    b = IndexSampler(10_000, SamplerOptions(seed=3))
    c = IndexSampler(10_000, SamplerOptions(seed=4))
    assert np.array_equal(a.epoch_indices(5), b.epoch_indices(5))
    assert not np.array_equal(a.epoch_indices(5), a.epoch_indices(6))
    assert not np.array_equal(a.epoch_indices(5), c.epoch_indices(5))


def test_shuffle_none_is_file_order() -> None:
    assert np.array_equal(IndexSampler(100, SamplerOptions(shuffle="none")).epoch_indices(3), np.arange(100))


def test_batches_in_any_order_match_the_epoch_order() -> None:
    """Keras shuffles batch order and workers compute batches out of order: data must not change."""
    sampler = IndexSampler(50_000, SamplerOptions(batch_size=64))
    expected = sampler.epoch_indices(2)
    fresh = IndexSampler(50_000, SamplerOptions(batch_size=64))
    for b in np.random.default_rng(0).permutation(fresh.num_batches)[:200]:
        assert np.array_equal(fresh.batch_indices(2, int(b)), expected[b * 64:(b + 1) * 64])


def test_permutation_is_close_to_uniform() -> None:
    """Where does position 0..9 of a 10-element order land, over 20k seeds: chi-squared with 81 dof."""
    counts = np.zeros((10, 10))
    for seed in range(20_000):
        counts[np.arange(10), feistel_permute(np.arange(10), 10, round_keys(seed, 0))] += 1
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 140  # 81 +- 13 for a uniform shuffle; 4 Feistel rounds score ~700 here


def test_consecutive_positions_are_uncorrelated() -> None:
    order = IndexSampler(1_000_000, SamplerOptions()).indices(0, np.arange(100_000))
    assert abs(np.corrcoef(order[:-1], order[1:])[0, 1]) < 0.02


@pytest.mark.parametrize("n,pipelines,batch", [(100, 3, 7), (1000, 4, 64), (10, 10, 1), (65_537, 5, 100), (7, 2, 3)])
@pytest.mark.parametrize("mode", ["exact", "block"])
def test_pipelines_are_disjoint_equal_and_cover_all_but_the_remainder(n: int, pipelines: int, batch: int,
                                                                       mode: str) -> None:
    parts = [IndexSampler(n, SamplerOptions(batch_size=batch, shuffle=mode, num_pipelines=pipelines,
                                            pipeline_index=k, block_size=8, window_blocks=2)).epoch_indices(1)
             for k in range(pipelines)]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint, no duplicate inside an epoch
    assert {len(p) for p in parts} == {n // pipelines}  # equal shares: synchronous workers step together
    assert len(joined) == n - n % pipelines  # only the remainder is skipped


def test_skipped_remainder_changes_between_epochs() -> None:
    def skipped(e: int) -> set[int]:
        seen = np.concatenate([IndexSampler(103, SamplerOptions(num_pipelines=4, pipeline_index=k)).epoch_indices(e)
                               for k in range(4)])
        return set(range(103)) - set(seen.tolist())

    assert len({frozenset(skipped(e)) for e in range(5)}) > 1


@pytest.mark.parametrize("drop", [False, True])
def test_batch_count_and_sizes(drop: bool) -> None:
    sampler = IndexSampler(1000, SamplerOptions(batch_size=64, drop_remainder=drop))
    sizes = [len(sampler.batch_indices(0, b)) for b in range(sampler.num_batches)]
    assert sizes == ([64] * 15 if drop else [64] * 15 + [40])
    with pytest.raises(IndexError):
        sampler.batch_indices(0, sampler.num_batches)


def test_block_mode_keeps_blocks_together_within_windows() -> None:
    """Block order: each window of 4 blocks of 100 covers exactly 4 whole blocks."""
    sampler = IndexSampler(4000, SamplerOptions(shuffle="block", block_size=100, window_blocks=4))
    order = sampler.epoch_indices(0)
    for window in order.reshape(-1, 400):
        blocks = np.unique(window // 100)
        assert len(blocks) == 4 and np.array_equal(np.sort(window), np.concatenate([np.arange(b * 100, b * 100 + 100)
                                                                                    for b in blocks]))
    assert not np.array_equal(order[:400], np.sort(order[:400]))  # shuffled inside the window


def test_block_mode_is_deterministic_per_seed_and_epoch() -> None:
    options = SamplerOptions(shuffle="block", block_size=64, window_blocks=2)
    first, again = IndexSampler(5000, options), IndexSampler(5000, options)
    assert np.array_equal(first.epoch_indices(1), again.epoch_indices(1))
    assert not np.array_equal(first.epoch_indices(1), again.epoch_indices(2))


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(shuffle="random"), dict(block_size=-1),
                                 dict(num_pipelines=2, pipeline_index=2), dict(window_blocks=0)])
def test_bad_options_fail_at_construction(bad: dict) -> None:
    with pytest.raises(InvalidOptionError):
        SamplerOptions(**bad)


def test_shuffle_mode_accepts_booleans() -> None:
    assert (shuffle_mode(True), shuffle_mode(False), shuffle_mode("block")) == ("exact", "none", "block")


@pytest.mark.parametrize("mode", ["exact", "block"])
def test_one_sampler_shared_by_threads_gives_the_same_batches(mode: str) -> None:
    """Keras' worker threads share one generator: the sampler's caches must survive racing trims."""
    from concurrent.futures import ThreadPoolExecutor

    options = SamplerOptions(batch_size=8, shuffle=mode, block_size=64, window_blocks=2)
    expected = IndexSampler(20_000, options).epoch_indices(3)
    shared = IndexSampler(20_000, options)
    wanted = np.random.default_rng(1).permutation(shared.num_batches)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: shared.batch_indices(3, int(b)), wanted))
    for batch, indices in zip(wanted, got):
        assert np.array_equal(indices, expected[batch * 8:(batch + 1) * 8])
