"""Checked access to parsed JSON: every failure names the file and the field's path.

``Field(data, "DIR/manifest.json", ManifestError).get("splits").get("train")...`` walks a document;
each accessor checks the type and range it needs and raises the given error class with a message
such as ``DIR/manifest.json: splits.train.shards[3].files.x.bytes: must be an integer >= 0, got '12'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

import numpy as np

_MISSING = object()


class Field:
    """A value inside a JSON document, with the path that leads to it."""

    def __init__(self, value: Any, source: str, error: type[Exception], path: str = "") -> None:
        self.value, self.source, self._error, self.path = value, source, error, path

    def error(self, message: str) -> Exception:
        where = f"{self.path}: " if self.path else ""
        return self._error(f"{self.source}: {where}{message}")

    def _child(self, value: Any, step: str) -> Field:
        path = f"{self.path}[{step}]" if step.isdigit() else (f"{self.path}.{step}" if self.path else step)
        return Field(value, self.source, self._error, path)

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            shown = "missing" if self.value is _MISSING else f"got {self.value!r}"[:120]
            raise self.error(f"must be {what}, {shown}")

    def object(self) -> Field:
        self._expect(isinstance(self.value, dict), "a JSON object")
        return self

    def get(self, key: str) -> Field:
        """A required member of an object."""
        return self._child(self.value.get(key, _MISSING) if isinstance(self.value, dict) else _MISSING, key)

    def optional(self, key: str, default: Any) -> Field:
        return self._child(self.value.get(key, default) if isinstance(self.value, dict) else default, key)

    def keys(self) -> list[str]:
        return list(self.object().value)

    def entries(self) -> Iterator[tuple[str, Field]]:
        """The (key, member) pairs of an object."""
        return ((key, self._child(value, key)) for key, value in self.object().value.items())

    def items(self) -> Iterator[Field]:
        """The elements of a list."""
        self._expect(isinstance(self.value, list), "a JSON list")
        return (self._child(item, str(index)) for index, item in enumerate(self.value))

    def integer(self, minimum: int | None = None, maximum: int | None = None, nullable: bool = False) -> Any:
        if nullable and self.value is None:
            return None
        is_int = isinstance(self.value, int) and not isinstance(self.value, bool)
        ok = is_int and (minimum is None or self.value >= minimum) and (maximum is None or self.value <= maximum)
        bounds = "".join(f" {op} {bound}" for op, bound in ((">=", minimum), ("<=", maximum)) if bound is not None)
        self._expect(ok, f"an integer{bounds}" + (" or null" if nullable else ""))
        return self.value

    def text(self, nullable: bool = False) -> Any:
        if nullable and self.value is None:
            return None
        self._expect(isinstance(self.value, str), "a string" + (" or null" if nullable else ""))
        return self.value

    def choice(self, options: tuple[str, ...]) -> str:
        self._expect(self.value in options, f"one of {list(options)}")
        return self.value

    def file_name(self, nullable: bool = False) -> Any:
        """A plain name inside the dataset folder: no separator, not ``.`` or ``..``."""
        if nullable and self.value is None:
            return None
        name = self.value
        self._expect(isinstance(name, str) and name not in ("", ".", "..") and PurePath(name).name == name
                     and "/" not in name and "\\" not in name and "\0" not in name, "a plain file name")
        return name

    def hex_digest(self, length: int) -> str:
        value = self.value
        self._expect(isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value),
                     f"{length} lowercase hex digits")
        return value

    def dtype(self) -> str:
        """A numeric numpy dtype string (bool, integer, float, complex), as ``np.dtype(...).str`` writes it."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a deprecated alias ('a') is refused, not half-accepted
                dtype = np.dtype(self.value) if isinstance(self.value, str) else None
        except (TypeError, ValueError, SyntaxError, Warning):
            dtype = None
        self._expect(dtype is not None and dtype.kind in "biufc", "a numeric numpy dtype such as '|u1' or '<f4'")
        return self.value

    def int_list(self, minimum: int | None = None) -> list[int]:
        return [item.integer(minimum=minimum) for item in self.items()]

    def text_list(self, nonempty: bool = False) -> list[str]:
        values = [item.text() for item in self.items()]
        self._expect(bool(values) or not nonempty, "a non-empty list of strings")
        return values
