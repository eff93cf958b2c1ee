"""Retries of object-store requests: exponential backoff with full jitter, within a stated budget.

Every request to a bucket that fails with a transient error (connection refused or reset, a timeout, an
HTTP 5xx or a 429 "slow down") is tried again, at most ``RETRY_ATTEMPTS`` times in all and never
starting a try later than ``RETRY_BUDGET_S`` seconds after the first. Before try ``n`` (from 1) it
sleeps a uniformly random time between half of ``d = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**n)`` and
``d`` ("equal jitter": many readers that lost the same server do not come back in lockstep), cut
short so the budget is kept. Half of each sleep is fixed so that the outage a reader rides out has a
floor, :func:`guaranteed_wait_s`: with "full jitter" (0 to ``d``) six tries could all fall in the
first second or two, and a server back in a few seconds was given up on now and then.
With the defaults, a server back within 7.75 s is always waited for, and one that stays down is
given up on after six tries and at most 15.5 s (plus the tries' own timeouts, never past the budget),
with one line naming the bucket, the key, the tries, the seconds and the last error: a clear error,
never a hang. The client library's own retries are switched off so that these numbers are the whole
story.

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


def _backoff_bound_s(attempt: int) -> float:
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt)


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """The sleep before try ``attempt`` (1 = the first retry): uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    bound = _backoff_bound_s(attempt)
    return (rng or random).uniform(bound / 2, bound)


def guaranteed_wait_s(attempts: int | None = None) -> float:
    """How long after the first try the last one starts at the earliest: an outage shorter than this is
    always ridden out (if the budget allows), whatever the jitter draws."""
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    return sum(_backoff_bound_s(attempt) / 2 for attempt in range(1, attempts))


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
