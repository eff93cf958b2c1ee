"""The memory benchmark's verdicts, Markdown tables and plot, from the figures ``memory_bench`` measured."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import cpus_and_ram

MB, GB = 2**20, 2**30
GOAL_GROWTH = 10**8  # streamload's peak RssAnon may grow by less than 100 MB from the smallest size to the largest
GOAL_TOTAL = 10**9  # ... and stay under 1 GB
STREAMING = ("npy", "hdf5")
THROUGH = {("tutorial", "keras"): "TutorialGenerator, uint8 split in RAM",
           ("ram", "plain"): "uint8 split in RAM, same batches",
           ("npy", "plain"): "BatchLoader (no Keras)", ("npy", "keras"): "StreamingGenerator",
           ("hdf5", "plain"): "BatchLoader (no Keras)", ("hdf5", "keras"): "StreamingGenerator"}
Result = dict[str, Any]


def _by_variant(runs: Sequence[Result]) -> dict[tuple[str, str], dict[int, Result]]:
    """(loader, api) -> size -> run, completed runs only."""
    table: dict[tuple[str, str], dict[int, Result]] = {}
    for run in runs:
        if run["status"] == "ok":
            table.setdefault((run["loader"], run["api"]), {})[run["size"]] = run
    return table


def _slope(points: dict[int, Result]) -> float | None:
    """Least-squares bytes of peak RssAnon per training sample."""
    if len(points) < 2:
        return None
    sizes = list(points)
    peaks = [points[size]["peak"]["rss_anon"] for size in sizes]
    mean_size, mean_peak = sum(sizes) / len(sizes), sum(peaks) / len(peaks)
    spread = sum((size - mean_size) ** 2 for size in sizes)
    return sum((size - mean_size) * (peak - mean_peak) for size, peak in zip(sizes, peaks)) / spread


def evaluate_goals(runs: Sequence[Result]) -> Result:
    """Per variant: growth of peak RssAnon from the smallest to the largest size, its slope, the verdicts."""
    verdicts: Result = {"growth_below_bytes": GOAL_GROWTH, "total_below_bytes": GOAL_TOTAL, "variants": {}}
    for (loader, api), points in sorted(_by_variant(runs).items()):
        smallest, largest = min(points), max(points)
        entry: Result = {"sizes": sorted(points), "bytes_per_sample": _slope(points),
                         "peak_rss_anon_max": max(run["peak"]["rss_anon"] for run in points.values())}
        if len(points) > 1:
            entry["growth_bytes"] = points[largest]["peak"]["rss_anon"] - points[smallest]["peak"]["rss_anon"]
        if loader in STREAMING:
            entry["growth_goal_met"] = entry.get("growth_bytes", 0) < GOAL_GROWTH if len(points) > 1 else None
            entry["total_goal_met"] = entry["peak_rss_anon_max"] < GOAL_TOTAL
        verdicts["variants"][f"{loader}/{api}"] = entry
    streaming = [entry for name, entry in verdicts["variants"].items() if name.split("/")[0] in STREAMING]
    verdicts["streamload_flat"] = bool(streaming) and all(entry["growth_goal_met"] for entry in streaming)
    alone = [entry for name, entry in verdicts["variants"].items() if name.split("/")[0] in STREAMING
             and name.endswith("/plain")]
    verdicts["generator_alone_under_1gb"] = bool(alone) and all(entry["total_goal_met"] for entry in alone)
    return verdicts


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value / MB:,.0f} MB"


def _run_row(run: Result) -> str:
    through = THROUGH.get((run["loader"], run["api"]), run["api"])
    if run["status"] == "skipped":
        return f"| {run['size']:,} | {run['loader']} | {through} | skipped: {run['reason']} | | | | | | |"
    child, peak = run["child"], run["peak"]
    rate = child.get("samples_per_s")
    note = "" if run["status"] == "ok" else f"{run['status']}: {run['reason'][:120]}"
    return (f"| {run['size']:,} | {run['loader']} | {through} | {note or 'ok'} | {_mb(run.get('baseline_rss_anon'))} "
            f"| {_mb(peak['rss_anon'])} | {_mb(run.get('increment_rss_anon'))} | {_mb(peak['rss_file'])} "
            f"| {_mb(peak['vm_hwm'])} | {run['wall_seconds']:.0f} s | {'' if rate is None else f'{rate:,.0f}'} |")


def runs_table(runs: Sequence[Result]) -> list[str]:
    return ["| samples | loader | through | status | RssAnon after imports | peak RssAnon | added by loader "
            "| peak RssFile | VmHWM | wall | samples/s |", "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *(_run_row(run) for run in runs)]


def goals_lines(goals: Result) -> list[str]:
    lines = []
    for name, entry in goals["variants"].items():
        slope = entry["bytes_per_sample"]
        text = f"- {name}: peak RssAnon up to {_mb(entry['peak_rss_anon_max'])}"
        if "growth_bytes" in entry:
            first, last = entry["sizes"][0], entry["sizes"][-1]
            text += f", {entry['growth_bytes'] / MB:+,.1f} MB from {first:,} to {last:,} samples"
        if slope is not None:
            text += f", {slope:,.0f} bytes per sample"
        if "growth_goal_met" in entry:
            text += (f"; growth < 100 MB: {_verdict(entry['growth_goal_met'])}, "
                     f"under 1 GB: {_verdict(entry['total_goal_met'])}")
        lines.append(text)
    return lines


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def _verdict_of(proof: Result) -> str:
    return "holds" if proof["proved"] else "FAILED"


def cap_table(proof: Result) -> list[str]:
    lines = [f"### One epoch of `model.fit` (softmax regression, batch {proof['batch_size']}) on {proof['size']:,} "
             f"samples under RLIMIT_DATA = {proof['cap_bytes'] / GB:.2f} GB", "",
             f"The split is {proof['in_ram_bytes'] / GB:.1f} GB as stored (uint8), what the tutorial and the ram "
             f"loader hold (the article's own estimate (float32), computed, not measured: "
             f"{proof['article_float32_estimate_bytes'] / GB:.1f} GB). Proof {_verdict_of(proof)}.", "",
             "| loader | outcome | peak RssAnon | peak RssFile | VmData at end | wall | fit | loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for run in proof["runs"]:
        child, end = run["child"], run["child"].get("memory", {}).get("end", {})
        outcome = "completed" if run["status"] == "ok" else run["reason"][:160]
        fit = f"{child['fit_seconds']:.0f} s, {child['batches']:,} steps" if "fit_seconds" in child else ""
        loss = f"{child['loss']:.3f}" if "loss" in child else ""
        lines.append(f"| {run['loader']} | {outcome} | {_mb(run['peak']['rss_anon'])} | {_mb(run['peak']['rss_file'])} "
                     f"| {_mb(end.get('vm_data'))} | {run['wall_seconds']:.0f} s | {fit} | {loss} |")
    return lines


def markdown(results: Result) -> str:
    machine, options = results["machine"], results["options"]
    lines = [f"{cpus_and_ram(machine, gib='GB')}, numpy {machine['numpy']}; MB = 2^20, GB = 2^30 bytes; page cache "
             f"{options['cache']} before each run", ""]
    if "runs" in results:
        cut = f", first {options['max_batches']} batches" if options.get("max_batches") else ""
        lines += [f"### Peak memory of one pass over the training split, batch {options['batch_size']}{cut}", "",
                  *runs_table(results["runs"]), "", *goals_lines(results["goals"]), ""]
    if "cap_proof" in results:
        lines += [*cap_table(results["cap_proof"]), ""]
    return "\n".join(lines)


def _series(runs: Sequence[Result], variant: tuple[str, str], status: str) -> list[Result]:
    return sorted((run for run in runs if (run["loader"], run["api"]) == variant and run["status"] == status),
                  key=lambda run: run["size"])


def _plot_variant(anon_axes: Any, file_axes: Any, runs: Sequence[Result], variant: tuple[str, str],
                  color: str) -> None:
    """One loader/API: its peaks on both axes, and its skipped sizes at their estimated need."""
    style = "o-" if variant[1] == "keras" else "s--"
    label = f"{variant[0]}: {THROUGH.get(variant, variant[1])}"
    done, skipped = _series(runs, variant, "ok"), _series(runs, variant, "skipped")
    for axes, key in ((anon_axes, "rss_anon"), (file_axes, "rss_file")):
        axes.plot([run["size"] for run in done], [run["peak"][key] / MB for run in done], style, color=color,
                  label=label if axes is anon_axes else None)
    if skipped:
        anon_axes.plot([run["size"] for run in skipped], [run["estimate"]["need_bytes"] / MB for run in skipped],
                       "o", mfc="none", markersize=9, color=color, label=f"{variant[0]}: skipped, estimated need")


def write_plot(runs: Sequence[Result], path: str | os.PathLike, ram_bytes: int | None = None) -> Path:
    """Peak RssAnon and RssFile against dataset size (log-log); skipped runs at their estimated need.

    Solid lines go through Keras (TensorFlow's own ~240 MB of heap included), dashed ones do not.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (anon_axes, file_axes) = plt.subplots(1, 2, figsize=(11, 5.2), sharex=True)
    for index, variant in enumerate(dict.fromkeys((run["loader"], run["api"]) for run in runs)):
        _plot_variant(anon_axes, file_axes, runs, variant, f"C{index}")
    if ram_bytes:
        anon_axes.axhline(ram_bytes / MB, color="grey", linestyle=":", label="machine RAM")
    for axes, title in ((anon_axes, "peak RssAnon (heap: owned by the process)"),
                        (file_axes, "peak RssFile (mapped pages: reclaimable page cache)")):
        axes.set(xscale="log", yscale="log", xlabel="training samples", ylabel="MB (2^20 bytes)", title=title)
        axes.grid(True, which="both", alpha=0.3)
    figure.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=90)
    plt.close(figure)
    return target


def rerender(path: Path, plot: Path | None) -> int:
    """Table (and plot, when it has runs) of a results file, so docs can be redone without rerunning."""
    results = json.loads(path.read_text())
    if "runs" in results:
        write_plot(results["runs"], plot or path.with_suffix(".png"), results["machine"]["total_ram_bytes"])
    print(markdown(results))
    return 0
