"""Tests for streamload.read.padding, through the loader: a target of varying length is padded per batch with
0 (int32 labels), its padded steps weighted 0 (or each sample's own weight at real steps), cut to max_length
with the input; weights of varying length are refused; the parity widening keeps every padded output's rows
apart. Padded inputs are tested in test_batching.py, model.fit on each backend in test_ragged_fit.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamload import ArraySource, BuildOptions, build_dataset
from streamload.errors import InvalidOptionError
from streamload.format.records import Records
from streamload.read.loader import BatchLoader
from streamload.read.padding import widened_to_parity

N = 90


def _tagged(tmp_path: Path, fmt: str = "npy", weights: np.ndarray | None = None) -> tuple[Path, list, list]:
    """Token records and a tag per token (the same lengths), some records empty; optional per-sample weights."""
    rng = np.random.default_rng(7)
    tokens = [rng.integers(1, 500, rng.integers(0, 25)).astype(np.int32) for _ in range(N)]
    tags = [(record % 4).astype(np.uint8) for record in tokens]
    arrays = {"x": Records.from_arrays(tokens, np.int32), "y": Records.from_arrays(tags, np.uint8)}
    source = ArraySource(**arrays, **({} if weights is None else {"w": weights}))
    if weights is not None:
        source.sample_weight = "w"
    out = tmp_path / f"tagged-{fmt}-{weights is not None}"
    build_dataset({"train": source}, out, BuildOptions(format=fmt, shard_size=40, progress=False))
    return out, tokens, tags


def _by_hand(records: list, length: int) -> tuple[np.ndarray, np.ndarray]:
    values, mask = np.zeros((len(records), length), np.int32), np.zeros((len(records), length), np.float32)
    for row, record in enumerate(records):
        kept = record[:length]
        values[row, :len(kept)], mask[row, :len(kept)] = kept, 1
    return values, mask


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
@pytest.mark.parametrize(("shuffle", "bucket", "max_length"), [("exact", False, None), ("block", False, 9),
                                                              ("exact", True, None), ("none", False, 5)])
def test_ragged_targets_equal_numpy_padding_with_zero_weights_on_padding(tmp_path: Path, fmt: str, shuffle: str,
                                                                       bucket: bool, max_length: int | None) -> None:
    directory, tokens, tags = _tagged(tmp_path, fmt)
    loader = BatchLoader(directory, batch_size=16, shuffle=shuffle, seed=2, block_size=10, window_blocks=2,
                         bucket_by_length=bucket, max_length=max_length, pad_value=-1)
    for batch in range(loader.num_batches):
        x, y, weights = loader.load(1, batch)
        indices = loader.sampler.batch_indices(1, batch)
        longest = max(len(tags[i]) for i in indices)
        length = longest if max_length is None else min(longest, max_length)
        expected, mask = _by_hand([tags[i] for i in indices], length)
        assert y.dtype == np.int32 and np.array_equal(y, expected)
        assert weights.dtype == np.float32 and np.array_equal(weights, mask)
        assert np.array_equal(x["x_mask"], mask.astype(bool))  # a tag per token: the same steps are real


def test_per_sample_weights_scale_the_real_steps(tmp_path: Path) -> None:
    sample_weights = np.linspace(0.5, 2.0, N).astype(np.float32)
    directory, _, tags = _tagged(tmp_path, weights=sample_weights)
    loader = BatchLoader(directory, batch_size=16, shuffle=False)
    _, _, weights = loader.load(0, 0)
    _, mask = _by_hand(tags[:16], max(len(t) for t in tags[:16]))
    np.testing.assert_array_equal(weights, mask * sample_weights[:16, None])


def test_weights_of_varying_length_or_shape_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tokens = Records.from_arrays([rng.integers(1, 9, rng.integers(1, 5)) for _ in range(20)], np.int32)
    steps = Records.from_arrays([np.ones(len(t), np.float32) for t in tokens], np.float32)
    cases = {"ragged": (steps, "holds sample weights of varying length"),
             "pairs": (np.ones((20, 2), np.float32), r"one number per sample, not \(2,\)")}
    for name, (weights, message) in cases.items():
        source = ArraySource(x=tokens, y=tokens, w=weights)
        source.sample_weight = "w"
        build_dataset({"train": source}, tmp_path / name, BuildOptions(progress=False))
        with pytest.raises(InvalidOptionError, match=f"^array 'w'.*{message}"):
            BatchLoader(tmp_path / name)


def test_without_fitting_the_target_is_not_read(tmp_path: Path) -> None:
    directory, tokens, _ = _tagged(tmp_path)
    x = BatchLoader(directory, batch_size=8, shuffle=False, to_fit=False).load(0, 0)
    assert isinstance(x, dict) and set(x) == {"x", "x_mask"}


def test_parity_widening_keeps_each_output_to_its_own_length(tmp_path: Path) -> None:
    directory, _, _ = _tagged(tmp_path)
    loader = BatchLoader(directory, batch_size=16, shuffle=False, pad_value=-1)
    x, y, weights = loader.load(0, 0)
    length = y.shape[1]
    for parity in (length, length + 1):
        wide_x, wide_y, wide_weights = loader.finish.with_length_parity((x, y, weights), parity)
        grown = (length - parity) % 2
        assert wide_y.shape[1] == wide_weights.shape[1] == wide_x["x"].shape[1] == length + grown
        assert np.array_equal(wide_y[:, :length], y) and np.array_equal(wide_weights[:, :length], weights)
        if grown:
            assert not wide_y[:, -1].any() and not wide_weights[:, -1].any() and not wide_x["x_mask"][:, -1].any()
            assert (wide_x["x"][:, -1] == -1).all()


def test_widened_to_parity_leaves_non_batches_alone() -> None:
    assert widened_to_parity(None, 1, 0) is None
    flat = np.arange(3)
    assert widened_to_parity(flat, 0, 0) is flat
    rows = np.ones((2, 3, 2))
    assert widened_to_parity(rows, 1, 0) is rows
    assert widened_to_parity(rows, 0, 5)[:, 3].tolist() == [[5, 5], [5, 5]]
