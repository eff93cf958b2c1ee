"""LoaderOptions: every field validated once, at construction, with an error naming the argument."""

import dataclasses
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from streamload.errors import InvalidOptionError, StreamloadError
from streamload.options import DEFAULT_PREFETCH_BATCHES, SHUFFLE_MODES, LoaderOptions

INT_FIELDS = {"batch_size": 1, "block_size": 1, "window_blocks": 1, "num_pipelines": 1, "seed": 0,
              "prefetch_batches": 0, "num_classes": 1}  # field -> smallest value allowed
BOOL_FIELDS = ("drop_remainder", "to_fit", "one_hot", "normalize", "channel_axis")


@dataclass(frozen=True)
class InputContext:
    """The three attributes of ``tf.distribute.InputContext`` that options read (a plain data object)."""

    num_replicas_in_sync: int
    num_input_pipelines: int
    input_pipeline_id: int


def test_defaults_are_valid_and_documented_values() -> None:
    options = LoaderOptions()
    assert (options.batch_size, options.shuffle, options.seed, options.verify) == (64, "exact", 0, "off")
    assert options.prefetch_batches == DEFAULT_PREFETCH_BATCHES and options.num_classes is None
    assert isinstance(options, LoaderOptions) and issubclass(InvalidOptionError, (StreamloadError, ValueError))


@pytest.mark.parametrize("name", sorted(INT_FIELDS))
@pytest.mark.parametrize("bad", [True, False, 1.5, 2.0, "3", [4]], ids=repr)
def test_integer_fields_refuse_bools_floats_and_strings(name: str, bad: object) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^{name} must be an integer, got {_escaped(bad)}$"):
        LoaderOptions(**{name: bad})


@pytest.mark.parametrize("name", sorted(INT_FIELDS))
def test_integer_fields_refuse_values_below_their_minimum(name: str) -> None:
    smallest = INT_FIELDS[name]
    assert getattr(LoaderOptions(**{name: smallest}), name) == smallest
    with pytest.raises(InvalidOptionError, match=rf"^{name} must be at least {smallest}( and below \d+)?, "
                                                 rf"got {smallest - 1}$"):
        LoaderOptions(**{name: smallest - 1})


def test_batch_size_zero_and_seed_minus_one_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="^batch_size must be at least 1, got 0"):
        LoaderOptions(batch_size=0)
    with pytest.raises(InvalidOptionError, match="^seed must be at least 0 and below 9223372036854775808, got -1"):
        LoaderOptions(seed=-1)


def test_seed_must_fit_in_63_bits() -> None:
    assert LoaderOptions(seed=2**63 - 1).seed == 2**63 - 1
    with pytest.raises(InvalidOptionError, match="^seed must be"):
        LoaderOptions(seed=2**63)


@pytest.mark.parametrize("pipelines,index", [(1, 1), (2, 2), (4, 7), (3, -1)])
def test_pipeline_index_must_lie_below_num_pipelines(pipelines: int, index: int) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^pipeline_index must be at least 0 and below {pipelines}, "
                                                 rf"got {index}$"):
        LoaderOptions(num_pipelines=pipelines, pipeline_index=index)
    assert LoaderOptions(num_pipelines=pipelines, pipeline_index=pipelines - 1).pipeline_index == pipelines - 1


def test_pipeline_index_is_checked_after_num_pipelines() -> None:
    """A bad num_pipelines is reported as itself, not as a confusing pipeline_index error."""
    with pytest.raises(InvalidOptionError, match="^num_pipelines must be at least 1"):
        LoaderOptions(num_pipelines=0, pipeline_index=0)


@pytest.mark.parametrize("name", BOOL_FIELDS)
@pytest.mark.parametrize("bad", [1, 0, "yes", None, "True"], ids=repr)
def test_flags_must_be_true_or_false(name: str, bad: object) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^{name} must be True or False, got {_escaped(bad)}$"):
        LoaderOptions(**{name: bad})
    assert getattr(LoaderOptions(**{name: False}), name) is False


@pytest.mark.parametrize("given,mode", [(True, "exact"), (False, "none"), ("exact", "exact"), ("block", "block"),
                                        ("none", "none")])
def test_shuffle_normalises_booleans_to_mode_names(given: object, mode: str) -> None:
    options = LoaderOptions(shuffle=given)
    assert options.shuffle == mode and options == LoaderOptions(shuffle=mode)
    assert mode in SHUFFLE_MODES


@pytest.mark.parametrize("bad", ["random", "Exact", "", 1, 0, None, ["exact"]], ids=repr)
def test_unknown_shuffle_modes_are_refused(bad: object) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^shuffle must be True, False or one of .*got {_escaped(bad)}$"):
        LoaderOptions(shuffle=bad)


@pytest.mark.parametrize("mode", ["off", "once"])
def test_verify_modes(mode: str) -> None:
    assert LoaderOptions(verify=mode).verify == mode


@pytest.mark.parametrize("bad", ["always", "", True, None, "ONCE"], ids=repr)
def test_unknown_verify_modes_are_refused(bad: object) -> None:
    with pytest.raises(InvalidOptionError, match=rf"^verify must be one of .*got {_escaped(bad)}$"):
        LoaderOptions(verify=bad)


