"""Loader state for resuming: where the stream stands, and everything that must match to continue it.

A state records the position as (epoch, samples of it served), not in batches, so it stays exact
if the batch size changes. Everything else that decides the order (seed, shuffle mode, block
geometry, pipelines, remainder handling) and the dataset itself (the manifest's fingerprint) must
be the same when loading: any difference raises :class:`~streamload.errors.InvalidOptionError`
naming the field, because continuing would silently skip or repeat samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import TYPE_CHECKING, Any

from ..errors import InvalidOptionError
from .epochs import StreamPoint

if TYPE_CHECKING:  # the loader keeps its own state with these helpers: a type, never an import cycle
    from .loader import BatchLoader

STATE_FORMAT = 1
_ORDER_FIELDS = ("shuffle", "seed", "num_pipelines", "pipeline_index", "drop_remainder")
_BLOCK_FIELDS = ("block_size", "window_blocks")


def loader_state(loader: BatchLoader, point: StreamPoint) -> dict[str, Any]:
    """A JSON-ready state: the stream position plus what identifies the order and the dataset."""
    options = loader.options
    return {"format": STATE_FORMAT, "dataset": loader.dataset.manifest.fingerprint, "split": loader.dataset.split_name,
            **{name: getattr(options, name) for name in (*_ORDER_FIELDS, *_BLOCK_FIELDS)},
            "batch_size": options.batch_size, "bucket_by_length": options.bucket_by_length,
            "epoch": point.epoch, "sample": point.sample}


def check_state(loader: BatchLoader, state: Mapping[str, Any]) -> StreamPoint:
    """The position of ``state`` if it continues this loader's order on this dataset; else InvalidOptionError."""
    expected = loader_state(loader, StreamPoint(0, 0))
    fields = ("format", "dataset", "split", *_ORDER_FIELDS, *(_BLOCK_FIELDS if expected["shuffle"] == "block" else ()))
    for name in (*fields, "epoch", "sample"):
        if name not in state:
            raise InvalidOptionError(f"loader state has no {name!r}; pass a state made by state_dict()")
    for name in (*fields, "bucket_by_length"):  # a state from before bucketing existed had none
        if state.get(name, False) != expected[name]:
            raise InvalidOptionError(f"loader state was saved with {name}={state[name]!r}, this loader has "
                                     f"{name}={expected[name]!r}: the order would differ")
    epoch, sample = state["epoch"], state["sample"]
    samples = loader.sampler.samples_per_epoch
    if not _is_int(epoch) or epoch < 0 or not _is_int(sample) or not 0 <= sample <= samples:
        raise InvalidOptionError(f"loader state position epoch={epoch!r}, sample={sample!r} is outside "
                                 f"epochs >= 0 and samples [0, {samples}]")
    epoch, sample = int(epoch), int(sample)
    return StreamPoint(epoch + 1, 0) if sample == samples else StreamPoint(epoch, sample)


def _is_int(value: Any) -> bool:
    """Any integral number (a state built with numpy values too), never a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)
