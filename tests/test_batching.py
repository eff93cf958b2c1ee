import numpy as np
import pytest

from streamload.batching import BatchOptions, encode_labels, finish_batch, scale_to_unit
from streamload.errors import InvalidOptionError


def arrays(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "y": rng.integers(0, 10, n, dtype=np.uint8)}


def test_default_batch_is_float32_unit_range_with_channel_and_one_hot() -> None:
    raw = arrays()
    x, y = finish_batch(raw, BatchOptions())
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x[..., 0], raw["x"].astype(np.float32) / 255)
    assert y.dtype == np.float32 and np.array_equal(y.argmax(1), raw["y"]) and np.array_equal(y.sum(1), np.ones(5))


def test_raw_options_keep_stored_values() -> None:
    raw = arrays()
    x, y = finish_batch(raw, BatchOptions(normalize=False, channel_axis=False, one_hot=False))
    assert x.dtype == np.uint8 and np.array_equal(x, raw["x"]) and y.dtype == np.int32


def test_to_fit_false_returns_x_only_and_transform_sees_none() -> None:
    seen = []
    x = finish_batch(arrays(), BatchOptions(to_fit=False), lambda x, y: (seen.append(y) or x * 2, y))
    assert isinstance(x, np.ndarray) and seen == [None] and x.max() <= 2


def test_scale_handles_wider_ints_and_floats() -> None:
    assert scale_to_unit(np.array([65535], np.uint16))[0] == 1.0
    floats = np.array([0.5], np.float64)
    assert scale_to_unit(floats).dtype == np.float32


def test_label_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(InvalidOptionError, match="num_classes"):
        encode_labels(np.array([3, 12]), BatchOptions(num_classes=10))
    with pytest.raises(InvalidOptionError):
        BatchOptions(num_classes=0)
