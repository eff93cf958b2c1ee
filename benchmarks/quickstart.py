"""How long the README's quick start takes once the packages are installed: the MNIST build, then one
epoch of the tutorial's CNN, each the real script in a child process, timed end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import BUILD_SCRIPT, cpus_and_ram, emit, machine_info, options_of

Result = dict[str, Any]
TRAIN_SCRIPT = BUILD_SCRIPT.with_name("train.py")


def timed(command: list[str]) -> float:
    """Seconds ``command`` took; its output passes through, a failure stops the benchmark."""
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def markdown(results: Result) -> str:
    build, train = results["build_seconds"], results["train_seconds"]
    return (f"`build_shards.py` then `train.py --epochs {results['options']['epochs']}`: {build + train:.0f} s end to "
            f"end (build {build:.1f} s, training {train:.1f} s) on {cpus_and_ram(results['machine'])}, packages "
            f"already installed; test accuracy {100 * results['metrics']['test_accuracy']:.1f}% "
            "(`scripts/time_quickstart.py`).\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="time_quickstart.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/quickstart"), help="dataset and model go here")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    out, metrics = args.workdir.absolute(), args.workdir.absolute() / "metrics.json"
    out.mkdir(parents=True, exist_ok=True)
    build = timed([sys.executable, str(BUILD_SCRIPT), "--format", "npy", "--out", str(out / "mnist"), "--overwrite"])
    train = timed([sys.executable, str(TRAIN_SCRIPT), "--data", str(out / "mnist"), "--epochs", str(args.epochs),
                   "--model-out", str(out / "model.keras"), "--json", str(metrics)])
    results = {"machine": machine_info(out), "options": options_of(args), "build_seconds": build,
               "train_seconds": train, "metrics": json.loads(metrics.read_text())}
    emit(results, markdown(results), args.json)
    return 0
