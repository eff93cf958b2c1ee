"""The image benchmark's Markdown, from the figures ``images_bench`` measured (also ``benchmarks.report``'s
renderer of ``results/images.json``)."""

from __future__ import annotations

from typing import Any

from .common import MB, cpus_and_ram
from .images_pipelines import BOUNDS, DECODED, ENCODED_WARM, GRAIN, KERAS, TFRECORD, WEBDATASET

Result = dict[str, Any]


def _met(entry: Result) -> str:
    return "" if entry["met"] is None else ("yes" if entry["met"] else "**no**")


def _goal(entry: Result) -> str:
    return "" if entry["goal"] is None else f"{'>=' if entry['goal_kind'] == 'min' else '<='} {entry['goal']:g}x"


def _disk(results: Result, name: str) -> str:
    size = results["disk_bytes"].get(name)
    if size is None:
        return "RAM" if name in BOUNDS else "-"
    return f"{size / results['images']['count'] / 1024:,.0f} KiB ({results['disk_per_source'][name]:.3f}x)"


def _ratio_rows(ratios: list[Result], which: str) -> list[str]:
    if not ratios:
        return []
    return ["", f"| ratio, {which} | value | goal | met |", "|---|---:|---:|---|"] + [
        f"| {e['numerator']} / {e['denominator']} | {e['value']:.2f}x | {_goal(e)} | {_met(e)} |" for e in ratios]


def _rate(figures: Result | None, name: str) -> tuple[str, str]:
    """images/s (min-max) and images per CPU s of ``name`` in one pass's figures, or dashes."""
    if figures is None or name not in figures["median_images_per_s"]:
        return "-", "-"
    low, high = figures["min_max_images_per_s"][name]
    return (f"{figures['median_images_per_s'][name]:,.0f} ({low:,.0f}-{high:,.0f})",
            f"{figures['median_images_per_cpu_s'][name]:,.0f}")


def case_table(results: Result, case: str) -> list[str]:
    part = results["cases"][case]
    first, rss, passes = part.get("first_pass"), part["median_peak_rss_anon"], part.get("passes", 1)
    title = {"resize": "resize to 224x224", "augment": "random-resized crop + horizontal flip to 224x224"}[case]
    last = "second pass" if passes == 2 else f"pass {passes}"
    both = passes > 1 and first is not None
    rates = (f"images/s, {last} | images per CPU s | images/s, first pass | images per CPU s" if both
             else "images/s | images per CPU s")
    lines = [f"**{title}**, images/s, median (min-max) of {len(part['rounds'])} interleaved rounds, each a fresh "
             f"process running {passes} pass{'es' if passes > 1 else ''}", "",
             f"| pipeline | {rates} | peak RssAnon | disk per image (vs source) |",
             "|---|" + "---:|" * (6 if both else 4)]
    steady = {key: part[key] for key in ("median_images_per_s", "min_max_images_per_s", "median_images_per_cpu_s")}
    names = sorted(part["pipelines"], key=lambda name: -steady["median_images_per_s"].get(
        name, first["median_images_per_s"][name] if first else 0))
    for name in names:
        cells = (*_rate(steady, name), *(_rate(first, name) if both else ()))
        lines.append(f"| {name} | {' | '.join(cells)} | {rss[name] / MB:,.0f} MB | {_disk(results, name)} |")
    if case == "augment" and DECODED not in part["pipelines"]:
        lines += ["", f"{DECODED}: not run (a random-resized crop of images already resized to 224x224 is not "
                      "the same task)."]
    lines += _ratio_rows(part["ratios"], last if both else "this run")
    if both:
        lines += _ratio_rows(first["ratios"], "first pass")
    return lines


