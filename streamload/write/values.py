"""What a build checks in the values it streams: finite numbers, and the scale each model input gets.

Readers multiply integer inputs by one scale so a model sees float32 in [0, 1]. The scale is decided
here, once per input for every split, from the dtype and the values found, and recorded in the
manifest, so a test split can never be normalised differently from the train split it is judged
against. uint8 and uint16 take TensorFlow's ``convert_image_dtype`` scales (1/255, 1/65535); other
integer types (``np.array`` of Python ints is int64) the scale of the range their values span
(0..255 gives 1/255, 0..65535 gives 1/65535); floats and booleans 1 (kept as they are). A range no
rule fits is recorded as no scale, which readers refuse to normalise, naming ``--pixel-scale``; a
declared ``pixel_scale`` applies to every input of every split. Splits of one input whose scales
differ (uint8 train, float32 test) are refused at build.

NaN and infinity in float arrays are refused at build with the split, sample and position, unless
``allow_nonfinite``; complex arrays are refused up front (no model layer takes them). Each chunk
costs a few vectorised reductions; the offending element is only searched for on failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from numbers import Real

import numpy as np

from ..errors import InvalidOptionError, SourceFormatError, SourceMismatchError
from ..format.records import Records
from ..format.specs import ArraySpec

NATIVE_IMAGE_SCALES = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}  # as convert_image_dtype
RANGE_SCALES = ((255, 1 / 255), (65535, 1 / 65535))  # largest value a range may reach, and its scale
PIXEL_SCALE_OPTION = "--pixel-scale (BuildOptions(pixel_scale=...))"
NONFINITE_OPTION = "--allow-nonfinite (BuildOptions(allow_nonfinite=True))"


def check_pixel_scale(scale: object) -> float | None:
    """A declared scale must be a finite positive real number (None: decide from the data)."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale) or scale <= 0:
        raise InvalidOptionError(f"pixel scale must be a positive finite number such as 1/255, got {scale!r}")
    return float(scale)


def refuse_complex(specs: Mapping[str, ArraySpec], where: str) -> None:
    for key, spec in specs.items():
        if np.dtype(spec.dtype).kind == "c":
            raise SourceFormatError(f"{where}: array {key!r} is complex ({spec.dtype}); no model layer takes complex "
                                    "numbers: store the real and imaginary parts as two float arrays")


def _position(index: tuple[int, ...], columns: tuple[str, ...] | None) -> str:
    """Where in a sample: a source's column name when it declares one (a CSV table), else the index."""
    column = index[0] if len(index) == 1 else (0 if not index else None)  # a scalar sample is its one column
    if columns is not None and column is not None and column < len(columns):
        return f", column {columns[column]!r}"
    return f", column {index[0]}" if len(index) == 1 else (f" at {index}" if index else "")


class SplitValues:
    """The checks for one split's chunks: finite floats, and the value range of integer model inputs."""

    def __init__(self, specs: Mapping[str, ArraySpec], features: Iterable[str], where: str,
                 allow_nonfinite: bool = False, column_names: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.where, self.columns = where, dict(column_names or {})
        kinds = {key: np.dtype(spec.dtype) for key, spec in specs.items()}
        self.floats = () if allow_nonfinite else tuple(key for key, dtype in kinds.items() if dtype.kind == "f")
        self.ranged = tuple(key for key in features if key in kinds and kinds[key].kind in "iu"
                            and kinds[key] not in NATIVE_IMAGE_SCALES)
        self.ranges: dict[str, tuple[int, int]] = {}
        self.samples = 0

    def check(self, chunk: Mapping[str, np.ndarray]) -> None:
        for key in self.floats:
            array = _values(chunk[key])
            if array.size and not np.isfinite(array).all():
                self._refuse_nonfinite(key, array)
        for key in self.ranged:
            array = _values(chunk[key])
            if array.size:
                low, high = int(array.min()), int(array.max())
                old = self.ranges.get(key, (low, high))
                self.ranges[key] = (min(old[0], low), max(old[1], high))
        self.samples += len(next(iter(chunk.values()))) if chunk else 0

    def _refuse_nonfinite(self, key: str, array: np.ndarray) -> None:
        flat = int(np.argmin(np.isfinite(array).reshape(-1)))
        sample, *index = np.unravel_index(flat, array.shape)
        value = array.reshape(-1)[flat]
        raise SourceFormatError(f"{self.where}: array {key!r}, sample {self.samples + int(sample)}"
                                f"{_position(tuple(int(i) for i in index), self.columns.get(key))} holds {value}; "
                                f"non-finite values are refused: fix the data or pass {NONFINITE_OPTION}")


def _values(array: np.ndarray | Records) -> np.ndarray:
    """The values to check: a ragged array's rows back to back (positions then count rows, not samples)."""
    return array.flat if isinstance(array, Records) else array


def _range_scale(value_range: tuple[int, int] | None) -> float | None:
    if value_range is None or value_range[0] < 0:
        return None
    return next((scale for top, scale in RANGE_SCALES if value_range[1] <= top), None)


def _split_scale(dtype: np.dtype, value_range: tuple[int, int] | None) -> float | None:
    if dtype.kind not in "iu":
        return 1.0  # floats and booleans are kept as they are
    return NATIVE_IMAGE_SCALES.get(dtype) or _range_scale(value_range)


def input_scales(splits: Mapping[str, tuple[Mapping[str, ArraySpec], SplitValues]], features: Iterable[str],
                 declared: float | None) -> dict[str, float | None]:
    """One scale per model input, the same for every split; splits that disagree are refused."""
    scales: dict[str, float | None] = {}
    for key in features:
        ranges = [values.ranges[key] for _, values in splits.values() if key in values.ranges]
        found = (min(low for low, _ in ranges), max(high for _, high in ranges)) if ranges else None
        per_split = {name: _split_scale(np.dtype(specs[key].dtype), found) for name, (specs, _) in splits.items()
                     if key in specs}  # a split without it is refused when the manifest is read
        if declared is None and len(set(per_split.values())) > 1:
            shown = ", ".join(f"{name} {np.dtype(splits[name][0][key].dtype)} (scale {_shown(scale)})"
                              for name, scale in per_split.items())
            raise SourceMismatchError(f"input {key!r} would be normalised differently per split: {shown}; store every "
                                      f"split in one dtype, or declare one scale with {PIXEL_SCALE_OPTION}")
        scales[key] = declared if declared is not None else next(iter(per_split.values()), None)
    return scales


def _shown(scale: float | None) -> str:
    if scale is None:
        return "none fits"
    return f"1/{round(1 / scale)}" if scale < 1 and math.isclose(1 / scale, round(1 / scale)) else f"{scale:g}"


def with_scales(specs: Mapping[str, ArraySpec], scales: Mapping[str, float | None]) -> dict[str, ArraySpec]:
    return {key: replace(spec, scale=scales[key]) if key in scales else spec for key, spec in specs.items()}
