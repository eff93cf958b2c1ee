"""Records (variable-length samples in memory): slicing, gathering and padding against plain Python lists."""

import numpy as np
import pytest

from streamload.format.records import Records, npy_header, offsets_problem, reserved_header_size


def _lists(seed: int = 0, n: int = 30, row_shape: tuple[int, ...] = ()) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 100, (int(k), *row_shape)).astype(np.int16) for k in rng.integers(0, 9, n)]


@pytest.mark.parametrize("row_shape", [(), (3,)])
def test_slicing_and_take_equal_list_indexing(row_shape) -> None:
    items = _lists(row_shape=row_shape)
    records = Records.from_arrays(items, np.int16, row_shape)
    assert len(records) == len(items) and records.row_shape == row_shape
    assert all(np.array_equal(records[i], items[i]) for i in range(len(items)))
    part = records[5:17]
    assert [len(r) for r in (part[i] for i in range(len(part)))] == [len(r) for r in items[5:17]]
    positions = np.array([7, 3, 3, 29, 0])
    taken = records.take(positions)
    assert taken.offsets[0] == 0 and len(taken.flat) == sum(len(items[p]) for p in positions)
    assert all(np.array_equal(taken[i], items[p]) for i, p in enumerate(positions))
    assert Records.concat([records[:10], records[10:]]) == records
    keep = np.arange(len(items)) % 3 == 0  # a boolean mask, as a validation split filters a chunk
    assert records[keep] == records.take(np.flatnonzero(keep))


@pytest.mark.parametrize("length", [0, 3, 8, 12])
def test_padded_equals_numpy_padding_and_mask(length) -> None:
    items = _lists(seed=1, row_shape=(2,))
    records = Records.from_arrays(items, np.int16, (2,))[4:20]
    values, mask = records.padded(length, pad_value=-7)
    assert values.shape == (16, length, 2) and mask.shape == (16, length) and mask.dtype == bool
    for row, item in enumerate(items[4:20]):
        kept = item[:length]
        expected = np.concatenate([kept, np.full((length - len(kept), 2), -7, np.int16)])
        assert np.array_equal(values[row], expected)
        assert mask[row].tolist() == [True] * len(kept) + [False] * (length - len(kept))


def test_npy_header_is_read_by_numpy_at_any_reserved_size(tmp_path) -> None:
    size = reserved_header_size(np.dtype("<f4"), (3,))
    assert size % 64 == 0
    data = np.arange(12, dtype="<f4").reshape(4, 3)
    path = tmp_path / "a.npy"
    path.write_bytes(npy_header(data.dtype, data.shape, size) + data.tobytes())
    assert np.array_equal(np.load(path), data)
    with pytest.raises(ValueError):
        npy_header(data.dtype, (10**30, 3), 64)


@pytest.mark.parametrize("offsets,rows,problem", [
    ([0, 2, 5], 5, None), ([0, 0, 0], 0, None), ([1, 2, 5], 5, "start at 1"), ([0, 4, 2, 5], 5, "decrease at sample 1"),
    ([0, 2, 7], 5, "past the end"), ([0, 2, 4], 5, "short of"), ([], 0, "empty")])
def test_offsets_problem_names_what_is_wrong(offsets, rows, problem) -> None:
    found = offsets_problem(np.array(offsets, np.int64), rows)
    assert found is None if problem is None else problem in found
