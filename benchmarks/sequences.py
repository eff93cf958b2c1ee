"""Issue 19 §1/§3: padding saved by length bucketing, and memory while reading variable-length records.

One run measures, on a real set of sequences (``mnist-ink``: each MNIST digit as the positions of its
inked pixels, uint16 tokens) or on any ragged dataset given with ``--data``:

- padding: rows of one epoch's batches padded to their longest record, with and without
  ``bucket_by_length``, against the rows really held (from the offsets alone);
- memory: peak RssAnon and RssFile while reading ``--batches`` random batches of the set and of one
  ``--factor`` times larger (its training records repeated, written by streamload's own builder),
  each run in a fresh child process, the two alternating over ``--rounds`` rounds; the ratio of the
  medians says whether the heap stays flat as the set grows, and the samples/s ratio what reading
  a larger set costs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamload import ArraySource, BuildOptions, build_dataset
from streamload.errors import InvalidOptionError, StreamloadError
from streamload.format.records import Records
from streamload.read.dataset import ShardedDataset
from streamload.read.loader import BatchLoader, record_lengths
from streamload.read.sampler import padded_cells

from .common import (
    MB,
    check_free_space,
    command_line,
    cpus_and_ram,
    log,
    machine_info,
    measure_and_emit,
    options_of,
)
from .memory_bench import prepare_cache
from .memory_child import run_child
from .rounds import NullProgress, ratio_entries, run_rounds, summarize

FLAT_RSS_GOAL = 1.1  # peak RssAnon of the larger set over the smaller's: "flat" (as benchmarks/images_bench.py)
CHILD = "benchmarks.sequences_child"
RATE_KEYS = ("samples_per_s", "samples_per_cpu_s", "plain_samples_per_s", "plain_samples_per_cpu_s")
SPLIT_KEYS = ("user_us_per_batch", "system_us_per_batch", "plain_user_us_per_batch", "plain_system_us_per_batch")
INK_THRESHOLD = 127  # a pixel brighter than this is inked
Result = dict[str, Any]


def ink_splits(mnist: Path | None) -> dict[str, ArraySource]:
    """MNIST as sequences: each digit the flat positions (0..783, uint16) of its inked pixels, label kept."""
    from streamload.write.sources.mnist import mnist_sources

    splits = {}
    for name, source in mnist_sources(mnist, download=False).items():
        chunks = list(source.iter_chunks())
        images = np.concatenate([chunk["x"] for chunk in chunks]).reshape(source.num_samples, -1)
        labels = np.concatenate([chunk["y"] for chunk in chunks])
        tokens = [np.flatnonzero(image > INK_THRESHOLD).astype(np.uint16) for image in images]
        splits[name] = ArraySource(x=Records.from_arrays(tokens, np.uint16), y=labels)
    return splits


def build_ink(out: Path, mnist: Path | None) -> Path:
    """The mnist-ink dataset (train and test) in ``out``."""
    build_dataset(ink_splits(mnist), out, BuildOptions(overwrite=True, progress=False))
    return out


def build_repeated(data: Path, out: Path, factor: int) -> Path:
    """``data``'s training split, every record ``factor`` times in order, built into ``out``.

    The split is gathered into RAM once (``factor`` copies of it while building): for sets of the size
    this benchmark reads, not for one that needs streaming to build.
    """
    dataset = ShardedDataset(data, "train")
    whole = dataset.gather(np.arange(len(dataset)))
    arrays = {key: Records.concat([value] * factor) if isinstance(value, Records) else np.concatenate([value] * factor)
              for key, value in whole.items()}
    build_dataset({"train": ArraySource(**arrays)}, out, BuildOptions(overwrite=True, progress=False))
    return out


def padding(data: Path, batch_size: int, seed: int) -> Result:
    """Padded and real rows of epoch 0's batches, with and without bucketing, and the share bucketing saves."""
    rows = {}
    for bucket in (False, True):
        loader = BatchLoader(data, batch_size=batch_size, seed=seed, bucket_by_length=bucket, prefetch_batches=0)
        lengths = record_lengths(loader.dataset, replace(loader.options, bucket_by_length=True))
        padded, held = padded_cells(loader.sampler, lengths)  # type: ignore[arg-type]
        rows["bucketed" if bucket else "plain"] = {"padded_rows": padded, "real_rows": held,
                                                   "padding_share": 1 - held / padded}
    saved = 1 - rows["bucketed"]["padded_rows"] / rows["plain"]["padded_rows"]
    return {**rows, "padded_rows_saved_share": saved}


