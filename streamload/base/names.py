"""File and manifest names as messages may print them: one line, nothing the terminal would act on.

A name comes from whoever made the dataset, and a name may hold any byte but ``/`` and NUL: a
newline would forge a second line of output (a fake ``skipped`` entry, a fake error), an escape
sequence would rewrite the terminal, a bidirectional override would show another name. Every
message that prints a name passes it through :func:`display_name`, which writes each character that
Python's ``repr`` escapes (``str.isprintable`` is false: controls, line separators, format
characters) as ``repr`` writes it, and a byte that is not valid UTF-8 (kept by ``os.fsdecode`` as a
lone surrogate) as ``\\xNN``. Printable names, the usual case, come back unchanged. Backslashes are
left as they are, so an escape in the output means the name held that character.
"""

from __future__ import annotations

import os

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def display_name(name: str | bytes | os.PathLike) -> str:
    """``name`` with every non-printable character escaped, for one-line messages."""
    text = os.fsdecode(name)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)
