"""Cutting a validation split off a source, the same way for every source type.

``--validation-split F --seed S`` sends exactly ``round(F * n)`` of the ``n`` samples to
``validation``: a uniformly random subset fixed by the seed, every split keeping the source's order.
The subset is drawn block by block (how many of a block's samples are chosen is a hypergeometric
draw from what is left, which ones a uniform choice inside the block), so no permutation of ``n``
indices is ever held: memory is O(block) whatever ``n``, and a sample's split depends only on
``(n, F, seed)``, not on how the source happens to be chunked. Image folders split their file list
with the same draw before any image is decoded; row sources (arrays, CSV, iterables) are read once
per split and filtered on the fly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ...errors import InvalidOptionError
from .base import DEFAULT_CHUNK_ROWS, SOURCE_ROLES, Chunk, SplitSource

MASK_BLOCK = 1 << 16  # samples per block of the draw; part of the definition of a seed's split
_HYPERGEOMETRIC_LIMIT = 10**9  # numpy's bound on each of the two populations
_PASSED_THROUGH = (*SOURCE_ROLES, "class_names", "num_classes", "action")


def validation_count(num_samples: int, fraction: float) -> int:
    """``round(fraction * num_samples)``, refused when it leaves either split empty."""
    if not 0 < fraction < 1:
        raise InvalidOptionError(f"--validation-split must lie strictly between 0 and 1, got {fraction}")
    count = round(fraction * num_samples)
    if count == 0 or count == num_samples:
        empty = "validation" if count == 0 else "training"
        raise InvalidOptionError(f"--validation-split {fraction} of {num_samples} samples leaves no {empty} sample")
    if max(count, num_samples - count) >= _HYPERGEOMETRIC_LIMIT:
        raise InvalidOptionError(f"--validation-split supports splits of fewer than {_HYPERGEOMETRIC_LIMIT} samples")
    return count


def validation_mask_blocks(num_samples: int, count: int, seed: int) -> Iterator[np.ndarray]:
    """Consecutive boolean blocks over the samples, True for the ``count`` that go to validation."""
    rng = np.random.default_rng(seed)
    chosen_left, others_left = count, num_samples - count
    for start in range(0, num_samples, MASK_BLOCK):
        size = min(MASK_BLOCK, num_samples - start)
        if chosen_left and others_left:
            picked = int(rng.hypergeometric(chosen_left, others_left, size))
        else:  # one population is used up: the rest of the draw is forced
            picked = size if chosen_left else 0
        block = np.zeros(size, dtype=bool)
        block[rng.choice(size, picked, replace=False)] = True
        chosen_left, others_left = chosen_left - picked, others_left - (size - picked)
        yield block


def validation_mask(num_samples: int, count: int, seed: int) -> np.ndarray:
    """The whole mask at once (one byte per sample): for file lists, which are in memory anyway."""
    blocks = list(validation_mask_blocks(num_samples, count, seed))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=bool)


class _MaskStream:
    """Hands out the mask in pieces of any length, whatever the blocks it was drawn in."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks, self._buffer = blocks, np.zeros(0, dtype=bool)

    def take(self, count: int) -> np.ndarray:
        parts = []
        while count:
            if not len(self._buffer):
                self._buffer = next(self._blocks)
            part, self._buffer = self._buffer[:count], self._buffer[count:]
            parts.append(part)
            count -= len(part)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class MaskedSource:
    """The training or the validation part of a row source, filtered chunk by chunk as it streams."""

    def __init__(self, source: SplitSource, count: int, seed: int, *, validation: bool) -> None:
        self.source, self.count, self.seed, self.validation = source, count, seed, validation
        self.num_samples = count if validation else source.num_samples - count
        self.specs = dict(source.specs)
        part = "validation" if validation else "training"
        self.description = f"{source.description} ({part} part, seed {seed})"
        for name in _PASSED_THROUGH:
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))

    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        mask = _MaskStream(validation_mask_blocks(self.source.num_samples, self.count, self.seed))
        for chunk in self.source.iter_chunks(chunk_rows):
            keep = mask.take(len(next(iter(chunk.values()))))
            if not self.validation:
                keep = ~keep
            if keep.any():
                yield {key: array[keep] for key, array in chunk.items()}


def split_validation(sources: Mapping[str, SplitSource], fraction: float, seed: int) -> dict[str, SplitSource]:
    """``sources`` with ``validation`` cut off ``train``: ``{"train", "validation", ...the others}``."""
    if "validation" in sources:
        raise InvalidOptionError("--validation-split: the source already has a validation split")
    if "train" not in sources:
        raise InvalidOptionError(f"--validation-split needs a train split to cut from; there are {sorted(sources)}")
    train = sources["train"]
    if not getattr(train, "reiterable", True):
        raise InvalidOptionError(f"{train.description}: a one-shot iterator cannot be split (it is read once per "
                                 "split); pass a list or other re-iterable, or leave num_samples unset to spill it")
    count = validation_count(train.num_samples, fraction)
    split = {"train": MaskedSource(train, count, seed, validation=False),
             "validation": MaskedSource(train, count, seed, validation=True)}
    return {**split, **{name: source for name, source in sources.items() if name != "train"}}
