"""BatchFinisher: what the manifest says each array is, turned into what a model consumes."""

import json
from pathlib import Path

import numpy as np
import pytest

from streamload import ArraySource, BuildOptions, build_dataset
from streamload.errors import InvalidOptionError
from streamload.format.manifest import Manifest, read_manifest
from streamload.options import LoaderOptions
from streamload.read.batching import BatchFinisher, LabelOutOfRange


def dataset(tmp_path: Path, name: str = "data", roles: dict | None = None, **arrays: np.ndarray) -> Manifest:
    """Build ``arrays`` as a one-split dataset; ``roles`` (features/target/sample_weight) set on the source."""
    source = ArraySource(**arrays)
    for role, value in (roles or {}).items():
        setattr(source, role, value)  # the optional attributes documented in streamload/write/sources/base.py
    return build_dataset({"train": source}, tmp_path / name, BuildOptions(progress=False))


def finisher(manifest: Manifest, transform=None, **options: object) -> BatchFinisher:  # noqa: ANN001
    return BatchFinisher(manifest, manifest.split("train").arrays, LoaderOptions(**options), transform)


def mnist_like(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    x[0, 0, :2] = (0, 255)  # both ends of the range
    return {"x": x, "y": np.arange(n, dtype=np.uint8) % 10}


@pytest.fixture()
def mnist(tmp_path: Path) -> tuple[Manifest, dict[str, np.ndarray]]:
    arrays = mnist_like(12)
    return dataset(tmp_path, x=arrays["x"], y=arrays["y"]), arrays


def test_default_batch_is_rescaled_float32_with_channel_and_one_hot(mnist) -> None:
    manifest, raw = mnist
    x, y = finisher(manifest)(raw)
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x[..., 0], raw["x"].astype(np.float32) * np.float32(1 / 255))  # Keras' Rescaling(1/255)
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.dtype == np.float32 and np.array_equal(y, np.eye(10, dtype=np.float32)[raw["y"]])
    assert manifest.labels.num_classes == 10


def test_normalisation_of_wider_integers_uses_their_own_maximum(tmp_path) -> None:
    x = np.array([[0, 1, 1000, 65535]], dtype=np.uint16).repeat(3, axis=0)
    manifest = dataset(tmp_path, x=x, y=np.array([0, 1, 2], np.uint8))
    finished, _ = finisher(manifest)({"x": x, "y": np.array([0, 1, 2], np.uint8)})
    assert np.array_equal(finished, x.astype(np.float32) * np.float32(1 / 65535))  # 1-D samples: no channel axis
    assert finished.shape == (3, 4)


def test_raw_options_keep_stored_values_and_sparse_labels(mnist) -> None:
    manifest, raw = mnist
    x, y = finisher(manifest, normalize=False, channel_axis=False, one_hot=False)(raw)
    assert x.dtype == np.uint8 and np.array_equal(x, raw["x"])
    assert y.dtype == np.int32 and np.array_equal(y, raw["y"])


def test_float_features_and_float_targets_pass_through(tmp_path) -> None:
    rng = np.random.default_rng(1)
    arrays = {"x": rng.standard_normal((5, 3, 4, 2)).astype(np.float32), "y": rng.standard_normal(5)}
    manifest = dataset(tmp_path, **arrays)
    assert manifest.labels is None  # a regression target: no label facts
    x, y = finisher(manifest)(arrays)  # normalize and one_hot are on, but do not apply
    assert x.dtype == np.float32 and np.array_equal(x, arrays["x"])  # 3-D samples: no channel axis either
    assert y.dtype == np.float64 and np.array_equal(y, arrays["y"])


def test_num_classes_option_overrides_the_manifest(mnist) -> None:
    manifest, raw = mnist
    _, y = finisher(manifest, num_classes=12)(raw)
    assert y.shape == (12, 12) and np.array_equal(y.argmax(1), raw["y"]) and (y[:, 10:] == 0).all()


