"""The loader benchmark's Markdown report, from the figures ``loaders_bench`` measured.

The contenders' names live here: they are the rows of every table and the keys of the JSON, and the
report divides by two of them (the in-RAM bound and streamload npy) in columns of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import MB, cpus_and_ram

IN_RAM, IN_RAM_SAME = "in-RAM loop", "in-RAM, streamload's batches"
LOADER, NPY, HDF5 = "streamload loader npy", "streamload npy", "streamload hdf5"
NPY_UNHINTED = "streamload npy, hints off"
TUTORIAL, TFRECORD, TFDATA = "tutorial generator", "tf.data TFRecord", "streamload tf.data"
FIT_GENERATOR, FIT_ARRAYS = "generator", "in-RAM arrays"
Result = dict[str, Any]


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ratio_cell(medians: Mapping[str, float], name: str, baseline: str) -> str:
    return f"{medians[name] / medians[baseline]:.2f}x" if baseline in medians else ""


def _met(entry: Result) -> str:
    return "" if entry["met"] is None else ("yes" if entry["met"] else "**no**")


def goals_table(ratios: list[Result], cpu_ratios: list[Result]) -> list[str]:
    """Each goal by wall-clock figures (the goal) and by CPU-time figures (robust to a busy machine)."""
    lines = ["| ratio | wall clock | goal | met | by CPU time | met |", "|---|---:|---:|---|---:|---|"]
    for entry, cpu in zip(ratios, cpu_ratios):
        goal = "" if entry["goal"] is None else f"{'>=' if entry['goal_kind'] == 'min' else '<='} {entry['goal']:g}x"
        lines.append(f"| {entry['numerator']} / {entry['denominator']} | {entry['value']:.2f}x | {goal} "
                     f"| {_met(entry)} "
                     f"| {cpu['value']:.2f}x | {_met(cpu)} |")
    return lines


def warm_table(part: Result) -> list[str]:
    medians, spread = part["median_samples_per_s"], part["min_max_samples_per_s"]
    lines = [f"### Loaders, warm page cache: {part['samples']:,} train samples, batch {part['batch_size']}, one "
             f"epoch per loader and round, median of {len(part['rounds'])} interleaved rounds", "",
             "| loader | consumed by | samples/s | min-max | vs in-RAM bound | vs streamload npy "
             "| samples per CPU s |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, median in medians.items():
        low, high = spread[name]
        consumer = part["rounds"][0]["results"][name]["consumer"]
        lines.append(f"| {name} | {consumer} | {_rate(median)} | {_rate(low)}-{_rate(high)} "
                     f"| {_ratio_cell(medians, name, IN_RAM)} | {_ratio_cell(medians, name, NPY)} "
                     f"| {_rate(part['median_samples_per_cpu_s'][name])} |")
    return lines + [""] + goals_table(part["ratios"], part["cpu_ratios"])


def fit_table(part: Result) -> list[str]:
    medians, spread = part["median_epoch_seconds"], part["min_max_epoch_seconds"]
    calls = part["median_fit_call_seconds"]
    lines = [f"### `model.fit`, tutorial CNN: first {part['samples']:,} samples, batch {part['batch_size']} "
             f"({part['steps_per_epoch']} steps), median of {len(part['rounds'])} interleaved epochs after one "
             "warm-up epoch each", "",
             "| data | epoch s | min-max | vs in-RAM arrays | epoch CPU s | whole fit() call s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, median in medians.items():
        low, high = spread[name]
        lines.append(f"| {name} | {median:.2f} | {low:.2f}-{high:.2f} | {_ratio_cell(medians, name, FIT_ARRAYS)} "
                     f"| {part['median_epoch_cpu_seconds'][name]:.2f} | {calls[name]:.2f} |")
    return lines + [""] + goals_table(part["ratios"], part["cpu_ratios"])


def _cold_passes(part: Result) -> str:
    if part.get("full_epochs"):
        return (f"streamload's passes read whole epochs ({part['batches']:,} batches), the plain gathers "
                f"{part['exact_batches']:,} batches")
    return (f"passes of {part.get('exact_batches', part['batches']):,} batches in exact order, {part['batches']:,} in "
            "block order")


def _cold_cap(part: Result) -> str:
    group = part.get("cgroup")
    if group is None:
        return ""
    peak = "" if group["peak_bytes"] is None else f", peak use {group['peak_bytes'] / MB:,.0f} MB"
    return (f"; run in a memory cgroup (v{group['version']}) capped at {group['limit_bytes'] / MB:,.0f} MB, heap and "
            f"page cache together{peak}, below the files' {part['dataset_bytes'] / MB:,.0f} MB")


def cold_table(part: Result) -> list[str]:
    median = part["median"]
    lines = [f"### Cold page cache: batches of {part['batch_size']} from {part['samples']:,} samples "
             f"({part['dataset_bytes'] / MB:,.0f} MB), evicted before each pass; {_cold_passes(part)}; median of "
             f"{len(part['rounds'])} round(s){_cold_cap(part)}", "",
             "| reader / shuffle | samples/s | delivered MB/s | storage MB read | read bytes per delivered byte "
             "| vs sequential |", "|---|---:|---:|---:|---:|---:|"]
    for name, rate in median["samples_per_s"].items():
        lines.append(f"| {name} | {_rate(rate)} | {median['delivered_mb_per_s'][name]:,.1f} "
                     f"| {median['read_bytes'][name] / MB:,.0f} | {median['read_per_delivered'][name]:.2f} "
                     f"| {part['vs_sequential'][name]:.3f}x |")
    return lines


def markdown(results: Result) -> str:
    machine = results["machine"]
    lines = [f"{cpus_and_ram(machine)}, {machine['workdir_mount']['fstype']} on {machine['workdir_mount']['device']}; "
             f"load average {machine['loadavg_start'][0]:.1f} at start, {machine['loadavg_end'][0]:.1f} at end (a "
             "shared machine: compare ratios within this run); MB = 2^20 bytes", ""]
    from .loaders_integrity import integrity_table

    for key, table in (("warm", warm_table), ("integrity", integrity_table), ("fit", fit_table), ("cold", cold_table)):
        if key in results:
            lines += table(results[key]) + [""]
    return "\n".join(lines)
