"""The object store benchmark's figures: the names of its cases, the ratios judged against issue 20's goals,
what a range-read exact order could at best reach, and the Markdown table the docs render from the JSON.

Every ratio divides two medians of the same run. Amplification is the bytes that crossed the proxy
(fetched from the server, HTTP headers and the manifest included) over the bytes of the shard files the
epoch needed (all of the split's: an epoch reads every sample). A range-read exact order needs at least
one GET per sample (samples of a batch are random, so no two are neighbours), so the request bound in
samples/s is its best case; labels, a byte a sample, are left out of it in its favour. That bound reads
copies of the shard files written by one PUT each: SeaweedFS serves ranges of the multipart objects that
``build_shards.py --upload`` writes (boto3 splits files over 8 MB) several times slower, shown in a row of
its own.
"""

from __future__ import annotations

import statistics
from typing import Any

from .common import MB, cpus_and_ram
from .rounds import Goal, goal_summary, ratio_entries

Result = dict[str, Any]
BANDWIDTH = "GET every shard in turn"
DIRECT = "GET every shard in turn, no proxy"
REQUESTS = "range GETs of one sample"  # of objects written by one PUT each: the best case of range reads here
MULTIPART = "range GETs of one sample, multipart objects"  # of the objects as build_shards.py --upload wrote them
NEEDED = "shard bytes needed"
MARKS = ("first_batch_s", "tenth_of_batches_s", "seconds")  # when a loader epoch had its first batch, a tenth, all
ALSO = ("delivered_bytes_per_s", "fetched_bytes", "requests", "cpu_s", "server_cpu_s", "proxy_cpu_s", "cores_busy",
        "peak_rss_anon", "peak_rss_file", "seconds")


def loader_name(shuffle: str, where: str) -> str:
    """``streamload block, cold cache``, ``... warm cache`` or ``... local disk``."""
    return f"streamload {shuffle}, " + {"cold": "cold cache", "warm": "warm cache", "local": "local disk"}[where]


def jpeg_name(name: str) -> str:
    """The same case over the JPEG set of scripts/benchmark_images.py, decoded to 224x224 where a loader reads."""
    return f"{name}, JPEG set"


def latency_name(name: str, latency_ms: float) -> str:
    return f"{name}, +{latency_ms:g} ms"


def figures(result: Result) -> Result:
    """One case's figures with the rates derived from them."""
    every_cpu_s = result["cpu_s"] + result["server_cpu_s"] + result["proxy_cpu_s"]
    return {**result, "samples_per_s": result["samples"] / result["seconds"],
            "samples_per_cpu_s": result["samples"] / max(result["cpu_s"], 1e-9),
            "delivered_bytes_per_s": result["delivered_bytes"] / result["seconds"],
            "cores_busy": every_cpu_s / result["seconds"]}


def goals(latency_ms: float) -> list[Goal]:
    """Issue 20 §4's goals, each a ratio of two cases' samples/s."""
    block, exact = loader_name("block", "cold"), loader_name("exact", "cold")
    return [(block, BANDWIDTH, 0.8, "min"), (exact, REQUESTS, 0.5, "min"),
            (latency_name(block, latency_ms), block, 0.8, "min"), (latency_name(exact, latency_ms), exact, 0.8, "min"),
            (loader_name("block", "warm"), loader_name("block", "local"), 0.9, "min"),
            (loader_name("exact", "warm"), loader_name("exact", "local"), 0.9, "min"),
            (BANDWIDTH, DIRECT, None, "min"),
            *((jpeg_name(loader_name(shuffle, "cold")), jpeg_name(loader_name(shuffle, "local")), None, "min")
              for shuffle in ("block", "exact"))]


def amplification(fetched: dict[str, float], shard_bytes: int, latency_ms: float) -> list[Result]:
    """Bytes fetched over shard bytes needed, for the epochs read from the bucket (block order's goal: 1.1)."""
    block, exact = loader_name("block", "cold"), loader_name("exact", "cold")
    cases: list[Goal] = [(block, NEEDED, 1.1, "max"), (exact, NEEDED, None, "max"), (BANDWIDTH, NEEDED, None, "max")]
    cases += [(latency_name(name, latency_ms), NEEDED, goal, kind) for name, _, goal, kind in cases[:2]]
    return ratio_entries({**fetched, NEEDED: shard_bytes}, cases)


