"""Every figure the README and docs/ quote, rendered from the result files the benchmark scripts write.

A document marks each rendered block with the file it comes from::

    <!-- results: results/loaders.json headline -->
    ...Markdown rendered by ``render("results/loaders.json", "headline")``...
    <!-- end results -->

``python3 -m benchmarks.report README.md docs/*.md`` rewrites every block from its file (``--check``
only says which differ); ``tests/test_readme.py`` fails when one differs, so no figure is typed by
hand and none outlives the measurement it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import (
    build_images,
    build_report,
    images_report,
    loaders_report,
    memory_report,
    object_store_report,
    quickstart,
    s3_clients,
    sequences,
)
from .common import cpus_and_ram

Result = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- results: (?P<file>\S+)(?: (?P<view>\S+))? -->\n)(?P<body>.*?)(<!-- end results -->)",
                   re.DOTALL)


def loaders_headline(results: Result) -> str:
    """The README's table: a few loaders' warm samples/s against the in-RAM bound, and fit's epoch ratio."""
    warm = results["warm"]
    medians = warm["median_samples_per_s"]
    bound = medians[loaders_report.IN_RAM]
    lines = [f"One epoch of MNIST train ({warm['samples']:,} samples, batch {warm['batch_size']}, exact shuffle, "
             f"page cache warm), median of {len(warm['rounds'])} rounds on {cpus_and_ram(results['machine'])}:", "",
             "| loader | samples/s | vs in-RAM loop |", "|---|---:|---:|"]
    for name in (loaders_report.IN_RAM, loaders_report.NPY, loaders_report.HDF5, loaders_report.LOADER,
                 loaders_report.TFRECORD, loaders_report.TUTORIAL):
        if name in medians:
            lines.append(f"| {name} | {medians[name]:,.0f} | {medians[name] / bound:.2f}x |")
    if "fit" in results:
        fit = results["fit"]["ratios"][0]
        lines += ["", f"`model.fit` epochs of the tutorial CNN from the generator take {fit['value']:.2f}x the time "
                      "of `fit` on the same arrays in RAM."]
    return "\n".join(lines) + "\n"


def memory_headline(results: Result) -> str:
    """Peak heap (RssAnon) added by each loader over one pass, the figure that runs a machine out of RAM."""
    lines = ["| samples | loader | through | peak RssAnon | added by loader |", "|---:|---|---|---:|---:|"]
    for run in results["runs"]:
        if run["status"] == "ok":
            row = memory_report._run_row(run).split(" | ")
            lines.append(" | ".join([*row[:3], row[5], row[6]]) + " |")
    return "\n".join(lines) + "\n"


VIEWS: dict[tuple[str, str | None], Callable[[Result], str]] = {
    ("loaders", None): loaders_report.markdown,
    ("loaders", "headline"): loaders_headline,
    ("build", None): build_report.markdown,
    ("build-images", None): build_images.markdown,
    ("images", None): images_report.markdown,
    ("images", "headline"): images_report.headline,
    ("memory", None): memory_report.markdown,
    ("memory", "headline"): memory_headline,
    ("quickstart", None): quickstart.markdown,
    ("s3-clients", None): s3_clients.markdown,
    ("object-store", None): object_store_report.markdown,
    ("sequences", None): sequences.markdown,
}


def render(file: str | Path, view: str | None = None) -> str:
    """The Markdown for ``file`` (a result file, relative to the repository) seen as ``view``."""
    path = ROOT / file
    results = json.loads(path.read_text(encoding="utf-8"))
    text = VIEWS[(path.stem, view)](results)
    return text if text.endswith("\n") else text + "\n"


def blocks(text: str) -> list[tuple[str, str | None, str]]:
    """(file, view, body) of every results block of a document."""
    return [(m["file"], m["view"], m["body"]) for m in BLOCK.finditer(text)]


def refresh(text: str) -> str:
    """``text`` with every results block rendered again from its file."""
    return BLOCK.sub(lambda m: m.group(1) + render(m["file"], m["view"]) + m.group(5), text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only list the documents whose blocks are stale")
    args = parser.parse_args(argv)
    stale = []
    for document in args.documents:
        text = document.read_text(encoding="utf-8")
        fresh = refresh(text)
        if fresh != text:
            stale.append(str(document))
            if not args.check:
                document.write_text(fresh, encoding="utf-8")
    if stale:
        print(("stale: " if args.check else "rewritten: ") + ", ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
