"""Issue 19 §4: JPEG folders into fit-ready 224x224 float32 batches, streamload next to every peer, one run.

Generates an ImageNet-shaped class folder (:func:`benchmarks.decoders.generate_jpegs`: photo-like content,
200-1000 px a side, quality 90), copies the same JPEG bytes into each store (streamload encoded and
decoded shards by the real ``scripts/build_shards.py``, TFRecord, ArrayRecord, WebDataset tars), first
checks that every pipeline decodes the same images (unshuffled: equal labels, and pixels equal to the
reference of the same decoder within the documented IDCT tolerance), then measures images per second in
interleaved rounds (:mod:`benchmarks.rounds`), each pass a fresh child process polled for peak RssAnon
(:mod:`benchmarks.images_pipelines` says how each pipeline is written), for two cases: resize only, and
random-resized crop + horizontal flip. Each child runs ``--passes`` passes (default 2), each over its pipeline
made afresh: the first pays what a fresh process pays (thread and pool start-up, first use of every buffer,
OpenBLAS' start-up spin), the last is the steady state a training run spends its time in; both are
reported, and the goals are judged on each. ``--growth`` adds one pass of every pipeline over the set and over
one ``--growth-factor`` times larger, for the RssAnon each needs as the set grows.

The streamload encoded rows need ``build_shards.py --store encoded`` (issue 19 §2); where this checkout's
build script has no such option they are listed as not run, never estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamload.base.procstats import drop_page_cache

from .common import (
    BUILD_SCRIPT,
    REPO_ROOT,
    command_line,
    log,
    machine_info,
    measure_and_emit,
    options_of,
    run_sampled,
)
from .images_pipelines import (
    BOUNDS,
    CASES,
    DECODED,
    DECODER_OF,
    ENCODED,
    ENCODED_COLD,
    ENCODED_REDUCED,
    ENCODED_WARM,
    GRAIN,
    KERAS,
    PIPELINES,
    SIZE,
    TFRECORD,
    WEBDATASET,
    Layout,
    runs_case,
)
from .images_report import markdown
from .rounds import Goal, NullProgress, ratio_entries, rotated, summarize

Result = dict[str, Any]
PARTS_PER_FILE = 1_024  # images per TFRecord, ArrayRecord and tar file (~110 MB)
# max |difference| of 0..255 pixels allowed against the reference of a pipeline's decoder family: the same
# decoder gives float rounding; Pillow's accurate IDCT and uint8 rounding (the decoded store) differ from
# TensorFlow's fast one "by a few levels (up to about 4 after resizing, measured)" (docs/your-own-data.md)
TOLERANCE = {"tensorflow": 0.01, "reduced": 0.01, "pillow": 4.5}
REFERENCE_OF = {"tensorflow": "tensorflow", "reduced": "reduced", "pillow": "tensorflow"}
FLAT_RSS_GOAL = 1.1  # peak RssAnon at the larger set / at the smaller: "flat"
WHEN_MISSING = {
    ENCODED_WARM: "needs `build_shards.py --store encoded` (issue 19 §2), which this checkout does not have",
    GRAIN: "grain / array_record not installed", WEBDATASET: "webdataset not installed"}


# ---------------------------------------------------------------- the data

def has_encoded_store() -> bool:
    """Whether this checkout's build script takes ``--store encoded``."""
    shown = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--help"], capture_output=True, text=True).stdout
    return "--store" in shown


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def available(name: str) -> bool:
    if name in ENCODED:
        return has_encoded_store()
    if name == GRAIN:
        return _installed("grain") and _installed("array_record")
    if name == WEBDATASET:
        return _installed("webdataset")
    return True


