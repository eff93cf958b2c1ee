"""This process' id without a system call per use (glibc no longer caches ``getpid``).

Per-process caches (open shard readers, read-hint state, request tables) check it on every batch;
it is refreshed in the child right after every ``fork``, and a spawned process imports it afresh.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh)


def current_pid() -> int:
    return _pid
