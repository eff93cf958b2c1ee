"""Resume state: the position in samples, and every field that must match to continue the same order."""

import numpy as np
import pytest
from shards import build, raw, sample_ids

from streamload import InvalidOptionError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build(tmp_path_factory.mktemp("resume"), 1000, "npy", 300)


def test_state_is_validated_field_by_field(data, tmp_path) -> None:
    directory, _ = data
    gen = raw(directory, batch_size=64, seed=3)
    state = gen.state_dict(batches_done=5)
    assert state["sample"] == 320 and state["epoch"] == 0
    for field, value in [("seed", 4), ("shuffle", "none"), ("num_pipelines", 2), ("dataset", "0" * 64),
                         ("split", "test"), ("drop_remainder", True)]:
        with pytest.raises(InvalidOptionError, match=field):
            gen.load_state_dict({**state, field: value})
    with pytest.raises(InvalidOptionError, match="'sample'"):
        gen.load_state_dict({key: value for key, value in state.items() if key != "sample"})
    with pytest.raises(InvalidOptionError, match="outside"):
        gen.load_state_dict({**state, "sample": 5000})
    other, _ = build(tmp_path, 1000, "npy", 300, seed=1)  # same shape, other data: another fingerprint
    with pytest.raises(InvalidOptionError, match="dataset"):
        raw(other, batch_size=64, seed=3).load_state_dict(state)


def test_state_in_samples_stays_exact_when_the_batch_size_changes(data) -> None:
    directory, _ = data
    first = raw(directory, batch_size=64, seed=3)
    state = first.state_dict(batches_done=5)  # 320 samples of epoch 0 served
    served = np.concatenate([sample_ids(first[i][0]) for i in range(5)])
    resumed = raw(directory, batch_size=100, seed=3)
    resumed.load_state_dict(state)
    rest = np.concatenate([sample_ids(resumed[i][0]) for i in range(7)])  # 680 samples: 7 batches, the last short
    assert len(rest) == 680 and np.array_equal(np.sort(np.concatenate([served, rest])), np.arange(1000))
    assert len(resumed) == 10  # len() is the same in every pass


@pytest.mark.parametrize("saved, resumed, field", [
    ({"shuffle": "block", "block_size": 100}, {"shuffle": "block", "block_size": 50}, "block_size"),
    ({"shuffle": "block", "window_blocks": 4}, {"shuffle": "block", "window_blocks": 2}, "window_blocks"),
    ({"num_pipelines": 2, "pipeline_index": 0}, {"num_pipelines": 2, "pipeline_index": 1}, "pipeline_index"),
], ids=["block_size", "window_blocks", "pipeline_index"])
def test_a_state_saved_with_other_block_geometry_or_pipeline_is_refused(data, saved, resumed, field) -> None:
    """Each of these changes which samples come next; the state of one loader must not resume the other."""
    directory, _ = data
    state = raw(directory, batch_size=64, seed=3, **saved).state_dict(batches_done=2)
    other = raw(directory, batch_size=64, seed=3, **resumed)
    with pytest.raises(InvalidOptionError, match=field):
        other.load_state_dict(state)
    raw(directory, batch_size=64, seed=3, **saved).load_state_dict(state)  # the same loader resumes it


def test_a_state_holding_numpy_integers_is_taken(data) -> None:
    directory, _ = data
    gen = raw(directory, batch_size=64, seed=3)
    state = gen.state_dict(batches_done=5)
    resumed = raw(directory, batch_size=64, seed=3)
    resumed.load_state_dict({**state, "epoch": np.int64(0), "sample": np.int64(320)})
    assert np.array_equal(sample_ids(resumed[0][0]), sample_ids(gen[5][0]))
    with pytest.raises(InvalidOptionError, match="outside"):
        resumed.load_state_dict({**state, "sample": True})


def test_a_bucketed_state_continues_only_a_bucketed_loader(tmp_path) -> None:
    from shards import build_sequences

    from streamload.errors import InvalidOptionError
    from streamload.read.epochs import StreamPoint
    from streamload.read.loader import BatchLoader
    from streamload.read.resume import check_state, loader_state

    directory, _, _ = build_sequences(tmp_path, 100, "npy")
    bucketed = BatchLoader(directory, batch_size=10, bucket_by_length=True)
    state = loader_state(bucketed, StreamPoint(1, 30))
    assert check_state(BatchLoader(directory, batch_size=10, bucket_by_length=True), state) == StreamPoint(1, 30)
    with pytest.raises(InvalidOptionError, match="bucket_by_length=True, this loader has bucket_by_length=False"):
        check_state(BatchLoader(directory, batch_size=10), state)
    older = {key: value for key, value in loader_state(BatchLoader(directory, batch_size=10), StreamPoint(0, 0)).items()
             if key != "bucket_by_length"}  # a state saved before bucketing existed
    assert check_state(BatchLoader(directory, batch_size=10), older) == StreamPoint(0, 0)
