"""The bigger-than-RAM benchmark's figures, goals, Markdown and plot, from what ``beyond_ram`` measured.

Every ratio divides two figures of the same run. Read amplification is bytes that came from the
block device (the training process' ``read_bytes`` over ``fit``) per stored byte of the samples it
was served (785 for an MNIST digit and label). The random-read limit in samples is the depth-64
4 KiB IOPS over the pages a sample costs when nothing is cached (``pages_per_sample``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import MB, cpus_and_ram

Result = dict[str, Any]
GB = 1e9
RUN_LIMIT_SECONDS = 30 * 60
GOALS = {  # name: (figure, goal, "min" or "max")
    "exact order vs depth-64 random-read limit": ("exact_vs_random_limit", 0.5, "min"),
    "exact order read amplification": ("exact_amplification", 6.5, "max"),
    "block order vs sequential ceiling": ("block_vs_sequential", 0.5, "min"),
    "block order read amplification": ("block_amplification", 1.1, "max"),
    "peak RssAnon of the training processes (bytes)": ("training_peak_rss_anon", 1e9, "below"),
    "build + verify + block epoch (s)": ("run_seconds", RUN_LIMIT_SECONDS, "max"),
    "staging folders left by the build": ("staging_left", 0, "max"),
}


def _pass(part: Result, sample_bytes: int) -> Result:
    child = part["child"]
    served = child.get("samples_served_distinct", 0)
    read = child.get("read_bytes", 0)
    return {"samples": child["samples_trained"], "steps": child["steps"], "fit_seconds": child["fit_seconds"],
            "samples_per_s": child["samples_trained"] / child["fit_seconds"], "read_bytes": read,
            "steady_samples_per_s": child.get("steady_samples_per_s"),
            "amplification": read / (served * sample_bytes) if served else float("nan"),
            "pages_per_s": read / 4096 / child["fit_seconds"], "resident_before": part["resident_before"],
            "peak_rss_anon": part["peak_rss_anon"], "peak_rss_file": part["peak_rss_file"],
            "process_seconds": part["wall_seconds"], "batches_per_epoch": child.get("batches_per_epoch")}


def figures(results: Result) -> Result:
    device, dataset = results["device"], results["dataset"]
    sample_bytes, pages = device["sample_bytes"], device["pages_per_sample"]["total"]
    iops = device["random"]["iops"]
    block, exact, block_loader, exact_loader, model = (
        _pass(results[name], sample_bytes) for name in ("block", "exact", "block_loader", "exact_loader", "fit_ram"))
    limit = iops["64"] / pages
    ceiling = device["sequential"]["samples_per_s"]
    build = results.get("build")
    out = {"dataset_bytes": dataset["bytes"], "ram_bytes": dataset["ram_bytes"], "dataset_vs_ram": dataset["vs_ram"],
           "sequential_samples_per_s": device["sequential"]["samples_per_s"], "pages_per_sample": pages,
           "random_limit_samples_per_s": limit, "depth1_samples_per_s": iops["1"] / pages,
           "buffered_limit_samples_per_s": iops["buffered-64"] / pages,
           "block": block, "exact": exact, "block_vs_sequential": block["samples_per_s"]
           / device["sequential"]["samples_per_s"], "block_amplification": block["amplification"],
           "exact_vs_random_limit": exact["samples_per_s"] / limit, "exact_amplification": exact["amplification"],
           "exact_vs_buffered_limit": exact["samples_per_s"] / (iops["buffered-64"] / pages),
           "training_peak_rss_anon": max(block["peak_rss_anon"], exact["peak_rss_anon"]),
           "block_loader": block_loader, "exact_loader": exact_loader, "model_in_ram": model,
           "block_loader_vs_sequential": block_loader["samples_per_s"] / ceiling,
           "exact_loader_vs_random_limit": exact_loader["samples_per_s"] / limit,
           "block_vs_model_in_ram": _ratio(block["steady_samples_per_s"], model["steady_samples_per_s"]),
           "tutorial": results["tutorial"]["status"]}
    if build is not None:
        verify_seconds = results.get("verify", {}).get("seconds", 0.0)
        out.update(build_seconds=build["seconds"], build_peak_rss_anon=build["peak_rss_anon"],
                   staging_left=len(build["staging_left"]),
                   run_seconds=build["seconds"] + verify_seconds + results["block"]["wall_seconds"])
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def evaluate_goals(results: Result) -> list[Result]:
    found = results["figures"] = figures(results)
    entries = []
    for name, (key, goal, kind) in GOALS.items():
        if key not in found:
            continue
        value = found[key]
        met = value >= goal if kind == "min" else value < goal if kind == "below" else value <= goal
        entries.append({"goal": name, "figure": key, "value": value, "target": goal, "kind": kind, "met": met})
    tutorial = results["tutorial"]
    needs = tutorial["child"].get("needs_bytes", 0)
    if needs > tutorial["cap_bytes"]:  # the split cannot fit: it must fail, safely
        entries.append({"goal": "tutorial design fails with MemoryError under RLIMIT_DATA", "figure": "tutorial",
                        "value": tutorial["status"], "target": "memory_error", "kind": "equal",
                        "met": tutorial["status"] == "memory_error"})
    return entries


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(results: Result) -> str:
    found, machine = results["figures"], results["machine"]
    device, tutorial = results["device"], results["tutorial"]
    block, exact = found["block"], found["exact"]
    random = device["random"]
    rows = [("block order, model.fit, full epoch" if not results["block"]["max_seconds"] else "block order, model.fit",
             block, f"{found['block_vs_sequential']:.2f}x sequential"),
            (f"exact order, model.fit, {exact['fit_seconds']:.0f} s", exact,
             f"{found['exact_vs_random_limit']:.2f}x depth-64 limit"),
            ("block order, loader alone", found["block_loader"],
             f"{found['block_loader_vs_sequential']:.2f}x sequential"),
            ("exact order, loader alone", found["exact_loader"],
             f"{found['exact_loader_vs_random_limit']:.2f}x depth-64 limit")]
    lines = [f"{cpus_and_ram(machine)}, {machine['workdir_mount']['fstype']} on {machine['workdir_mount']['device']}; "
             f"load average {machine['loadavg_start'][0]:.1f} at start, {machine['loadavg_end'][0]:.1f} at end; "
             f"GB = 10^9 bytes, MB = 2^20 bytes", "",
             f"### Bigger than RAM: {results['dataset']['samples']:,} samples, {found['dataset_bytes'] / GB:.1f} GB "
             f"on disk = {found['dataset_vs_ram']:.2f}x the {found['ram_bytes'] / GB:.1f} GB of RAM", ""]
    if "build" in results:
        build = results["build"]
        lines.append(f"Build: {build['seconds']:.0f} s, peak RssAnon {build['peak_rss_anon'] / MB:,.0f} MB, "
                     f"staging folders left: {len(build['staging_left'])}.")
    if "verify" in results:
        lines.append(f"Verify: {results['verify']['seconds']:.0f} s, {'ok' if results['verify']['ok'] else 'FAILED'}.")
    lines += ["", f"Storage, same run: sequential read {device['sequential']['bytes_per_s'] / MB:,.0f} MB/s "
              f"({found['sequential_samples_per_s']:,.0f} samples/s); 4 KiB random reads ({random['described']}): "
              f"{random['iops']['1']:,.0f} IOPS at depth 1, {random['iops']['64']:,.0f} at depth 64, "
              f"{random['iops']['buffered-64']:,.0f} with 64 threads reading through the page cache; a sample costs "
              f"{found['pages_per_sample']:.3f} pages when nothing is cached, so the depth-64 limit is "
              f"{found['random_limit_samples_per_s']:,.0f} samples/s."
              + (f" ({random['note']})" if random["note"] else ""), "",
              "| pass | samples | seconds | samples/s | vs ceiling | read amplification | storage pages/s "
              "| peak RssAnon MB | peak RssFile MB | cached before |", "|---|---:|---:|---:|---|" + "---:|" * 5]
    for label, figures_, versus in rows:
        lines.append(f"| {label} | {figures_['samples']:,} | {figures_['fit_seconds']:.0f} "
                     f"| {figures_['samples_per_s']:,.0f} | {versus} | {figures_['amplification']:.2f} "
                     f"| {figures_['pages_per_s']:,.0f} | {figures_['peak_rss_anon'] / MB:,.0f} "
                     f"| {figures_['peak_rss_file'] / MB:,.0f} | {figures_['resident_before']:.1%} |")
    model = found["model_in_ram"]
    steady = block["steady_samples_per_s"]
    lines += ["", f"The model's own speed, same run: model.fit on {model['samples']:,} samples in RAM (uint8 arrays) "
              f"ran at {model['steady_samples_per_s'] or 0:,.0f} samples/s after its first steps; the block-order "
              f"epoch from disk at {steady or 0:,.0f} samples/s after its first steps"
              + (f" ({found['block_vs_model_in_ram']:.2f}x)." if found["block_vs_model_in_ram"] else "."), ""]
    error, needs = tutorial["child"].get("error") or {}, tutorial["child"].get("needs_bytes", 0)
    lines += [f"Tutorial design (whole uint8 split in RAM, needs {needs / GB:.1f} GB) "
              f"under RLIMIT_DATA = {tutorial['cap_bytes'] / GB:.1f} GB: **{tutorial['status']}**"
              + (f" ({error.get('type')} while {error.get('phase')}: {error.get('message')})" if error else "") + ".",
              "", "| goal | value | target | met |", "|---|---:|---:|---|"]
    for entry in results["goals"]:
        sign = {"min": ">=", "max": "<=", "below": "<", "equal": "="}[entry["kind"]]
        lines.append(f"| {entry['goal']} | {_cell(entry['value'])} | {sign} {_cell(entry['target'])} "
                     f"| {'yes' if entry['met'] else '**no**'} |")
    if "cold" in results:
        from .loaders_report import cold_table

        lines += [""] + cold_table(results["cold"])
    return "\n".join(lines) + "\n"


def write_plot(results: Result, path: Path) -> Path:
    """Samples/s and storage MB/s (top), the process' and the machine's memory (bottom), per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = [(name, results[name]) for name in ("block", "exact")]
    figure, axes = plt.subplots(2, len(passes), figsize=(12, 7), sharex="col", squeeze=False)
    for column, (name, part) in enumerate(passes):
        rates, readings = part["rates"], part["timeline"]
        top, bottom = axes[0][column], axes[1][column]
        top.plot([r["seconds"] for r in rates], [r["samples_per_s"] for r in rates], color="tab:blue")
        top.set_ylabel("samples/s", color="tab:blue")
        top.set_title(f"{name} order" + (" (full epoch)" if name == "block" and not part["max_seconds"] else ""))
        reads = top.twinx()
        reads.plot([r["seconds"] for r in rates], [r["read_bytes_per_s"] / MB for r in rates], color="tab:orange")
        reads.set_ylabel("storage MB/s", color="tab:orange")
        seconds = [r["seconds"] for r in readings]
        for key, label in (("rss_anon", "process RssAnon"), ("rss_file", "process RssFile"),
                           ("mem_available", "machine MemAvailable"), ("page_cache", "machine page cache")):
            bottom.plot(seconds, [r[key] / GB for r in readings], label=label)
        if any(r["cgroup_usage"] is not None for r in readings):
            bottom.plot(seconds, [(r["cgroup_usage"] or 0) / GB for r in readings], label="process' cgroup usage")
        bottom.axhline(results["dataset"]["ram_bytes"] / GB, color="grey", linestyle=":", label="RAM")
        bottom.set_ylabel("GB")
        bottom.set_xlabel("seconds since the process started")
    axes[1][0].legend(loc="upper left", fontsize="small")
    found = results["figures"]
    figure.suptitle(f"{found['dataset_bytes'] / GB:.1f} GB of MNIST digits, {found['dataset_vs_ram']:.2f}x RAM: "
                    "model.fit from disk")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
