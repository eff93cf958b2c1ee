"""Tests for streamload.write.sources.splits: exactly round(F * n) validation samples, fixed by the seed alone,
disjoint from training, in source order, whatever the chunking; refusals that name the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import read_split

from streamload.errors import InvalidOptionError
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import ArraySource, IterableSource, split_validation
from streamload.write.sources.splits import MASK_BLOCK, validation_count, validation_mask


def _collect(source, chunk_rows: int) -> dict[str, np.ndarray]:  # noqa: ANN001 - any SplitSource
    chunks = list(source.iter_chunks(chunk_rows))
    assert all(len(chunk["x"]) <= chunk_rows for chunk in chunks)
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in ("x", "y")}


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.2), (1000, 0.1), (3 * MASK_BLOCK + 17, 0.25), (7, 0.5)])
def test_mask_picks_exactly_round_f_n(n: int, fraction: float) -> None:
    count = validation_count(n, fraction)
    mask = validation_mask(n, count, seed=3)
    assert mask.dtype == bool and mask.shape == (n,) and mask.sum() == round(fraction * n) == count
    np.testing.assert_array_equal(mask, validation_mask(n, count, seed=3))
    assert not np.array_equal(mask, validation_mask(n, count, seed=4))


def test_mask_is_uniform_over_positions() -> None:
    """Over many seeds every position is chosen about F of the time, across block boundaries too."""
    n, count, seeds = MASK_BLOCK + 1000, (MASK_BLOCK + 1000) // 4, 200
    hits = sum(validation_mask(n, count, seed).astype(np.int32) for seed in range(seeds))
    blocks = [hits[:MASK_BLOCK].mean(), hits[MASK_BLOCK:].mean()]
    assert all(abs(mean / seeds - 0.25) < 0.01 for mean in blocks)
    assert abs(hits[:1000].mean() / seeds - 0.25) < 0.02


@pytest.mark.parametrize("chunk_rows", [1, 33, 10_000])
def test_split_sources_partition_the_rows_in_order(chunk_rows: int) -> None:
    x = np.arange(503 * 2, dtype=np.int32).reshape(503, 2)
    y = np.arange(503, dtype=np.int64)
    split = split_validation({"train": ArraySource(x=x, y=y), "test": ArraySource(x=x[:5], y=y[:5])}, 0.3, seed=9)
    assert list(split) == ["train", "validation", "test"]
    train, validation = _collect(split["train"], chunk_rows), _collect(split["validation"], chunk_rows)
    assert split["validation"].num_samples == len(validation["y"]) == round(0.3 * 503)
    assert split["train"].num_samples == len(train["y"]) == 503 - round(0.3 * 503)
    mask = validation_mask(503, round(0.3 * 503), seed=9)
    np.testing.assert_array_equal(validation["y"], y[mask])  # ascending: the source's order
    np.testing.assert_array_equal(train["y"], y[~mask])
    np.testing.assert_array_equal(validation["x"], x[mask])


def test_split_build_round_trips(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((120, 3)).astype(np.float32)
    y = np.arange(120, dtype=np.uint8)
    build_dataset(split_validation({"train": ArraySource(x=x, y=y)}, 0.25, seed=1), tmp_path / "ds",
                  BuildOptions(progress=False, shard_size=16))
    train, validation = read_split(tmp_path / "ds", "train"), read_split(tmp_path / "ds", "validation")
    assert len(validation["y"]) == 30 and sorted([*train["y"], *validation["y"]]) == list(range(120))
    np.testing.assert_array_equal(train["x"], x[train["y"]])
    np.testing.assert_array_equal(validation["x"], x[validation["y"]])


@pytest.mark.parametrize(("n", "fraction", "message"), [
    (100, 0.0, "strictly between 0 and 1"), (100, 1.0, "strictly between 0 and 1"),
    (10, 0.01, "leaves no validation sample"), (10, 0.99, "leaves no training sample"),
])
def test_fractions_that_leave_a_split_empty_are_refused(n: int, fraction: float, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        validation_count(n, fraction)


def test_refusals_name_the_problem() -> None:
    source = ArraySource(x=np.zeros((10, 1)), y=np.zeros(10))
    with pytest.raises(InvalidOptionError, match="already has a validation split"):
        split_validation({"train": source, "validation": source}, 0.2, seed=0)
    with pytest.raises(InvalidOptionError, match="needs a train split"):
        split_validation({"test": source}, 0.2, seed=0)
    one_shot = IterableSource(((np.zeros(2), 0) for _ in range(10)), num_samples=10)
    with pytest.raises(InvalidOptionError, match="one-shot iterator cannot be split"):
        split_validation({"train": one_shot}, 0.2, seed=0)
