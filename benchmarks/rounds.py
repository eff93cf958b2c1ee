"""Interleaved rounds and their summaries: how the benchmarks stay fair on a shared, drifting machine.

Every contender runs once per round, in an order that rotates from round to round, so a slow spell
of the machine hits each of them alike; medians over rounds are reported, and a ratio always divides
two medians of the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

Result = dict[str, Any]
Goal = tuple[str, str, float | None, str]  # numerator, denominator, goal, "min" (reach it) or "max" (stay under)
T = TypeVar("T")


class NullProgress:
    """Stands in for a tqdm bar when none is wanted (tests, --no-progress)."""

    def update(self, count: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...


def rotated(items: Sequence[T], number: int) -> list[T]:
    """The order of round ``number``: shifted by one per round, so that none always runs first."""
    shift = number % len(items)
    return [*items[shift:], *items[:shift]]


def run_rounds(contenders: Mapping[str, Callable[[int], Result]], rounds: int, progress: Any) -> list[Result]:
    """Every contender once per round, the order rotating so that none always runs first."""
    results = []
    for number in range(rounds):
        order = rotated(list(contenders), number)
        result: Result = {"order": order, "results": {}}
        for name in order:
            progress.set_postfix_str(name)
            result["results"][name] = contenders[name](number)
            progress.update()
        results.append(result)
    return results


def warm_up(contenders: Mapping[str, Callable[[], T]], progress: Any, label: str = "") -> dict[str, T]:
    """One untimed run of each contender (caches, tracing, maps), counted on the progress bar."""
    results = {}
    for name, run in contenders.items():
        progress.set_postfix_str(f"{label}{name} (warm-up)")
        results[name] = run()
        progress.update()
    return results


def summarize(rounds: list[Result], key: str) -> Result:
    """Median and min-max of ``key`` per contender over rounds of ``{"results": {name: figures}}``."""
    names = list(rounds[0]["results"])
    values = {name: [one["results"][name][key] for one in rounds] for name in names}
    return {"median": {name: statistics.median(v) for name, v in values.items()},
            "min_max": {name: [min(v), max(v)] for name, v in values.items()}}


def ratio_entries(medians: Mapping[str, float], goals: Iterable[Goal]) -> list[Result]:
    """Each goal's ratio of two medians of this run; goals whose loaders did not run are left out."""
    entries = []
    for numerator, denominator, goal, kind in goals:
        if numerator in medians and denominator in medians:
            value = medians[numerator] / medians[denominator]
            met = None if goal is None else (value >= goal if kind == "min" else value <= goal)
            entries.append({"numerator": numerator, "denominator": denominator, "value": value,
                            "goal": goal, "goal_kind": kind, "met": met})
    return entries


def goal_summary(rounds: list[Result], key: str, cpu_key: str, goals: Iterable[Goal],
                 also: Sequence[str] = ()) -> Result:
    """Medians and spread of ``key``, medians of ``cpu_key`` (and of ``also``), each goal judged by both.

    The wall-clock ratio is the goal; the CPU-time one does not move when other processes take the
    cores, so the two together tell a slow loader from a busy machine.
    """
    wall, cpu, goals = summarize(rounds, key), summarize(rounds, cpu_key), list(goals)
    return {f"median_{key}": wall["median"], f"min_max_{key}": wall["min_max"], f"median_{cpu_key}": cpu["median"],
            **{f"median_{name}": summarize(rounds, name)["median"] for name in also},
            "ratios": ratio_entries(wall["median"], goals), "cpu_ratios": ratio_entries(cpu["median"], goals)}