def test_options_are_frozen_and_pickle() -> None:
    options = LoaderOptions(batch_size=32, shuffle="block", seed=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(options)) == options


def test_resolve_applies_keyword_overrides_over_options_and_validates_them() -> None:
    base = LoaderOptions(batch_size=32, seed=4)
    resolved = LoaderOptions.resolve(base, shuffle=False, seed=9)
    assert (resolved.batch_size, resolved.shuffle, resolved.seed) == (32, "none", 9)
    assert base.seed == 4 and base.shuffle == "exact"  # the given options are not changed
    assert LoaderOptions.resolve() == LoaderOptions()
    assert LoaderOptions.resolve(None, batch_size=None).batch_size == 64  # adapters pass batch_size=None: the default
    with pytest.raises(InvalidOptionError, match="^batch_size must be at least 1"):
        LoaderOptions.resolve(base, batch_size=0)


def test_resolve_names_unknown_options() -> None:
    with pytest.raises(InvalidOptionError, match=r"^unknown option\(s\) batchsize, shufle; options are .*batch_size"):
        LoaderOptions.resolve(batchsize=3, shufle=True)


def test_input_context_gives_per_replica_batches_and_this_pipelines_share() -> None:
    resolved = LoaderOptions.resolve(LoaderOptions(seed=6), InputContext(4, 2, 1), batch_size=128)
    assert (resolved.batch_size, resolved.num_pipelines, resolved.pipeline_index, resolved.seed) == (32, 2, 1, 6)
    single = LoaderOptions.resolve(None, InputContext(1, 1, 0), batch_size=10)
    assert single == LoaderOptions(batch_size=10)


def test_input_context_and_explicit_pipelines_are_refused_together() -> None:
    for explicit in ({"num_pipelines": 2}, {"num_pipelines": 2, "pipeline_index": 1}):
        with pytest.raises(InvalidOptionError, match="input_context or num_pipelines/pipeline_index, not both"):
            LoaderOptions.resolve(None, InputContext(2, 2, 0), batch_size=64, **explicit)


def test_global_batch_must_be_a_multiple_of_the_replicas() -> None:
    with pytest.raises(InvalidOptionError, match="^the global batch_size 102 must be a multiple of the 4 replicas"):
        LoaderOptions.resolve(None, InputContext(4, 1, 0), batch_size=102)


def test_input_context_values_are_validated_like_any_option() -> None:
    with pytest.raises(InvalidOptionError, match="^pipeline_index must be at least 0 and below 2, got 2"):
        LoaderOptions.resolve(None, InputContext(1, 2, 2), batch_size=8)


def _escaped(value: object) -> str:
    import re

    return re.escape(repr(value))


@pytest.mark.parametrize("name", sorted(INT_FIELDS))
@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16, np.int8])
def test_integer_fields_take_any_integral_number_as_a_plain_int(name: str, kind: type) -> None:
    value = kind(INT_FIELDS[name] + 2)  # what arithmetic on numpy arrays hands back, e.g. len(x) // 10
    stored = getattr(LoaderOptions(**{name: value}), name)
    assert stored == INT_FIELDS[name] + 2 and type(stored) is int


@pytest.mark.parametrize("bad", [np.bool_(True), np.float64(2.0)], ids=repr)
def test_numpy_bools_and_floats_stay_refused(bad: object) -> None:
    with pytest.raises(InvalidOptionError, match="^batch_size must be an integer"):
        LoaderOptions(batch_size=bad)


# --- the defaults the README documents (issue 18 §5): parsed from its text, not the modules' constants --------

def readme_number(pattern: str) -> int:
    """The number ``pattern``'s group captures in README.md; a test failure when the README stops saying it."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found = re.search(pattern, text)
    assert found, f"README.md no longer documents {pattern!r}"
    return int(found.group(1).replace(",", ""))


def test_defaults_are_the_numbers_the_readme_documents() -> None:
    from streamload.format.specs import ArraySpec
    from streamload.format.writer import default_shard_size

    options = LoaderOptions()
    for name in ("batch_size", "prefetch_batches", "block_size", "window_blocks"):
        assert getattr(options, name) == readme_number(rf"`{name}=([\d,]+)`"), name
    shard_bytes = readme_number(r"shards of about ([\d,]+) MB") * 2**20
    mnist_sample = {"x": ArraySpec("|u1", (28, 28)), "y": ArraySpec("|u1", ())}  # 785 bytes
    assert shard_bytes - 785 < default_shard_size(mnist_sample) * 785 <= shard_bytes


@pytest.mark.parametrize("name,value,message", [
    ("max_length", 0, "max_length must be at least 1"), ("max_length", 2.5, "max_length must be an integer"),
    ("pad_value", "0", "pad_value must be a number"), ("pad_value", True, "pad_value must be a number"),
    ("pad_value", float("nan"), "pad_value must be a number"), ("mask", 1, "mask must be True or False"),
    ("bucket_by_length", "yes", "bucket_by_length must be True or False")])
def test_ragged_options_are_validated(name, value, message) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        LoaderOptions(**{name: value})