def generate_folder(layout: Layout, images: int, classes: int, seed: int) -> None:
    """``images`` JPEGs in ``classes`` class folders (image i in class i mod classes), and ``files.json``."""
    from .decoders import generate_jpegs

    expected = {"images": images, "classes": classes, "seed": seed}
    if layout.listing.is_file() and json.loads(layout.listing.read_text())["generated"] == expected:
        return
    if layout.root.exists():
        shutil.rmtree(layout.root)
    started, files = time.perf_counter(), []
    for first in range(0, images, 256):  # in chunks: the set never sits in RAM whole
        for offset, data in enumerate(generate_jpegs(min(256, images - first), seed=seed + first)):
            index = first + offset
            name = f"class{index % classes:03d}/img{index:07d}.jpg"
            (layout.photos / name).parent.mkdir(parents=True, exist_ok=True)
            (layout.photos / name).write_bytes(data)
            files.append((name, index % classes))
    files.sort()  # Keras' order: class folders, then file names, alphanumerically
    layout.listing.write_text(json.dumps({"generated": expected, "files": files}))
    log(f"generated {images:,} JPEGs in {layout.photos} in {time.perf_counter() - started:.0f} s")


def _records(layout: Layout) -> Any:
    for name, label in layout.files():
        yield (layout.photos / name).read_bytes(), label


def _write_parts(folder: Path, suffix: str, write: Callable[[Path, list[tuple[bytes, int]], int], None],
                 layout: Layout) -> None:
    """The images in files of PARTS_PER_FILE, written once (a ``complete`` marker)."""
    if (folder / "complete").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chunk: list[tuple[bytes, int]] = []
    count = first = 0
    for record in _records(layout):
        chunk.append(record)
        if len(chunk) == PARTS_PER_FILE:
            write(folder / f"part-{count:05d}.{suffix}", chunk, first)
            count, first, chunk = count + 1, first + len(chunk), []
    if chunk:
        write(folder / f"part-{count:05d}.{suffix}", chunk, first)
    (folder / "complete").write_text("")


def _tfrecord_part(path: Path, chunk: list[tuple[bytes, int]], first: int) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in chunk:
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _arrayrecord_part(path: Path, chunk: list[tuple[bytes, int]], first: int) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")  # Grain's advice for random access
    for image, label in chunk:
        writer.write(pickle.dumps({"image": image, "label": label}))
    writer.close()


def _webdataset_part(path: Path, chunk: list[tuple[bytes, int]], first: int) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path)) as writer:
        for offset, (image, label) in enumerate(chunk):
            writer.write({"__key__": f"{first + offset:08d}", "jpg": image, "cls": label})


def _build(layout: Layout, out: Path, *options: str) -> None:
    if (out / "manifest.json").is_file():
        return
    command = [sys.executable, str(BUILD_SCRIPT), "--source", str(layout.photos), "--out", str(out), "--quiet",
               *options]
    log("building: " + " ".join(command[1:]))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def prepare(layout: Layout, images: int, classes: int, seed: int, names: Sequence[str]) -> None:
    """The folder and every copy the pipelines in ``names`` read, each made once."""
    generate_folder(layout, images, classes, seed)
    if any(name in ENCODED for name in names):
        _build(layout, layout.encoded, "--store", "encoded")
    if DECODED in names:
        _build(layout, layout.decoded, "--image-size", str(SIZE[0]), str(SIZE[1]))
    if TFRECORD in names:
        _write_parts(layout.tfrecord, "tfrecord", _tfrecord_part, layout)
    if GRAIN in names:
        _write_parts(layout.arrayrecord, "array_record", _arrayrecord_part, layout)
    if WEBDATASET in names:
        _write_parts(layout.webdataset, "tar", _webdataset_part, layout)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def disk_bytes(layout: Layout) -> dict[str, int | None]:
    """What each pipeline keeps on disk (None: it reads from RAM)."""
    folders = {ENCODED_WARM: layout.encoded, ENCODED_COLD: layout.encoded, ENCODED_REDUCED: layout.encoded,
               DECODED: layout.decoded,
               KERAS: layout.photos, TFRECORD: layout.tfrecord, GRAIN: layout.arrayrecord,
               WEBDATASET: layout.webdataset}
    return {name: folder_bytes(folder) if folder.exists() else None for name, folder in folders.items()}


# ---------------------------------------------------------------- one pass in a child

