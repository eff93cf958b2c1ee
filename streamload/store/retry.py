"""Retries of object-store requests: exponential backoff with full jitter, within a stated budget.

Every request to a bucket that fails with a transient error (connection refused or reset, a timeout, an
HTTP 5xx or a 429 "slow down") is tried again, at most ``RETRY_ATTEMPTS`` times in all and never
starting a try later than ``RETRY_BUDGET_S`` seconds after the first. Before try ``n`` (from 1) it
sleeps a uniformly random time between 0 and ``min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**n)`` ("full
jitter": many readers that lost the same server do not come back in lockstep), cut short so the
budget is kept. With the defaults, a server that stays down is given up on after at most six tries
and about half a minute, with one line naming the bucket, the key, the tries, the seconds and the
last error: a clear error, never a hang. The client library's own retries are switched off so that
these numbers are the whole story.

Errors that retrying cannot fix (rejected credentials, a missing object, a failed precondition, a
corrupt download) are raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import StoreUnavailableError

RETRY_ATTEMPTS = 6  # tries in all, the first included
RETRY_BUDGET_S = 30.0  # no try starts later than this after the first
BACKOFF_BASE_S = 0.25  # the first sleep is at most twice this
BACKOFF_CAP_S = 8.0  # no single sleep is longer

T = TypeVar("T")


class TransientError(Exception):
    """Raised by a request function for a failure worth another try; ``reason`` is one line, no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """The sleep before try ``attempt`` (1 = the first retry): uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt))


def with_retries(call: Callable[[], T], what: str, *, attempts: int | None = None, budget_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again on TransientError within the budget (the module's constants unless given);
    then StoreUnavailableError naming ``what``, the tries, the seconds and the last error, on one line."""
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    budget_s = RETRY_BUDGET_S if budget_s is None else budget_s
    started = time.monotonic()
    last = ""
    for attempt in range(attempts):
        if attempt:
            remaining = budget_s - (time.monotonic() - started)
            if remaining <= 0:
                break
            sleep(min(backoff_s(attempt), remaining))
        try:
            return call()
        except TransientError as exc:
            last = exc.reason
    else:
        attempt = attempts
    seconds = time.monotonic() - started
    raise StoreUnavailableError(f"{what}: no answer after {attempt} tries in {seconds:.1f} s "
                                f"(retry budget: {attempts} tries, {budget_s:g} s); last error: {last}")