def record_stats(data: Path) -> Result:
    """How many training records, and the spread of their lengths (from the offsets)."""
    from streamload.read.batching import ragged_input

    dataset = ShardedDataset(data, "train")
    key = ragged_input(dataset.manifest, dataset.info.arrays)
    if key is None:
        raise InvalidOptionError(f"{data}: its training split has no model input of varying length to measure")
    lengths = dataset.lengths(key, np.arange(len(dataset)))
    return {"key": key, "samples": len(dataset), "min_length": int(lengths.min()), "max_length": int(lengths.max()),
            "mean_length": float(lengths.mean()),
            "train_shard_bytes": dataset.info.file_bytes}


def reading_run(folder: Path, args: argparse.Namespace) -> Result:
    """One child reading ``folder`` on a warm page cache: its peaks (polled and its own) and samples/s."""
    prepare_cache(folder, "warm")
    options = ["--data", str(folder), "--batch-size", str(args.batch_size), "--batches", str(args.batches),
               "--seed", str(args.seed)]
    run = run_child(options, args.interval, CHILD)
    if run["returncode"] != 0:
        raise RuntimeError(f"reading {folder} failed with status {run['returncode']}:\n{run['output_tail']}")
    child, plain = run["child"], run["child"]["plain_preadv"]
    return {"peak_rss_anon": run["peak"]["rss_anon"], "peak_rss_file": run["peak"]["rss_file"],
            "baseline_rss_anon": child["memory"]["baseline"]["rss_anon"], "samples_per_s": child["samples_per_s"],
            "samples_per_cpu_s": child["samples_per_cpu_s"], "samples": child["samples"], "polls": run["peak"]["polls"],
            "plain_samples": plain["samples"],
            **{key: child[key] for key in SPLIT_KEYS[:2]}, **{f"plain_{key}": plain[key] for key in SPLIT_KEYS[:2]},
            **{f"plain_{key}": plain[key] for key in RATE_KEYS[:2]}}


def memory(folders: dict[str, Path], args: argparse.Namespace) -> Result:
    """Each set read in its own child, alternating over rounds; medians, and larger over smaller as ratios."""
    contenders = {name: (lambda number, folder=folder: reading_run(folder, args)) for name, folder in folders.items()}
    rounds = run_rounds(contenders, args.rounds, NullProgress())
    keys = ("peak_rss_anon", "peak_rss_file", "baseline_rss_anon", *RATE_KEYS, *SPLIT_KEYS)
    medians = {key: summarize(rounds, key)["median"] for key in keys}
    small, large = folders
    result = {"batches": args.batches, "rounds": rounds, "median": medians,
              "rss_anon_ratio": ratio_entries(medians["peak_rss_anon"], [(large, small, FLAT_RSS_GOAL, "max")])[0],
              "rss_file_ratio": ratio_entries(medians["peak_rss_file"], [(large, small, None, "max")])[0]}
    for key in RATE_KEYS:
        result[f"{key}_ratio"] = ratio_entries(medians[key], [(large, small, None, "min")])[0]
    result["of_plain_per_cpu_s"] = {name: medians["samples_per_cpu_s"][name] / medians["plain_samples_per_cpu_s"][name]
                                    for name in folders}
    return result


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def padding_lines(part: Result, batch_size: int) -> list[str]:
    lines = [f"**Padding, one epoch in batches of {batch_size}** (rows padded to each batch's longest record):", "",
             "| bucket_by_length | padded rows | real rows | padding |", "|---|---:|---:|---:|"]
    for name, flag in (("plain", "False"), ("bucketed", "True")):
        row = part[name]
        lines.append(f"| {flag} | {row['padded_rows']:,} | {row['real_rows']:,} | {_share(row['padding_share'])} |")
    return [*lines, "", f"Bucketing pads {_share(part['padded_rows_saved_share'])} fewer rows."]