def growth_table(part: Result) -> list[str]:
    small, large = (str(size) for size in part["sizes"])
    lines = [f"**Peak RssAnon as the set grows** from {int(small):,} to {int(large):,} images (resize, one pass each)",
             "", f"| pipeline | {int(small):,} images | {int(large):,} images | ratio |", "|---|---:|---:|---:|"]
    for name, by in part["runs"].items():
        lines.append(f"| {name} | {by[small]['peak_rss_anon'] / MB:,.0f} MB "
                     f"| {by[large]['peak_rss_anon'] / MB:,.0f} MB | {part['rss_anon_ratio'][name]:.2f}x |")
    if part.get("goal"):
        goal = part["goal"]
        lines += ["", f"streamload encoded: {goal['value']:.2f}x, goal {_goal(goal)}: {_met(goal)}"]
    return lines


def markdown(results: Result) -> str:
    machine, images = results["machine"], results["images"]
    lines = [f"{images['count']:,} photo-like JPEGs in {images['classes']} class folders (mean "
             f"{images['mean_bytes'] / 1024:,.0f} KiB, quality 90), batches of {results['options']['batch_size']}, "
             f"{results['options']['threads']} decoding threads; {cpus_and_ram(machine)}, load average "
             f"{machine['loadavg_start'][0]:.1f} at start, {machine['loadavg_end'][0]:.1f} at end (a shared machine: "
             "compare ratios within this run). Command: `" + results["command"] + "`", ""]
    for name, why in results["not_run"].items():
        lines.append(f"- not run: {name}: {why}")
    if results["not_run"]:
        lines.append("")
    checks = results["integrity"]
    lines += [f"Checked first, unshuffled: every pipeline delivered all {images['count']:,} images, its first "
              f"{min(c['checked'] for c in checks.values())} in the folder's order with their labels, and pixels "
              "(0..255) within a tolerance of the same images decoded here by the same decoder (TensorFlow's, or the "
              "chosen simplejpeg reduced-size decode; the decoded store's Pillow IDCT against TensorFlow's):", "",
              "| pipeline | decoder | largest difference | tolerance |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {c['decoder']} | {c['max_abs_diff']:.3g} | {c['tolerance']:g} |"
              for name, c in checks.items()]
    lines.append("")
    for case in results["cases"]:
        lines += case_table(results, case) + [""]
    if "disk_goal" in results:
        goal = results["disk_goal"]
        lines += [f"Disk: streamload encoded keeps {goal['value']:.3f}x the source files, goal {_goal(goal)}: "
                  f"{_met(goal)}", ""]
    if "growth" in results:
        lines += growth_table(results["growth"]) + [""]
    return "\n".join(lines)


def headline(results: Result) -> str:
    """The README's table: each pipeline's steady-state images/s in both cases, and streamload's lead on Keras."""
    cases = results["cases"]
    if any(case not in cases for case in ("resize", "augment")):
        return "The image benchmark's file holds only one case; run both for the front page.\n"
    rates = {case: cases[case]["median_images_per_s"] for case in ("resize", "augment")}
    passes = cases["resize"].get("passes", 1)
    lines = [f"{results['images']['count']:,} photo-like JPEGs into 224x224 float32 batches on "
             f"{cpus_and_ram(results['machine'])}, images/s in a process's {'second' if passes == 2 else 'last'} "
             f"pass, median of {len(cases['resize']['rounds'])} rounds:", "",
             "| pipeline | resize | random-resized crop + flip |", "|---|---:|---:|"]
    for name in (ENCODED_WARM, KERAS, TFRECORD, GRAIN, WEBDATASET):
        if name in rates["resize"] and name in rates["augment"]:
            lines.append(f"| {name} | {rates['resize'][name]:,.0f} | {rates['augment'][name]:,.0f} |")
    if all(KERAS in rate and ENCODED_WARM in rate for rate in rates.values()):
        lead = [rate[ENCODED_WARM] / rate[KERAS] for rate in rates.values()]
        disk = results.get("disk_goal", {}).get("value")
        lines += ["", f"streamload's encoded store: {lead[0]:.2f}x Keras' pipeline resizing, {lead[1]:.2f}x with "
                      "random crops (Keras' user crops a fixed 224x224 of images loaded at 256x256, a cheaper task)"
                      + ("." if disk is None else f"; on {disk:.3f}x the source files' disk.")]
    return "\n".join(lines) + "\n"