@pytest.mark.parametrize("one_hot", [True, False], ids=["one-hot", "sparse"])
@pytest.mark.parametrize("labels,position,value", [([1, 10, 2], 1, 10), ([9, 0, 200], 2, 200), ([255, 3, 1], 0, 255)])
def test_labels_outside_the_classes_raise(mnist, labels, position, value, one_hot) -> None:
    """Sparse labels (one_hot=False) pass no np.take that would fail for them: their own check must catch them."""
    manifest, raw = mnist
    finish = finisher(manifest, one_hot=one_hot)
    with pytest.raises(LabelOutOfRange) as caught:
        finish({"x": raw["x"][:3], "y": np.array(labels, np.uint8)})
    assert (caught.value.position, caught.value.value, caught.value.num_classes) == (position, value, 10)
    assert isinstance(caught.value, ValueError)
    finish({"x": raw["x"][:3], "y": np.array([9, 0, 9], np.uint8)})  # the edges of the range are fine


def test_negative_labels_of_a_signed_dtype_are_caught(tmp_path) -> None:
    """np.take would read row -1 (the last class) for a label of -1."""
    y = np.array([0, 3, 9, 1], np.int8)
    manifest = dataset(tmp_path, x=np.zeros((4, 2), np.uint8), y=y)
    finish = finisher(manifest)
    assert np.array_equal(finish({"x": np.zeros((4, 2), np.uint8), "y": y})[1].argmax(1), y)
    with pytest.raises(LabelOutOfRange) as caught:
        finish({"x": np.zeros((4, 2), np.uint8), "y": np.array([2, 5, -1, 3], np.int8)})
    assert (caught.value.position, caught.value.value) == (2, -1)


def test_integer_target_without_a_class_count_needs_num_classes(mnist) -> None:
    manifest, raw = mnist
    unlabelled = Manifest(format=manifest.format, splits=manifest.splits, labels=None)
    with pytest.raises(InvalidOptionError, match="records no class count for 'y'; pass num_classes"):
        finisher(unlabelled)
    assert finisher(unlabelled, num_classes=10)(raw)[1].shape == (12, 10)
    assert finisher(unlabelled, one_hot=False)(raw)[1].dtype == np.int32


def test_to_fit_false_gives_x_alone_reads_no_target_and_transform_sees_none(mnist) -> None:
    manifest, raw = mnist
    seen = []
    finish = finisher(manifest, lambda x, y: (seen.append(y) or x * 2, y), to_fit=False)
    assert finish.keys == ("x",)
    x = finish({"x": raw["x"]})
    assert isinstance(x, np.ndarray) and seen == [None]
    assert np.array_equal(x, raw["x"].astype(np.float32)[..., None] * np.float32(1 / 255) * 2)


def test_transform_gets_the_finished_batch(mnist) -> None:
    manifest, raw = mnist
    finish = finisher(manifest, lambda x, y: (x.sum(axis=(1, 2, 3)), y.argmax(1)))
    x, y = finish(raw)
    plain_x, _ = finisher(manifest)(raw)
    assert np.array_equal(x, plain_x.sum(axis=(1, 2, 3))) and np.array_equal(y, raw["y"])


def test_dict_features_give_a_dict_x(tmp_path) -> None:
    rng = np.random.default_rng(2)
    arrays = {"image": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
              "meta": rng.standard_normal((4, 3)).astype(np.float32), "y": np.array([0, 2, 1, 2], np.uint8)}
    manifest = dataset(tmp_path, **arrays)
    assert manifest.features == ("image", "meta") and manifest.target == "y"
    x, y = finisher(manifest)(arrays)
    assert set(x) == {"image", "meta"}
    assert np.array_equal(x["image"], arrays["image"].astype(np.float32)[..., None] * np.float32(1 / 255))
    assert np.array_equal(x["meta"], arrays["meta"])
    assert np.array_equal(y, np.eye(3, dtype=np.float32)[arrays["y"]])


def test_declared_roles_and_sample_weights(tmp_path) -> None:
    arrays = {"pixels": np.arange(12, dtype=np.uint8).reshape(3, 4), "label": np.array([1, 0, 1], np.uint8),
              "w": np.array([0.5, 1.0, 2.0], np.float32)}
    manifest = dataset(tmp_path, roles={"features": ("pixels",), "target": "label", "sample_weight": "w"}, **arrays)
    finish = finisher(manifest, normalize=False)
    assert finish.keys == ("pixels", "label", "w")
    x, y, w = finish(arrays)
    assert np.array_equal(x, arrays["pixels"]) and np.array_equal(w, arrays["w"])
    assert np.array_equal(y, np.eye(2, dtype=np.float32)[arrays["label"]])
    assert not isinstance(finisher(manifest, to_fit=False)(arrays), tuple)  # no target, no weights