def range_reads(medians: dict[str, float], rates: dict[str, float], latency_ms: float) -> list[Result]:
    """Exact order with whole shards next to the best a range-read exact order could do, with and without
    latency; and the sample size above which one range GET moves more bytes per second than whole GETs."""
    rows = []
    for suffix in ("", latency_name("", latency_ms)):
        exact, bound = loader_name("exact", "cold") + suffix, REQUESTS + suffix
        if exact in medians and bound in medians:
            rows.append({"latency_ms": latency_ms if suffix else 0.0, "whole_shards_samples_per_s": medians[exact],
                         "range_reads_best_samples_per_s": medians[bound],
                         "whole_over_ranges": medians[exact] / medians[bound],
                         "break_even_sample_bytes": rates[BANDWIDTH + suffix] / medians[bound]})
    return rows


def cpu_floors(judged: Result, shard_bytes: int, cores: int, sha256_per_cpu_s: float) -> Result | None:
    """How fast a cold block epoch could be on these cores, were every CPU second spread over all of them with
    no wait: with the CPU seconds it took (reader, server and proxy), and with only what any reader that checks
    its downloads must add to the bandwidth bound's (the warm epoch's gathering and SHA-256 of every byte).
    Each as a ceiling on the goal's ratio (the bound's seconds over the floor's); the server runs on the same
    cores here, which a bucket in another machine would not."""
    every = {name: judged["median_cpu_s"][name] + judged["median_server_cpu_s"][name]
             + judged["median_proxy_cpu_s"][name] for name in judged["median_cpu_s"]}
    cold, warm = loader_name("block", "cold"), loader_name("block", "warm")
    if not {cold, warm, BANDWIDTH} <= every.keys():
        return None
    bound_s, hashing = judged["median_seconds"][BANDWIDTH], shard_bytes / sha256_per_cpu_s
    floors = {"cold_epoch": every[cold] / cores,
              "checking_reader": (every[BANDWIDTH] + judged["median_cpu_s"][warm] + hashing) / cores}
    return {"cores": cores, "bound_seconds": bound_s, "sha256_cpu_s": hashing,
            **{f"{name}_floor_s": floor for name, floor in floors.items()},
            **{f"{name}_ceiling": bound_s / max(floor, bound_s) for name, floor in floors.items()}}


def loader_marks(rounds: list[Result]) -> dict[str, dict[str, float]]:
    """For each loader epoch: the median seconds until its first batch, a tenth of its batches, and all."""
    names = [name for name, case in rounds[0]["results"].items() if MARKS[0] in case]
    return {name: {mark: statistics.median(one["results"][name][mark] for one in rounds) for mark in MARKS}
            for name in names}


def summary(rounds: list[Result], dataset: Result, latency_ms: float, cores: int = 1,
            sha256_per_cpu_s: float = 1.0) -> Result:
    """Medians, goals, amplification, the range-read comparison and the CPU floors of one run."""
    judged = goal_summary(rounds, "samples_per_s", "samples_per_cpu_s", goals(latency_ms), also=ALSO)
    medians = judged["median_samples_per_s"]
    return {"summary": judged, "marks": loader_marks(rounds),
            "cpu_floors": cpu_floors(judged, dataset["shard_bytes"], cores, sha256_per_cpu_s),
            "amplification": amplification(judged["median_fetched_bytes"], dataset["shard_bytes"], latency_ms),
            "range_reads": range_reads(medians, judged["median_delivered_bytes_per_s"], latency_ms)}


def _verdict(entry: Result) -> str:
    if entry["goal"] is None:
        return ""
    return ("<=" if entry["goal_kind"] == "max" else ">=") + f" {entry['goal']:g}x: " + ("met" if entry["met"]
                                                                                         else "**not met**")


def _marks_line(shuffle: str, marks: dict[str, dict[str, float]]) -> str:
    """One bullet: when each epoch of ``shuffle`` order had its first batch, a tenth of its batches, and all."""
    timings = []
    for where in ("cold", "warm", "local"):
        name = loader_name(shuffle, where)
        if name in marks:
            timings.append(name.split(", ", 1)[1] + " " + " / ".join(f"{value:,.1f}" for value in marks[name].values()))
    return (f"- streamload {shuffle}, seconds until the first batch / a tenth of the batches / the whole epoch: "
            + "; ".join(timings)) if timings else ""


