"""The build benchmark's Markdown report, from the figures ``build_bench`` measured.

The two baselines' names live here: they are keys of the JSON and the report divides by both.
"""

from __future__ import annotations

from typing import Any

from .common import MB, cpus_and_ram

BASELINE, BASELINE_FSYNC = "np.save", "np.save+fsync"
Result = dict[str, Any]


def _ratio_cell(ratios: Result, baseline: str) -> str:
    return f"{ratios[baseline]:.2f}x" if baseline in ratios else ""


def throughput_table(part: Result) -> list[str]:
    rounds = len(part["rounds"])
    lines = [f"### Build throughput: {part['source_bytes'] / MB:,.0f} MB ({part['samples']:,} tiled MNIST "
             f"samples), median of {rounds} interleaved rounds after {len(part['warmup_rounds'])} discarded", "",
             "| writer | MB/s | min-max | vs np.save | vs np.save+fsync |", "|---|---:|---:|---:|---:|"]
    for name, median in part["median_mb_per_s"].items():
        low, high = part["min_max_mb_per_s"][name]
        ratios = part["ratios"].get(name, {name: 1.0})
        lines.append(f"| {name} | {median:,.0f} | {low:,.0f}-{high:,.0f} | {_ratio_cell(ratios, BASELINE)} "
                     f"| {_ratio_cell(ratios, BASELINE_FSYNC)} |")
    return lines


def augment_table(part: Result) -> list[str]:
    peak = part["peak"]
    return [f"### `build_shards.py --format {part['format']} --augment-to {part['augment_to']}` (child process)", "",
            "| train samples | shard bytes | wall | samples/s | peak RssAnon | peak RssFile | VmHWM |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {part['train_samples']:,} | {part['dataset_bytes'] / MB:,.0f} MB | {part['seconds']:.0f} s "
            f"| {part['train_samples_per_s']:,.0f} | {peak['rss_anon'] / MB:,.0f} MB | {peak['rss_file'] / MB:,.0f} MB "
            f"| {peak['vm_hwm'] / MB:,.0f} MB |"]


def markdown(results: Result) -> str:
    machine = results["machine"]
    lines = [f"{cpus_and_ram(machine)}, {machine['workdir_mount']['fstype']} at {machine['workdir']}; "
             f"numpy {machine['numpy']}, h5py {machine['h5py']}; MB = 2^20 bytes", ""]
    if "throughput" in results:
        lines += throughput_table(results["throughput"]) + [""]
    if "augmented_build" in results:
        lines += augment_table(results["augmented_build"]) + [""]
    return "\n".join(lines)
