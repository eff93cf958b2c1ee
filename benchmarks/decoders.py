"""Issue 19's decoder choice, measured: JPEG bytes in RAM to fit-ready 224x224 float32, images per second.

Each candidate decoder (Pillow, simplejpeg, PyTurboJPEG) decodes every JPEG of a photo-like, ImageNet-sized
set (200-1000 px a side, quality 90) and resizes it the way Keras does (TensorFlow's bilinear kernel without
antialias, by the read path's :func:`streamload.images.resize_opencv.resize_bilinear_fast`), in 1 or 2 threads
of this process or in 2 forked processes writing into shared memory, at full size and with reduced-size
decoding (the JPEG's DCT scaling by 2, 4 or 8, the largest that keeps the image at least the target:
libjpeg-turbo's other M/8 scales decode slower than full size, measured 0.8-1.2 ms against 0.6 ms for a 500x375 JPEG).
Beside them, in the same run:
``tf.io.decode_jpeg`` + ``tf.image.resize`` in a parallel ``tf.data`` map over the same bytes (the bound
issue 19 names), and streamload's own :func:`streamload.images.decode_batch`. No I/O, no shuffle: the
bytes are in RAM before the clock starts. A decoder that is not installed is listed as missing, not run.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from streamload.images.decode import dct_scale
from streamload.images.resize_opencv import resize_bilinear_fast

from .common import Result, emit, log, options_of

SIZE = (224, 224)
BATCH = 64
Decoder = Callable[[bytes, bool], np.ndarray]  # (JPEG bytes, reduced) -> (224, 224, 3) float32


def photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour fields at three scales plus sensor-like noise: JPEG compresses it as it does photos."""
    from PIL import Image

    layers = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 1.0), (32, 0.6), (200, 0.8)):  # ~110 KB at 500x375, as ImageNet's average file
        grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        layers += weight * np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
    layers = layers / 2.4 + rng.normal(0, 16, (height, width, 3))
    return np.clip(layers, 0, 255).astype(np.uint8)


