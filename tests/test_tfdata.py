import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from shards import build, shard_folder

import streamload
from streamload import ArraySource, BuildOptions, InvalidOptionError, as_tf_dataset, build_dataset
from streamload.adapters.tfdata import ReadPlan, batches_per_epoch, loader_dataset, output_specs
from streamload.options import LoaderOptions
from streamload.read.loader import BatchLoader
from streamload.read.sampler import IndexSampler


def sample_ids(x: np.ndarray) -> np.ndarray:
    """The test arrays carry each sample's index in their first four pixels (raw uint8 batches)."""
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, :4]).view("<u4").ravel()


def loader_epochs(directory, epochs: range, **options) -> list:  # noqa: ANN001
    """Batches ``0..num_batches`` of each epoch in ``epochs``, read by a BatchLoader with ``options``."""
    loader = BatchLoader(directory, "train", **options)
    batches = [loader.load(epoch, batch) for epoch in epochs for batch in range(loader.num_batches)]
    loader.close()
    return batches


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for i, (ours, theirs) in enumerate(zip(got, expected)):
        ours, theirs = tf.nest.flatten(ours), tf.nest.flatten(theirs)
        assert len(ours) == len(theirs), f"batch {i} has other parts"
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f"batch {i} differs"


RAW = {"normalize": False, "channel_axis": False, "one_hot": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tfdata"), 1003, "npy", 300, test_n=50)


@pytest.mark.parametrize("fmt,compression", [("npy", None), ("hdf5", None), ("hdf5", "gzip")])
def test_epochs_equal_the_loaders_epochs(tmp_path, fmt, compression) -> None:
    directory, _ = build(tmp_path, 1003, fmt, 300, compression=compression)  # 1003 = 15 x 64 + 43
    dataset = as_tf_dataset(directory, batch_size=64, seed=7, epochs=3)
    expected = loader_epochs(directory, range(3), batch_size=64, seed=7)
    assert_same_batches(list(dataset.as_numpy_iterator()), expected)
    assert len(expected[15][0]) == 43 and not np.array_equal(expected[0][0], expected[16][0])  # epochs differ


@pytest.mark.parametrize("shuffle", [True, False, "exact", "block", "none"])
def test_shuffle_modes_and_first_epoch_match_the_loader(data, shuffle) -> None:
    directory, _ = data
    options = dict(batch_size=50, shuffle=shuffle, seed=3, block_size=100, window_blocks=2, **RAW)
    dataset = as_tf_dataset(directory, epochs=2, first_epoch=4, **options)
    assert_same_batches(list(dataset.as_numpy_iterator()), loader_epochs(directory, range(4, 6), **options))


@pytest.mark.parametrize("options", [
    {"to_fit": False}, {"one_hot": False}, {"normalize": False}, {"channel_axis": False},
    {"drop_remainder": True}, {"one_hot": True, "num_classes": 12}, {**RAW, "drop_remainder": True},
    {"prefetch_batches": 0}, {"prefetch_batches": 3, "shuffle": "block", "block_size": 64},
])
def test_batch_options_match_the_loader(data, options) -> None:
    directory, _ = data
    dataset = as_tf_dataset(directory, batch_size=64, seed=1, **options)
    expected = loader_epochs(directory, range(1), batch_size=64, seed=1, **options)
    assert_same_batches(list(dataset.as_numpy_iterator()), expected)


@pytest.mark.parametrize("read_samples", [1, 64, 150, 100_000])
@pytest.mark.parametrize("drop", [False, True])
def test_reads_of_several_batches_split_into_the_loaders_batches(data, read_samples, drop) -> None:
    directory, _ = data
    options = LoaderOptions(batch_size=50, seed=2, drop_remainder=drop, one_hot=False)
    dataset = loader_dataset(BatchLoader(directory, "train", options), epochs=3, first_epoch=1,
                             read_samples=read_samples)
    expected = loader_epochs(directory, range(1, 4), options=options)
    assert_same_batches(list(dataset.as_numpy_iterator()), expected)


@pytest.mark.parametrize("n,batch,read_samples,drop", [(1003, 50, 150, False), (1003, 50, 150, True),
                                                       (1000, 50, 150, False), (30, 50, 150, False),
                                                       (1003, 64, 100_000, False), (1003, 1, 7, False)])
def test_read_plan_covers_every_batch_once_in_order(tmp_path, n, batch, read_samples, drop) -> None:
    directory, _ = build(tmp_path, n, "npy", None)
    loader = BatchLoader(directory, "train", batch_size=batch, drop_remainder=drop)
    plan = ReadPlan.of(loader, tf.nest.flatten(output_specs(loader)), read_samples)
    for epoch in (0, 3):
        reads = [plan.batches(epoch * plan.reads_per_epoch + slot) for slot in range(plan.reads_per_epoch)]
        assert {read_epoch for read_epoch, _ in reads} == {epoch}
        assert [b for _, batches in reads for b in batches] == list(range(loader.num_batches))
        assert all(len(batches) <= plan.batches_per_read for _, batches in reads)
    assert plan.short_batches == (0 if drop or n % batch == 0 else 1)


def test_large_samples_are_read_one_batch_at_a_time(tmp_path) -> None:
    x = np.zeros((40, 512, 512), dtype=np.uint8)  # 1 MiB per finished sample: one batch of 8 is over READ_BYTES
    build_dataset({"train": ArraySource(x=x, y=np.zeros(40, np.uint8))}, tmp_path / "big",
                  BuildOptions(progress=False))
    loader = BatchLoader(tmp_path / "big", "train", batch_size=8)
    assert ReadPlan.of(loader, tf.nest.flatten(output_specs(loader))).batches_per_read == 1


def test_in_ram_reference_and_sparse_labels(data) -> None:
    directory, arrays = data
    dataset = as_tf_dataset(directory, batch_size=64, seed=2, **RAW)
    sampler = IndexSampler(1003, LoaderOptions(batch_size=64, seed=2))
    for batch, (x, y) in enumerate(dataset.as_numpy_iterator()):
        indices = sampler.batch_indices(0, batch)
        assert np.array_equal(x, arrays["x"][indices]) and np.array_equal(y, arrays["y"][indices].astype(np.int32))
        assert np.array_equal(sample_ids(x), indices)


def test_dict_features_and_sample_weights_nest_like_the_loaders_batches(tmp_path) -> None:
    rng = np.random.default_rng(3)
    n = 203
    source = ArraySource(image=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
                         meta=rng.standard_normal((n, 3)).astype(np.float32),
                         label=rng.integers(0, 4, n, dtype=np.uint8), w=rng.random(n).astype(np.float32))
    source.features, source.target, source.sample_weight = ("image", "meta"), "label", "w"
    build_dataset({"train": source}, tmp_path / "nested", BuildOptions(progress=False))
    dataset = as_tf_dataset(tmp_path / "nested", batch_size=32, seed=2, epochs=2)
    x_spec, y_spec, w_spec = dataset.element_spec
    assert set(x_spec) == {"image", "meta"} and x_spec["image"].shape.as_list() == [None, 8, 8, 1]
    assert x_spec["meta"].shape.as_list() == [None, 3] and y_spec.shape.as_list() == [None, 4]
    assert w_spec.shape.as_list() == [None] and w_spec.dtype == tf.float32
    got = list(dataset.as_numpy_iterator())
    assert_same_batches(got, loader_epochs(tmp_path / "nested", range(2), batch_size=32, seed=2))
    assert isinstance(got[0][0], dict)


def test_a_corrupt_label_surfaces_through_tf_data_naming_the_shard(tmp_path) -> None:
    directory, _ = build(tmp_path, 300, "npy", 100)
    path = shard_folder(directory) / "train-00002.y.npy"
    with open(path, "r+b") as stream:
        stream.seek(np.load(path, mmap_mode="r").offset + 5)
        stream.write(bytes([77]))
    dataset = as_tf_dataset(directory, batch_size=64)
    with pytest.raises(tf.errors.OpError, match=r"LabelRangeError.*train-00002\.y\.npy: sample 205 .*--verify"):
        list(dataset.as_numpy_iterator())


@pytest.mark.parametrize("drop", [False, True])
def test_static_shapes_and_known_cardinality(data, drop) -> None:
    directory, _ = data
    dataset = as_tf_dataset(directory, batch_size=64, drop_remainder=drop, epochs=3)
    x_spec, y_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [64 if drop else None, 28, 28, 1] and x_spec.dtype == tf.float32
    assert y_spec.shape.as_list() == [64 if drop else None, 10] and y_spec.dtype == tf.float32
    per_epoch = 15 if drop else 16
    assert int(dataset.cardinality()) == 3 * per_epoch == 3 * batches_per_epoch(directory, batch_size=64,
                                                                                 drop_remainder=drop)
    raw = as_tf_dataset(directory, batch_size=64, drop_remainder=drop, to_fit=False, **RAW)
    assert raw.element_spec.shape.as_list() == [64 if drop else None, 28, 28] and raw.element_spec.dtype == tf.uint8
    endless = as_tf_dataset(directory, batch_size=64, epochs=None)
    assert int(endless.cardinality()) == tf.data.INFINITE_CARDINALITY


def test_endless_dataset_runs_epoch_after_epoch(data) -> None:
    directory, _ = data
    endless = as_tf_dataset(directory, batch_size=100, seed=4, epochs=None, first_epoch=1, **RAW)
    got = [batch for batch, _ in zip(endless.as_numpy_iterator(), range(3 * 11))]
    assert_same_batches(got, loader_epochs(directory, range(1, 4), batch_size=100, seed=4, **RAW))


def test_each_iteration_starts_at_first_epoch(data) -> None:
    """Re-iterating gives the same epochs again: the contents depend only on the arguments."""
    directory, _ = data
    dataset = as_tf_dataset(directory, batch_size=200, seed=5, epochs=2, first_epoch=3, to_fit=False, **RAW)
    first, second = list(dataset.as_numpy_iterator()), list(dataset.as_numpy_iterator())
    assert_same_batches(first, second)


@pytest.mark.parametrize("n,pipelines,batch", [(1003, 2, 64), (1003, 3, 50), (101, 4, 7), (1003, 7, 1000)])
def test_pipelines_read_disjoint_equal_shares_through_both_paths(tmp_path, n, pipelines, batch) -> None:
    directory, _ = build(tmp_path, n, "npy", 300)
    for epoch in (0, 2):
        shares = []
        for index in range(pipelines):
            options = dict(batch_size=batch, seed=8, num_pipelines=pipelines, pipeline_index=index, **RAW)
            dataset = list(as_tf_dataset(directory, first_epoch=epoch, **options).as_numpy_iterator())
            assert_same_batches(dataset, loader_epochs(directory, range(epoch, epoch + 1), **options))
            shares.append(np.concatenate([sample_ids(x) for x, _ in dataset]))
        joined = np.concatenate(shares)
        assert {len(share) for share in shares} == {n // pipelines}  # equal shares: workers step together
        assert len(np.unique(joined)) == len(joined) == n - n % pipelines  # disjoint; only the remainder skipped
        assert set(joined.tolist()) <= set(range(n))


def test_input_context_sets_the_share_and_the_per_replica_batch(data) -> None:
    directory, _ = data
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    dataset = as_tf_dataset(directory, batch_size=128, seed=6, input_context=context, drop_remainder=True, **RAW)
    assert dataset.element_spec[0].shape[0] == context.get_per_replica_batch_size(128) == 32
    explicit = dict(batch_size=32, seed=6, num_pipelines=2, pipeline_index=1, drop_remainder=True, **RAW)
    expected = loader_epochs(directory, range(1), **explicit)
    assert_same_batches(list(dataset.as_numpy_iterator()), expected)
    assert batches_per_epoch(directory, batch_size=128, drop_remainder=True, input_context=context) == len(expected)
    assert int(dataset.cardinality()) == len(expected)


@pytest.mark.parametrize("bad", [
    {"batch_size": 102, "input_context": "4 replicas"},  # 102 is not a multiple of 4 replicas
    {"input_context": "4 replicas", "num_pipelines": 2},
    {"epochs": -1}, {"first_epoch": -2},
    {"batch_size": 2000, "drop_remainder": True},  # no batch at all
    {"shuffle": "sorted"},
])
def test_bad_options_fail_when_building(data, bad) -> None:
    directory, _ = data
    if "input_context" in bad:
        bad = {**bad, "input_context": tf.distribute.InputContext(2, 0, 4)}
    with pytest.raises(InvalidOptionError):
        as_tf_dataset(directory, **bad)


def test_on_read_sees_every_batch_read(data) -> None:
    directory, _ = data
    reads: list[tuple[int, int, np.ndarray]] = []
    dataset = as_tf_dataset(directory, batch_size=64, seed=9, epochs=2, on_read=lambda *read: reads.append(read), **RAW)
    batches = list(dataset.as_numpy_iterator())
    assert sorted((epoch, batch) for epoch, batch, _ in reads) == [(e, b) for e in range(2) for b in range(16)]
    by_batch = {(epoch, batch): indices for epoch, batch, indices in reads}
    for step, (x, _) in enumerate(batches):
        assert np.array_equal(sample_ids(x), by_batch[divmod(step, 16)])


def test_keras_fit_with_steps_per_epoch_trains_epoch_after_epoch(data) -> None:
    import keras

    directory, _ = data
    reads: list[tuple[int, int]] = []
    dataset = as_tf_dataset(directory, batch_size=128, epochs=3, on_read=lambda e, b, _: reads.append((e, b)))
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("adam", "categorical_crossentropy")
    steps = batches_per_epoch(directory, batch_size=128)
    history = model.fit(dataset, epochs=3, steps_per_epoch=steps, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3 and np.isfinite(history.history["loss"]).all()
    assert set(reads) == {(e, b) for e in range(3) for b in range(steps)}  # every batch of 3 epochs, none else


def test_exported_lazily() -> None:
    assert streamload.as_tf_dataset is as_tf_dataset
    probe = "import sys, streamload; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.parametrize("batch,consumed,drop", [(50, 12, False), (64, 20, False), (64, 5, True), (100, 33, False)])
def test_a_resumed_dataset_serves_exactly_the_rest_of_the_uninterrupted_one(data, batch, consumed, drop) -> None:
    """Stop after ``consumed`` batches (mid-epoch, across an epoch, at an epoch's end), save, resume: the resumed
    dataset's batches are the uninterrupted dataset's remaining ones, and it holds as many batches as asked."""
    directory, _ = data
    options = dict(batch_size=batch, seed=3, drop_remainder=drop, **RAW)
    whole = list(as_tf_dataset(directory, epochs=3, **options).as_numpy_iterator())
    state = streamload.adapters.tfdata.tf_state_after(directory, batches=consumed, **options)
    resumed = as_tf_dataset(directory, epochs=3, state=state, **options)
    assert int(resumed.cardinality()) == len(whole)
    got = list(resumed.as_numpy_iterator())
    assert len(got) == len(whole)
    assert_same_batches(got[:len(whole) - consumed], whole[consumed:])
    assert_same_batches(got[len(whole) - consumed:],  # then the stream goes on past epoch 2
                        loader_epochs(directory, range(3, 6), **options)[:consumed])


def test_a_loader_loops_state_resumes_the_dataset(data) -> None:
    """A state from a BatchLoader ``for`` loop stopped after 7 batches resumes tf.data at batch 7."""
    directory, _ = data
    loader = BatchLoader(directory, batch_size=64, seed=3, **RAW)
    for number, _ in enumerate(loader):
        if number == 6:
            break
    resumed = list(as_tf_dataset(directory, batch_size=64, seed=3, state=loader.state_dict(), **RAW)
                   .as_numpy_iterator())
    assert_same_batches(resumed[:9], loader_epochs(directory, range(1), batch_size=64, seed=3, **RAW)[7:])
    with pytest.raises(InvalidOptionError, match="first_epoch or state"):
        as_tf_dataset(directory, batch_size=64, seed=3, state=loader.state_dict(), first_epoch=2, **RAW)
    with pytest.raises(InvalidOptionError, match="seed"):
        as_tf_dataset(directory, batch_size=64, seed=4, state=loader.state_dict(), **RAW)