def run_child(layout: Layout, name: str, case: str, args: argparse.Namespace, check: int = 0,
              passes: int = 1) -> Result:
    """``passes`` passes of ``name`` in a fresh process (the cold one: its first only, the page cache dropped
    before it); the last pass's figures, every pass's, and the peaks polled from outside."""
    cold = name == ENCODED_COLD
    passes = 1 if cold else passes
    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch, "result.json")
        command = [sys.executable, "-m", "benchmarks.images_pipelines", "--pipeline", name, "--case", case,
                   "--data", str(layout.root), "--result", str(result_file), "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads), "--seed", str(args.seed), "--check", str(check),
                   "--passes", str(passes)]
        if cold:
            drop_page_cache(layout.encoded)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
        with open(Path(scratch, "log"), "w+b") as output:
            status, seconds, sampler = run_sampled(command, 0.01, output, env=env)
            output.seek(0)
            text = output.read().decode(errors="replace")
        if cold:
            warm_files(layout.encoded)  # the next warm pass finds the page cache as before
        if status != 0:
            raise RuntimeError(f"{name} ({case}) failed with status {status}:\n{text[-3000:]}")
        result = json.loads(result_file.read_text())
        if check:
            with np.load(result_file.with_suffix(".npz")) as kept:
                result["kept"] = kept["x"], kept["y"]
    result.update(process_seconds=seconds, peak_rss_anon=sampler.peak.rss_anon if sampler else None,
                  peak_rss_file=sampler.peak.rss_file if sampler else None, cold=cold)
    return result


def warm_files(folder: Path) -> None:
    """Read every file of ``folder`` once, so that it sits in the page cache."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as file:
                while file.read(1 << 22):
                    pass


# ---------------------------------------------------------------- same images first

def references(layout: Layout, count: int) -> dict[str, np.ndarray]:
    """The first ``count`` images decoded by each decoder family, in this process, straight from the files."""
    import tensorflow as tf

    from .images_pipelines import decode_resize, tf_decode_resize

    encoded = [(layout.photos / name).read_bytes() for name, _ in layout.files()[:count]]
    return {"tensorflow": np.stack([tf_decode_resize(tf.constant(data)).numpy() for data in encoded]),
            "reduced": np.stack([decode_resize(data) for data in encoded])}


def integrity(layout: Layout, names: Sequence[str], args: argparse.Namespace) -> Result:
    """Every pipeline unshuffled, resize case: its count, its first images' labels and pixels vs the reference."""
    count = min(args.check_images, len(layout.files()))
    wanted = np.array([label for _, label in layout.files()[:count]])
    refs, checks = references(layout, count), {}
    for name in names:
        result = run_child(layout, name, "resize", args, check=count)
        x, y = result.pop("kept")
        if name == DECODED:
            x = x * np.float32(255)  # the decoded store's default normalising (the build's 1/255 scale)
        family = DECODER_OF[name]
        difference = np.abs(x.astype(np.float64) - refs[REFERENCE_OF[family]])
        checks[name] = {"images": result["images"], "checked": int(len(x)), "labels_equal": bool(np.array_equal(y,
                        wanted)), "decoder": family, "reference": REFERENCE_OF[family],
                        "max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean()),
                        "tolerance": TOLERANCE[family]}
        checks[name]["ok"] = bool(checks[name]["labels_equal"] and result["images"] == len(layout.files())
                                  and checks[name]["max_abs_diff"] <= TOLERANCE[family])
        log(f"check {name}: {checks[name]}")
    failed = [name for name, check in checks.items() if not check["ok"]]
    if failed:
        raise RuntimeError(f"pipelines that do not deliver the same images: {failed}: "
                           + json.dumps({name: checks[name] for name in failed}))
    return checks


# ---------------------------------------------------------------- rounds, goals, growth

