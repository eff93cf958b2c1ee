import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from shards import build

from streamload import StreamingGenerator
from streamload.procstats import read_memory


def sample_ids(x: np.ndarray) -> np.ndarray:
    """The test arrays carry each sample's index in its first four pixels."""
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, :4]).view("<u4").ravel()


def raw(directory, **options) -> StreamingGenerator:
    return StreamingGenerator(directory, normalize=False, channel_axis=False, one_hot=False, **options)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build(tmp_path_factory.mktemp("gen"), 1000, "npy", 300, test_n=100)


def test_every_epoch_is_a_permutation_and_epochs_differ(data) -> None:
    directory, _ = data
    gen = raw(directory, batch_size=64, seed=5)
    orders = []
    for _ in range(3):
        ids = np.concatenate([sample_ids(gen[i][0]) for i in range(len(gen))])
        assert np.array_equal(np.sort(ids), np.arange(1000))
        orders.append(ids)
        gen.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    same_seed = raw(directory, batch_size=64, seed=5)
    assert np.array_equal(np.concatenate([sample_ids(same_seed[i][0]) for i in range(len(same_seed))]), orders[0])


@pytest.mark.parametrize("fmt,compression", [("npy", None), ("hdf5", None), ("hdf5", "gzip")])
def test_batches_equal_an_in_ram_reference(tmp_path, fmt, compression) -> None:
    directory, arrays = build(tmp_path, 1000, fmt, 300, compression=compression)
    gen = StreamingGenerator(directory, batch_size=64, seed=1)
    assert len(gen) == 16  # 15 full batches and one of 40
    reference = np.eye(10, dtype=np.float32)
    for epoch in range(2):
        for i in range(len(gen)):
            x, y = gen[i]
            ids = gen.loader.sampler.batch_indices(epoch, i)
            expected_x = arrays["x"][ids].astype(np.float32)[..., None] / np.float32(255)
            assert x.dtype == np.float32 and y.dtype == np.float32 and x.flags.c_contiguous
            assert np.array_equal(x, expected_x) and np.array_equal(y, reference[arrays["y"][ids]])
        assert len(x) == 40  # the last batch: exactly its samples, no padding, no garbage rows
        gen.on_epoch_end()


def test_to_fit_false_and_sparse_labels(data) -> None:
    directory, arrays = data
    x_only = StreamingGenerator(directory, batch_size=10, to_fit=False, shuffle=False)
    batch = x_only[0]
    assert isinstance(batch, np.ndarray) and batch.shape == (10, 28, 28, 1)
    x, y = StreamingGenerator(directory, batch_size=10, one_hot=False, shuffle=False)[0]
    assert y.dtype == np.int32 and np.array_equal(y, arrays["y"][:10])


def test_drop_remainder_and_transform(data) -> None:
    directory, _ = data
    gen = StreamingGenerator(directory, batch_size=64, drop_remainder=True, transform=lambda x, y: (1 - x, y))
    plain = StreamingGenerator(directory, batch_size=64, drop_remainder=True)
    assert len(gen) == 15 and np.array_equal(gen[3][0], 1 - plain[3][0])


def test_resume_mid_epoch_gives_the_same_remaining_batches(data) -> None:
    directory, _ = data
    first = raw(directory, batch_size=64, seed=9)
    first.on_epoch_end()  # epoch 1
    consumed = [first[i] for i in range(6)]
    state = first.state_dict()
    assert state == {"seed": 9, "epoch": 1, "position": 6}
    resumed = raw(directory, batch_size=64, seed=9)
    resumed.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert len(resumed) == len(first) - 6
    for i in range(len(resumed)):
        assert np.array_equal(resumed[i][0], first[i + 6][0])
    resumed.on_epoch_end()  # the next epoch is whole again
    assert len(resumed) == len(first) and consumed


def test_keras_fit_sees_epochs_0_1_2_despite_its_extra_on_epoch_end(data) -> None:
    directory, _ = data
    seen: list[int] = []

    class Recording(StreamingGenerator):
        def __getitem__(self, index):
            seen.append(self.epoch)
            return super().__getitem__(index)

    train = Recording(directory, batch_size=250)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("adam", "categorical_crossentropy")
    history = model.fit(train, epochs=3, verbose=0, shuffle=False,
                        validation_data=StreamingGenerator(directory, "test", batch_size=50, shuffle=False))
    assert len(history.history["loss"]) == 3 and np.isfinite(history.history["loss"]).all()
    assert sorted(set(seen)) == [0, 1, 2] and seen.count(1) == 4 and seen.count(2) == 4
    assert train.epoch == 3
    train.on_epoch_end()
    train.on_epoch_begin()  # Keras' reset pattern: an unpaired end straight before a begin is taken back
    assert train.epoch == 3


def test_keras_shuffling_batch_order_keeps_the_data(data) -> None:
    directory, _ = data
    gen = raw(directory, batch_size=100, seed=2)
    in_order = [gen[i] for i in range(len(gen))]
    for i in np.random.default_rng(0).permutation(len(gen)):
        assert np.array_equal(gen[int(i)][0], in_order[i][0])


WORKER_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import numpy as np
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    from streamload import StreamingGenerator

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[2], force=True)
        single = StreamingGenerator(sys.argv[1], batch_size=64, seed=4)
        pooled = StreamingGenerator(sys.argv[1], batch_size=64, seed=4, workers=2, use_multiprocessing=True)
        adapter = PyDatasetAdapter(pooled, shuffle=False)
        for epoch in range(2):
            adapter.on_epoch_begin()
            batches = list(adapter.get_numpy_iterator())
            adapter.on_epoch_end()
            assert len(batches) == len(single), (len(batches), len(single))
            for i, (x, y) in enumerate(batches):
                ref_x, ref_y = single[i]
                assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y), (epoch, i)
            single.on_epoch_end()
        print("same batches")
""")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_processes_give_the_same_batches(tmp_path, method) -> None:
    directory, _ = build(tmp_path, 700, "hdf5", 250)
    script = tmp_path / "workers.py"
    script.write_text(WORKER_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(directory), method], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "same batches" in result.stdout, result.stderr[-3000:]


def test_generator_pickles_small(data) -> None:
    directory, _ = data
    gen = StreamingGenerator(directory, batch_size=64)
    gen[0]
    assert len(pickle.dumps(gen)) < 10_000


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_reading_batches_does_not_load_the_shard(tmp_path, fmt) -> None:
    """Many batches of a 235 MB split: anonymous memory grows by a few batches, not by the shard."""
    rng = np.random.default_rng(0)
    from streamload import ArraySource, BuildOptions, build_dataset

    x = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(300_000, 28, 28))
    for start in range(0, 300_000, 50_000):
        x[start:start + 50_000] = rng.integers(0, 256, (50_000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 300_000, dtype=np.uint8)
    build_dataset({"train": ArraySource(x=x, y=y)}, tmp_path / "big", BuildOptions(format=fmt, progress=False))
    del x
    gen = StreamingGenerator(tmp_path / "big", batch_size=64)
    for i in range(20):
        gen[i]
    before = read_memory()
    for i in range(20, 1500):
        gen[i]
    after = read_memory()
    batch_bytes = 64 * 28 * 28 * 4
    assert after.rss_anon - before.rss_anon < 40 * batch_bytes  # 8 MB; the split is 235 MB


def test_import_streamload_does_not_import_keras() -> None:
    code = "import sys, streamload; from streamload import StreamingGenerator as _; print('ok')"
    probe = "import sys, streamload; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    assert "ok" in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