def markdown(results: Result) -> str:
    data, options, judged = results["dataset"], results["options"], results["summary"]
    lines = [f"{cpus_and_ram(results['machine'])}; SeaweedFS on loopback behind a counting proxy; MNIST augmented "
             f"to {data['samples']:,} samples ({data['shard_bytes'] / MB:,.0f} MB in {data['shards']} shards), batch "
             f"{options['batch_size']}; {options['ranges']:,} range GETs of one sample, {options['depth']} in flight; "
             f"median of {len(results['rounds'])} rounds, each case in its own process; local disk and warm cache "
             "with the page cache warm; MB = 2^20 bytes", "",
             "| case | samples/s | MB/s | fetched / shard bytes | requests | CPU s: reader, server, proxy "
             "| cores busy | peak RssAnon | peak RssFile |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rate in judged["median_samples_per_s"].items():
        fetched = judged["median_fetched_bytes"][name] / data["shard_bytes"]
        requests = f"{judged['median_requests'][name]:,.0f}" if results["rounds"][0]["results"][name][
            "through_proxy"] else "-"
        lines.append(f"| {name} | {rate:,.0f} | {judged['median_delivered_bytes_per_s'][name] / MB:,.1f} "
                     f"| {fetched:.3f} | {requests} | {judged['median_cpu_s'][name]:.1f}, "
                     f"{judged['median_server_cpu_s'][name]:.1f}, {judged['median_proxy_cpu_s'][name]:.1f} "
                     f"| {judged['median_cores_busy'][name]:.2f} "
                     f"| {judged['median_peak_rss_anon'][name] / MB:,.0f} MB "
                     f"| {judged['median_peak_rss_file'][name] / MB:,.0f} MB |")
    lines += ["", "| ratio of medians | value | goal |", "|---|---:|---|"]
    for entry in judged["ratios"]:
        lines.append(f"| {entry['numerator']} / {entry['denominator']} (samples/s) | {entry['value']:.2f}x "
                     f"| {_verdict(entry)} |")
    for entry in results["amplification"]:
        lines.append(f"| {entry['numerator']}: fetched / {entry['denominator']} | {entry['value']:.3f}x "
                     f"| {_verdict(entry)} |")
    lines.append("")
    for row in results["range_reads"]:
        latency = f"+{row['latency_ms']:g} ms a request" if row["latency_ms"] else "no added latency"
        lines.append(f"- {latency}: "
                     f"exact order with whole shards {row['whole_shards_samples_per_s']:,.0f} samples/s; a range-read "
                     f"exact order at best {row['range_reads_best_samples_per_s']:,.0f} samples/s (one GET a sample): "
                     f"whole shards {row['whole_over_ranges']:,.0f}x faster; one GET a sample keeps up with whole "
                     f"shards only for samples over {row['break_even_sample_bytes'] / MB:,.2f} MB")
    lines += [line for shuffle in ("block", "exact") if (line := _marks_line(shuffle, results["marks"]))]
    floors = results.get("cpu_floors")
    if floors:
        lines.append(f"- CPU floor of a cold block epoch on these {floors['cores']} cores (every CPU second of reader, "
                     f"server and proxy spread over them, no wait): {floors['cold_epoch_floor_s']:,.1f} s as this "
                     f"run spent them, so at best {floors['cold_epoch_ceiling']:.2f}x the bound; for any reader that "
                     f"adds to the bound's CPU only the warm epoch's gathering and SHA-256 of every byte "
                     f"({floors['sha256_cpu_s']:,.1f} CPU s): {floors['checking_reader_floor_s']:,.1f} s, at best "
                     f"{floors['checking_reader_ceiling']:.2f}x the bound ({floors['bound_seconds']:,.1f} s)")
    jpeg = results["jpeg"]
    jpeg_facts = (f"{jpeg['samples']:,} images in {jpeg['shards']} shards ({jpeg['shard_bytes'] / MB:,.0f} MB), "
                  "decoded to 224x224 by each loader epoch" if jpeg["run"] else "not run: " + jpeg["reason"])
    lines += [f"- the JPEG set: {jpeg_facts}", "",
              f"`{results['command']}`"]
    return "\n".join(lines) + "\n"