def test_empty_batch_keeps_shapes_and_dtypes(mnist) -> None:
    manifest, raw = mnist
    x, y = finisher(manifest)({"x": raw["x"][:0], "y": raw["y"][:0]})
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((0, 28, 28, 1), np.float32, (0, 10), np.float32)


# --- the scale each input gets: decided at build, the same for every split --------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32])
def test_integer_images_of_any_type_holding_0_to_255_give_the_uint8_batches(tmp_path, dtype) -> None:
    raw = mnist_like(12)
    wide = {"x": raw["x"].astype(dtype), "y": raw["y"]}  # np.array(list_of_lists) is int64
    reference = finisher(dataset(tmp_path, "u8", **raw))(raw)
    got = finisher(dataset(tmp_path, "wide", **wide))(wide)
    assert np.array_equal(got[0], reference[0]) and got[0].dtype == np.float32 and np.array_equal(got[1], reference[1])
    assert got[0].max() == 1.0


def test_integers_spanning_0_to_65535_take_the_uint16_scale(tmp_path) -> None:
    x = np.array([[0, 300, 65535]], dtype=np.int32).repeat(3, axis=0)
    manifest = dataset(tmp_path, x=x, y=np.array([0, 1, 2], np.uint8))
    finished, _ = finisher(manifest)({"x": x, "y": np.zeros(3, np.uint8)})
    assert np.array_equal(finished, x.astype(np.float32) * np.float32(1 / 65535))


@pytest.mark.parametrize("values", [[-1, 0, 5], [0, 7, 70_000]], ids=["negative", "above-65535"])
def test_integers_no_scale_fits_are_refused_when_normalised_and_kept_raw_otherwise(tmp_path, values) -> None:
    x = np.array([values] * 3, dtype=np.int64)
    manifest = dataset(tmp_path, x=x, y=np.array([0, 1, 2], np.uint8))
    with pytest.raises(InvalidOptionError, match="input 'x' holds int64 .*--pixel-scale.*normalize=False"):
        finisher(manifest)
    raw, _ = finisher(manifest, normalize=False)({"x": x, "y": np.zeros(3, np.uint8)})
    assert np.array_equal(raw, x)


def test_a_declared_scale_applies_to_integer_and_float_inputs(tmp_path) -> None:
    x = np.array([[0, 2, 1000]] * 3, dtype=np.int64)
    ints = build_dataset({"train": ArraySource(x=x, y=np.zeros(3, np.uint8))}, tmp_path / "i",
                         BuildOptions(progress=False, pixel_scale=0.5))
    floats = build_dataset({"train": ArraySource(x=x.astype(np.float64), y=np.zeros(3, np.uint8))}, tmp_path / "f",
                           BuildOptions(progress=False, pixel_scale=0.5))
    assert np.array_equal(finisher(ints)({"x": x, "y": np.zeros(3, np.uint8)})[0], x * 0.5)
    halved = finisher(floats)({"x": x.astype(np.float64), "y": np.zeros(3, np.uint8)})[0]
    assert halved.dtype == np.float64 and np.array_equal(halved, x * 0.5)


def test_float_inputs_are_kept_as_they_are(tmp_path) -> None:
    x = np.array([[0.5, 300.0]] * 3, dtype=np.float32)
    manifest = dataset(tmp_path, x=x, y=np.array([0, 1, 2], np.uint8))
    finished, _ = finisher(manifest)({"x": x, "y": np.zeros(3, np.uint8)})
    assert np.array_equal(finished, x) and finished.dtype == np.float32
    assert manifest.split("train").arrays["x"].scale == 1.0


def test_a_manifest_without_scales_keeps_uint8_at_1_255_and_refuses_wider_integers(tmp_path) -> None:
    raw = mnist_like(6)
    for name, x in (("u8", raw["x"]), ("i32", raw["x"].astype(np.int32))):
        dataset(tmp_path, name, x=x, y=raw["y"])
        path = tmp_path / name / "manifest.json"
        data = json.loads(path.read_text())
        for split in data["splits"].values():
            split["arrays"]["x"].pop("scale")  # as streamload wrote it before scales were recorded
        path.write_text(json.dumps(data))
    old_u8 = read_manifest(tmp_path / "u8")
    assert np.array_equal(finisher(old_u8)(raw)[0][..., 0], raw["x"].astype(np.float32) * np.float32(1 / 255))
    with pytest.raises(InvalidOptionError, match="input 'x' holds int32"):
        finisher(read_manifest(tmp_path / "i32"))