def imagenet_like_sizes(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """(height, width) pairs spread as ImageNet's: long side about 500 (200-1000), mostly 4:3 landscape."""
    sizes = []
    for _ in range(count):
        long_side = int(np.clip(rng.normal(500, 150), 200, 1000))
        aspect = rng.choice([4 / 3, 4 / 3, 3 / 2, 1.0, 16 / 9])
        short_side = int(np.clip(long_side / aspect, 200, 1000))
        sizes.append((short_side, long_side) if rng.random() < 0.75 else (long_side, short_side))
    return sizes


def generate_jpegs(count: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    """``count`` photo-like JPEGs of ImageNet-like sizes, encoded by Pillow (4:2:0, as cameras write)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for height, width in imagenet_like_sizes(rng, count):
        buffer = io.BytesIO()
        Image.fromarray(photo_like(rng, height, width)).save(buffer, "JPEG", quality=quality)
        encoded.append(buffer.getvalue())
    return encoded


def _pillow(data: bytes, reduced: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        if reduced:
            image.draft("RGB", (SIZE[1], SIZE[0]))  # the smallest DCT scale still at least the target
        return resize_bilinear_fast(np.asarray(image.convert("RGB")), SIZE)


def _simplejpeg(data: bytes, reduced: bool) -> np.ndarray:
    import simplejpeg

    scale = {}
    if reduced:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        factor = dct_scale(height, width, SIZE)
        scale = {"min_height": height // factor, "min_width": width // factor} if factor > 1 else {}
    return resize_bilinear_fast(simplejpeg.decode_jpeg(data, "RGB", fastdct=True, **scale), SIZE)


_TURBO: list[Any] = []


def _turbojpeg(data: bytes, reduced: bool) -> np.ndarray:
    import turbojpeg

    if not _TURBO:
        _TURBO.append(turbojpeg.TurboJPEG())
    turbo = _TURBO[0]
    factor = None
    if reduced:
        width, height = turbo.decode_header(data)[:2]
        factor = (1, dct_scale(height, width, SIZE))
    pixels = turbo.decode(data, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=factor,
                          flags=turbojpeg.TJFLAG_FASTDCT)
    return resize_bilinear_fast(pixels, SIZE)


DECODERS: dict[str, tuple[str, Decoder]] = {"pillow": ("PIL", _pillow), "simplejpeg": ("simplejpeg", _simplejpeg),
                                            "pyturbojpeg": ("turbojpeg", _turbojpeg)}


def available(module: str) -> bool:
    """Whether ``module`` imports and works (PyTurboJPEG also needs the libturbojpeg system library)."""
    try:
        if module == "turbojpeg":
            import turbojpeg

            turbojpeg.TurboJPEG()
        else:
            __import__(module)
    except Exception:  # noqa: BLE001 - ImportError, or OSError/RuntimeError from a missing native library
        return False
    return True


def _batches(count: int) -> list[range]:
    return [range(start, min(start + BATCH, count)) for start in range(0, count, BATCH)]


def run_threads(decode: Decoder, encoded: list[bytes], reduced: bool, threads: int) -> float:
    """Seconds to decode every image into batches of BATCH, ``threads`` at once (1: inline, no pool)."""
    out = np.empty((BATCH, *SIZE, 3), np.float32)

    def one(pair: tuple[int, int]) -> None:
        out[pair[0]] = decode(encoded[pair[1]], reduced)

    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        for batch in _batches(len(encoded)):
            pairs = list(enumerate(batch))
            if threads == 1:
                [one(pair) for pair in pairs]
            else:
                list(pool.map(one, pairs))
        return time.perf_counter() - started


_SHARED: dict[str, Any] = {}  # what forked workers inherit: the bytes, the decoder, the shared output


def _process_task(task: tuple[int, int, int, bool]) -> None:
    start, stop, first, reduced = task
    for position in range(start, stop):
        _SHARED["out"][position] = _SHARED["decode"](_SHARED["encoded"][first + position], reduced)


def run_processes(decode: Decoder, encoded: list[bytes], reduced: bool, processes: int) -> float:
    """Seconds with ``processes`` forked workers writing into a shared output batch (their best case: no
    pickled pixels; the bytes are inherited, as a memory map of the shards would be)."""
    raw = multiprocessing.RawArray("b", BATCH * SIZE[0] * SIZE[1] * 3 * 4)
    _SHARED.update(encoded=encoded, decode=decode,
                   out=np.frombuffer(raw, np.float32).reshape(BATCH, *SIZE, 3))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_process_task, [(0, 1, 0, reduced)] * processes)  # workers started and warm
        started = time.perf_counter()
        for batch in _batches(len(encoded)):
            cuts = np.linspace(0, len(batch), processes + 1).astype(int)
            pool.map(_process_task, [(int(a), int(b), batch.start, reduced) for a, b in zip(cuts, cuts[1:])])
        return time.perf_counter() - started


def run_tf_data(encoded: list[bytes], threads: int) -> float:
    """Seconds for ``tf.io.decode_jpeg`` + ``tf.image.resize`` mapped in parallel over the bytes by tf.data
    with a private pool of ``threads`` threads (intra-op parallelism 1), batched and prefetched."""
    import tensorflow as tf

    def load(data: Any) -> Any:
        return tf.image.resize(tf.io.decode_jpeg(data, channels=3), SIZE)

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(encoded)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(BATCH).prefetch(tf.data.AUTOTUNE).with_options(options))
    started = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - started


def run_streamload(encoded: list[bytes], reduced: bool, threads: int) -> float:
    """Seconds for :func:`streamload.images.decode_batch` (what the read path runs), batch by batch."""
    from streamload.images import ImageDecodeOptions, decode_batch

    options = ImageDecodeOptions(image_size=SIZE, reduced_decode=reduced)
    views = [memoryview(data) for data in encoded]
    started = time.perf_counter()
    for batch in _batches(len(encoded)):
        decode_batch([views[index] for index in batch], list(batch), 0, 0, options, threads)
    return time.perf_counter() - started


def _best(measure: Callable[[], float], rounds: int) -> float:
    return min(measure() for _ in range(rounds))


def _row(name: str, parallel: str, workers: int, reduced: bool | None, seconds: float, count: int) -> Result:
    row = {"decoder": name, "parallel": parallel, "workers": workers, "reduced": reduced, "seconds": seconds,
           "images_per_s": count / seconds}
    log(f"{name:>12} {parallel:>9} x{workers} reduced={reduced}: {row['images_per_s']:,.0f} images/s")
    return row


def measure_all(encoded: list[bytes], args: argparse.Namespace) -> list[Result]:
    """Every candidate x parallelism x reduced decoding, then tf.data and streamload, best of ``rounds``."""
    count, rows = len(encoded), []
    for name, (module, decode) in DECODERS.items():
        if name not in args.decoders or not available(module):
            continue
        for reduced in (False, True):
            for threads in args.threads:
                seconds = _best(partial(run_threads, decode, encoded, reduced, threads), args.rounds)
                rows.append(_row(name, "threads", threads, reduced, seconds, count))
            if args.processes:
                seconds = _best(partial(run_processes, decode, encoded, reduced, args.processes), args.rounds)
                rows.append(_row(name, "processes", args.processes, reduced, seconds, count))
    if "tf.data" in args.decoders and available("tensorflow"):
        for threads in args.threads:
            seconds = _best(partial(run_tf_data, encoded, threads), args.rounds)
            rows.append(_row("tf.data", "tf.data", threads, None, seconds, count))
    if "streamload" in args.decoders:
        for reduced in (False, True):
            for threads in args.threads:
                seconds = _best(partial(run_streamload, encoded, reduced, threads), args.rounds)
                rows.append(_row("streamload", "threads", threads, reduced, seconds, count))
    return rows


def _cell(rows: list[Result], decoder: str, parallel: str, workers: int, reduced: bool | None) -> str:
    found = [row for row in rows if (row["decoder"], row["parallel"], row["workers"], row["reduced"])
             == (decoder, parallel, workers, reduced)]
    return f"{found[0]['images_per_s']:,.0f}" if found else "-"


def markdown(results: Result) -> str:
    rows, info = results["runs"], results["images"]
    columns = list(dict.fromkeys((row["parallel"], row["workers"]) for row in rows if row["parallel"] != "tf.data"))
    lines = [f"{info['count']:,} JPEGs (mean {info['mean_height']:.0f}x{info['mean_width']:.0f}, "
             f"{info['mean_bytes'] / 1024:.0f} KiB, quality 90) to {SIZE[0]}x{SIZE[1]} float32, images/s, "
             f"best of {results['options']['rounds']}; load average before {results['loadavg_before']}", "",
             "| decoder | reduced decode | " + " | ".join(f"{workers} {parallel}" for parallel, workers in columns)
             + " |", "|---|---|" + "---:|" * len(columns)]
    decoders = dict.fromkeys(row["decoder"] for row in rows if row["decoder"] != "tf.data")
    for decoder in decoders:
        for reduced in (False, True):
            cells = [_cell(rows, decoder, parallel, workers, reduced) for parallel, workers in columns]
            lines.append(f"| {decoder} | {'on' if reduced else 'off'} | " + " | ".join(cells) + " |")
    tf_rows = [row for row in rows if row["decoder"] == "tf.data"]
    if tf_rows:
        lines += ["", "| tf.data decode_jpeg + resize | " + " | ".join(f"{row['workers']} threads" for row in tf_rows)
                  + " |", "|---|" + "---:|" * len(tf_rows),
                  "| images/s | " + " | ".join(f"{row['images_per_s']:,.0f}" for row in tf_rows) + " |"]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_decoders.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="JPEGs to generate (default: 300)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measurement; the best counts (3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("--processes", type=int, default=2, help="forked workers for the process rows; 0: none")
    parser.add_argument("--decoders", nargs="+", default=[*DECODERS, "tf.data", "streamload"],
                        help="which to measure (default: all)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1 or min(args.threads) < 1 or args.processes < 0:
        parser.error("--count, --rounds and --threads must be positive, --processes 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    encoded = generate_jpegs(args.count)
    log(f"generated {args.count:,} JPEGs in {time.perf_counter() - started:.1f} s")
    shapes = [_jpeg_size(data) for data in encoded]
    loadavg_before = os.getloadavg()[0]
    rows = measure_all(encoded, args)
    results = {"options": options_of(args), "nproc": os.cpu_count(), "loadavg_before": round(loadavg_before, 2),
               "loadavg_after": round(os.getloadavg()[0], 2),
               "images": {"count": len(encoded), "mean_bytes": float(np.mean([len(data) for data in encoded])),
                          "mean_height": float(np.mean([shape[0] for shape in shapes])),
                          "mean_width": float(np.mean([shape[1] for shape in shapes]))},
               "runs": rows}
    emit(results, markdown(results), args.json)
    return 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size[1], image.size[0]