def memory_lines(part: Result, sets: Result) -> list[str]:
    median = part["median"]
    lines = [f"**Reading {part['batches']:,} random batches**, each set in a fresh child process, median "
             f"of {len(part['rounds'])} alternating rounds (page cache warm):", "",
             "| set | training records | their shards | RssAnon after imports | peak RssAnon | peak RssFile |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, stats in sets.items():
        lines.append(f"| {name} | {stats['samples']:,} | {stats['train_shard_bytes'] / MB:,.0f} MB "
                     f"| {median['baseline_rss_anon'][name] / MB:,.0f} MB "
                     f"| {median['peak_rss_anon'][name] / MB:,.0f} MB | {median['peak_rss_file'][name] / MB:,.0f} MB |")
    anon, rate = part["rss_anon_ratio"], part["samples_per_s_ratio"]
    met = "met" if anon["met"] else "NOT met"
    return [*lines, "", f"Peak RssAnon {anon['numerator']} / {anon['denominator']}: {anon['value']:.2f}x (goal at "
                        f"most {anon['goal']:.2f}x: {met}); peak RssFile {part['rss_file_ratio']['value']:.2f}x; "
                        f"samples/s {rate['value']:.2f}x (per second of the reader's own CPU time, which other "
                        f"processes do not move: {part['samples_per_cpu_s_ratio']['value']:.2f}x).", "",
            *plain_lines(part)]


def plain_lines(part: Result) -> list[str]:
    """The bound's line: what the larger set costs bare reads of the same records, and streamload's share."""
    cpu, wall = part["plain_samples_per_cpu_s_ratio"], part["plain_samples_per_s_ratio"]
    shares = " and ".join(f"{value:.2f}x ({name})" for name, value in part["of_plain_per_cpu_s"].items())
    lines = [f"The bound, in the same child after that: the same batches' records, one bare `os.preadv` each into a "
             f"fresh buffer (byte ranges found beforehand: no checks, labels or padding): {cpu['numerator']} / "
             f"{cpu['denominator']} {cpu['value']:.2f}x per CPU second ({wall['value']:.2f}x wall clock). Per CPU "
             f"second streamload reads {shares} the samples the bare reads do. CPU time per batch, in the process's "
             "own code (user) and in the kernel for it (system), medians (the kernel splits the two by sampling at "
             "its timer tick: a few us apart is noise):", "",
             "| set | streamload user | streamload system | bare preadv user | bare preadv system |",
             "|---|---:|---:|---:|---:|"]
    median = part["median"]
    for name in part["of_plain_per_cpu_s"]:
        lines.append(f"| {name} | " + " | ".join(f"{median[key][name]:.0f} us" for key in SPLIT_KEYS) + " |")
    return lines


def markdown(results: Result) -> str:
    """The docs' block: what was read, on what, by which command; padding, then memory as the set grows."""
    machine, options, small = results["machine"], results["options"], next(iter(results["sets"].values()))
    lines = [f"{small['samples']:,} training records of `{results['source']}` (lengths {small['min_length']}"
             f"-{small['max_length']}, mean {small['mean_length']:.1f}); {cpus_and_ram(machine)}, load average "
             f"{machine['loadavg_start'][0]:.1f} at start, {machine['loadavg_end'][0]:.1f} at end (a shared machine: "
             f"compare ratios within this run); MB = 2^20 bytes. Command: `{results['command']}`", "",
             *padding_lines(results["padding"], options["batch_size"]), "",
             *memory_lines(results["memory"], results["sets"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_sequences.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a ragged dataset to measure (default: mnist-ink, built in --work)")
    parser.add_argument("--mnist", type=Path, help="MNIST folder for mnist-ink (default: $STREAMLOAD_MNIST_DIR)")
    parser.add_argument("--work", type=Path, default=Path("data/bench-sequences"),
                        help="where the sets are built (default: data/bench-sequences)")
    parser.add_argument("--factor", type=int, default=10, help="size of the larger set, in copies (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument("--batches", type=int, default=2000, help="batches read per child (default: 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the two sets (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between memory polls (default: 0.01)")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this JSON file")
    args = parser.parse_args(argv)
    if min(args.factor - 1, args.batch_size, args.batches, args.rounds) < 1 or args.interval <= 0:
        parser.error("--batch-size, --batches, --rounds, --interval must be positive and --factor at least 2")
    return args


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """The set (mnist-ink built, or ``--data``) and its ``--factor`` times larger copy, by name."""
    work = args.work.absolute()
    small = args.data.absolute() if args.data is not None else None
    if small is None:
        log(f"building mnist-ink in {work / 'ink-1x'}")
        small = build_ink(work / "ink-1x", args.mnist)
    needed = record_stats(small)["train_shard_bytes"] * args.factor  # (and refused if nothing in it is ragged)
    check_free_space(work, needed, "free some disk or pass another --work")
    large = work / f"{'ink' if args.data is None else small.name}-{args.factor}x"
    log(f"building the {args.factor}x set in {large}")
    return {"1x": small, f"{args.factor}x": build_repeated(small, large, args.factor)}


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> Result:
    folders = prepare(args)
    results: Result = {"command": command_line("scripts/benchmark_sequences.py", argv), "options": options_of(args),
                       "source": "mnist-ink" if args.data is None else args.data.name,
                       "machine": {**machine_info(args.work.absolute()), "loadavg_start": list(os.getloadavg())},
                       "sets": {name: record_stats(folder) for name, folder in folders.items()}}
    results["padding"] = padding(folders["1x"], args.batch_size, args.seed)
    log(f"reading {args.batches} batches of each set, {args.rounds} rounds")
    results["memory"] = memory(folders, args)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return measure_and_emit("benchmark_sequences.py", lambda: run(args, argv), markdown, args.json,
                            (StreamloadError, OSError, RuntimeError))