def case_goals(case: str, medians: dict[str, float]) -> list[Goal]:
    """Issue 19's goals in ``case``: encoded >= 1.2x Keras, >= 0.8x the faster plain decode bound."""
    bounds = [name for name in BOUNDS if name in medians]
    faster = max(bounds, key=medians.__getitem__) if bounds else BOUNDS[0]
    goals: list[Goal] = [(ENCODED_WARM, KERAS, 1.2, "min"), (ENCODED_WARM, faster, 0.8, "min"),
                         (ENCODED_COLD, ENCODED_WARM, None, "min"), (ENCODED_WARM, TFRECORD, None, "min"),
                         (ENCODED_WARM, GRAIN, None, "min"), (ENCODED_WARM, WEBDATASET, None, "min")]
    if case == "resize":
        goals += [(ENCODED_WARM, DECODED, None, "min"), (DECODED, KERAS, None, "min"),
                  (ENCODED_REDUCED, KERAS, None, "min"), (ENCODED_REDUCED, faster, None, "min")]
    return goals


def pass_rounds(rounds: list[Result], number: int) -> list[Result]:
    """The rounds' figures of pass ``number`` (0: the first), of the pipelines that ran that many passes."""
    return [{"results": {name: result["passes"][number] for name, result in one["results"].items()
                         if len(result["passes"]) > number}} for one in rounds]


def pass_figures(rounds: list[Result], case: str) -> Result:
    """Medians and spread of images/s, median images per CPU second, and the goals, of one pass's rounds."""
    medians = summarize(rounds, "images_per_s")
    per_cpu = {name: statistics.median(one["results"][name]["timed_images"]
                                       / max(one["results"][name]["timed_cpu_seconds"], 1e-9) for one in rounds)
               for name in medians["median"]}  # the images and the CPU time after the first batch, as the rate
    return {"median_images_per_s": medians["median"], "min_max_images_per_s": medians["min_max"],
            "median_images_per_cpu_s": per_cpu,
            "ratios": ratio_entries(medians["median"], case_goals(case, medians["median"]))}


def run_case(layout: Layout, case: str, names: Sequence[str], args: argparse.Namespace, progress: Any) -> Result:
    """Every pipeline of ``case`` once per round, the order rotating; medians and goals of this run."""
    contenders = [name for name in names if runs_case(name, case)]
    rounds = []
    for number in range(args.rounds):
        order = rotated(contenders, number)
        results = {}
        for name in order:
            progress.set_postfix_str(f"{case}: {name}")
            results[name] = run_child(layout, name, case, args, passes=args.passes)
            progress.update()
        rounds.append({"order": order, "results": results})
    rss = summarize(rounds, "peak_rss_anon")["median"]
    images = {name: sorted({one_pass["images"] for one in rounds for one_pass in one["results"][name]["passes"]})
              for name in contenders}
    if any(counts != [len(layout.files())] for counts in images.values()):
        raise RuntimeError(f"{case}: a pipeline did not deliver every image once per pass: {images}")
    return {"pipelines": contenders, "rounds": rounds, "passes": args.passes, "median_peak_rss_anon": rss,
            **pass_figures(pass_rounds(rounds, args.passes - 1), case),
            "first_pass": pass_figures(pass_rounds(rounds, 0), case)}


