"""Tests for streamload.base.names: names from a dataset printed on one line, with nothing a terminal acts on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamload.base.names import display_name


@pytest.mark.parametrize(("name", "shown"), [
    ("photos/cat 1.png", "photos/cat 1.png"),  # printable names come back unchanged
    ("päth/日本/ü.jpg", "päth/日本/ü.jpg"),
    ("a\\b", "a\\b"),  # backslashes kept: an escape in the output always means the character was there
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x1b[2Jx\x00\x7f\x85", "\\x1b[2Jx\\x00\\x7f\\x85"),
    ("evil\u202egnp.exe\u2028", "evil\\u202egnp.exe\\u2028"),  # bidi override, line separator
    (Path("dir") / "x\n.png", "dir/x\\n.png"),
    (b"/tmp/\xff\x07.png", "/tmp/\\xff\\x07.png"),  # bytes that are no UTF-8 shown as the bytes they were
    (os.fsdecode(b"bad\xfe"), "bad\\xfe"),
])
def test_display_name_escapes_what_repr_escapes(name: str | bytes | os.PathLike, shown: str) -> None:
    assert display_name(name) == shown
    assert display_name(name).isprintable()
    assert display_name(name).encode("utf-8")  # never a lone surrogate that print() cannot write