# --- ragged inputs: padded per batch, with masks ------------------------------------------------------


def _padded_by_hand(records: list, length: int, pad_value: float, dtype) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    values = np.full((len(records), length, *records[0].shape[1:]), pad_value, dtype=dtype)
    mask = np.zeros((len(records), length), bool)
    for row, record in enumerate(records):
        kept = record[:length]
        values[row, :len(kept)], mask[row, :len(kept)] = kept, True
    return values, mask


@pytest.mark.parametrize("fmt,compression", [("npy", None), ("hdf5", None), ("hdf5", "lzf")])
@pytest.mark.parametrize("shuffle,bucket", [("exact", False), ("block", False), ("none", False), ("exact", True)])
@pytest.mark.parametrize("max_length", [None, 12])
def test_ragged_batches_equal_numpy_padding_of_the_records(tmp_path, fmt, compression, shuffle, bucket,
                                                           max_length) -> None:
    from shards import build_sequences

    from streamload.read.loader import BatchLoader

    directory, x, y = build_sequences(tmp_path, 300, fmt, 70, compression=compression, row_shape=(2,))
    loader = BatchLoader(directory, batch_size=32, shuffle=shuffle, seed=4, block_size=20, window_blocks=2,
                         bucket_by_length=bucket, max_length=max_length, pad_value=-3, one_hot=False)
    for batch in range(loader.num_batches):
        inputs, labels = loader.load(1, batch)
        indices = loader.sampler.batch_indices(1, batch)
        records = [x[int(i)] for i in indices]
        longest = max(len(r) for r in records)
        length = longest if max_length is None else min(longest, max_length)
        values, mask = _padded_by_hand(records, length, -3, np.int32)
        assert inputs["x"].dtype == np.int32 and np.array_equal(inputs["x"], values)
        assert np.array_equal(inputs["x_mask"], mask) and np.array_equal(labels, y[indices])


def test_ragged_input_without_mask_is_the_padded_array_alone(tmp_path) -> None:
    from shards import build_sequences

    from streamload.read.loader import BatchLoader

    directory, x, _ = build_sequences(tmp_path, 50, "npy")
    inputs, _ = BatchLoader(directory, batch_size=10, shuffle=False, mask=False).load(0, 0)
    assert isinstance(inputs, np.ndarray) and inputs.shape == (10, max(len(x[i]) for i in range(10)))


def test_length_parity_widens_by_one_masked_row(tmp_path) -> None:
    from shards import build_sequences

    from streamload.read.loader import BatchLoader

    directory, _, _ = build_sequences(tmp_path, 50, "npy")
    loader = BatchLoader(directory, batch_size=10, shuffle=False, pad_value=7)
    batch = loader.load(0, 0)
    length = batch[0]["x"].shape[1]
    same, other = loader.finish.with_length_parity(batch, length), loader.finish.with_length_parity(batch, length + 1)
    assert all(same[0][key] is batch[0][key] for key in batch[0]) and same[1] is batch[1]  # nothing copied
    assert other[0]["x"].shape[1] == length + 1 and (other[0]["x"][:, -1] == 7).all()
    assert not other[0]["x_mask"][:, -1].any() and np.array_equal(other[0]["x"][:, :-1], batch[0]["x"])


def test_ragged_targets_and_bad_pad_values_are_refused(tmp_path) -> None:
    from shards import build_sequences

    from streamload.read.loader import BatchLoader

    directory, _, _ = build_sequences(tmp_path, 20, "npy")
    with pytest.raises(InvalidOptionError, match="pad_value 0.5 does not fit input 'x'"):
        BatchLoader(directory, pad_value=0.5)
    from shards import build

    plain, _ = build(tmp_path, 20)
    with pytest.raises(InvalidOptionError, match="bucket_by_length needs a model input of varying length"):
        BatchLoader(plain, bucket_by_length=True)