def growth(args: argparse.Namespace, names: Sequence[str], progress: Any) -> Result:
    """One resize pass of every pipeline over the set and over a ``growth_factor`` times larger one: peak RssAnon."""
    sizes = [args.images, args.images * args.growth_factor]
    runs: dict[str, dict[str, Result]] = {}
    for size in sizes:
        layout = Layout(args.data / f"set-{size}")
        prepare(layout, size, args.classes, args.seed, names)
        warm_files(layout.root)
        for name in names:
            progress.set_postfix_str(f"growth {size}: {name}")
            result = run_child(layout, name, "resize", args)
            runs.setdefault(name, {})[str(size)] = {key: result[key] for key in
                                                    ("images", "images_per_s", "peak_rss_anon", "peak_rss_file")}
            progress.update()
    ratios = {name: by[str(sizes[1])]["peak_rss_anon"] / by[str(sizes[0])]["peak_rss_anon"]
              for name, by in runs.items()}
    flat = ratio_entries({"larger": ratios.get(ENCODED_WARM, float("nan")), "smaller": 1.0},
                         [("larger", "smaller", FLAT_RSS_GOAL, "max")]) if ENCODED_WARM in ratios else []
    return {"sizes": sizes, "runs": runs, "rss_anon_ratio": ratios, "goal": flat[0] if flat else None}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_images.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/bench-images"),
                        help="folder of the generated sets and their copies, made once (default: data/bench-images)")
    parser.add_argument("--images", type=int, default=1_500, help="JPEGs in the set (default: 1500)")
    parser.add_argument("--classes", type=int, default=10, help="class folders (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (default: 3)")
    parser.add_argument("--passes", type=int, default=2,
                        help="passes per fresh process; the last is the steady state (default: 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="decoding threads of the pipelines that take a count (default: the usable cores)")
    parser.add_argument("--seed", type=int, default=0, help="generation and shuffling seed (default: 0)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="default: both")
    parser.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES),
                        help="default: every one whose library and store are here")
    parser.add_argument("--check-images", type=int, default=32,
                        help="images compared pixel by pixel in the check that comes first (default: 32)")
    parser.add_argument("--growth", action="store_true",
                        help="add one pass of every pipeline over a --growth-factor times larger set: its RssAnon")
    parser.add_argument("--growth-factor", type=int, default=10, help="(default: 10)")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if min(args.images, args.classes, args.rounds, args.passes, args.batch_size, args.threads,
           args.growth_factor) < 1 \
            or args.check_images < 0:
        parser.error("--images, --classes, --rounds, --passes, --batch-size, --threads, --growth-factor must be "
                     "positive")
    if args.classes > args.images:
        parser.error("--classes cannot exceed --images")
    return args


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> Result:
    import keras
    import tensorflow as tf

    args.data = args.data.absolute()
    names = [name for name in PIPELINES if name in args.pipelines and available(name)]
    skipped = {name: WHEN_MISSING.get(name, WHEN_MISSING[ENCODED_WARM] if name in ENCODED else "not available")
               for name in PIPELINES if name in args.pipelines and name not in names}
    for name, why in skipped.items():
        log(f"not run: {name}: {why}")
    layout = Layout(args.data / f"set-{args.images}")
    prepare(layout, args.images, args.classes, args.seed, names)
    warm_files(layout.root)
    files = layout.files()
    source = folder_bytes(layout.photos)
    results: Result = {
        "command": command_line("scripts/benchmark_images.py", argv), "options": options_of(args),
        "machine": {**machine_info(args.data), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "loadavg_start": list(os.getloadavg())},
        "images": {"count": len(files), "classes": args.classes, "source_bytes": source,
                   "mean_bytes": source / len(files)},
        "not_run": skipped, "disk_bytes": disk_bytes(layout)}
    results["disk_per_source"] = {name: None if size is None else size / source
                                  for name, size in results["disk_bytes"].items()}
    if ENCODED_WARM in names:
        results["disk_goal"] = ratio_entries({"encoded": results["disk_bytes"][ENCODED_WARM], "source": source},
                                             [("encoded", "source", 1.02, "max")])[0]
    passes = (len(names) + args.rounds * sum(sum(runs_case(name, case) for name in names) for case in args.cases)
              + (2 * len(names) if args.growth else 0))
    with tqdm(total=passes, unit="pass", file=sys.stderr, disable=args.no_progress) as progress:
        progress.set_postfix_str("same images check")
        results["integrity"] = integrity(layout, names, args)
        progress.update(len(names))
        results["cases"] = {case: run_case(layout, case, names, args, progress) for case in args.cases}
        if args.growth:
            results["growth"] = growth(args, names, progress)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return measure_and_emit("benchmark_images.py", lambda: run(args, argv), markdown, args.json,
                            (RuntimeError, subprocess.CalledProcessError))


__all__ = ["NullProgress", "main", "parse_args", "run"]
