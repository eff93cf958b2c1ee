"""One measured case of the object store benchmark, in a process of its own (no client, pool or reader cache
outlives it): ``python3 -m benchmarks.object_store_child SPEC.json`` prints one JSON line of figures.

The cases (``spec["kind"]``):

- ``get``: every shard file of the split, one GET after another, through streamload's own store (boto3,
  as configured for reading shards) into a sink that only counts: the bandwidth bound;
- ``ranges``: ``spec["ranges"]`` GETs of one sample's row each (the feature's bytes of a random sample of a
  random shard), ``spec["depth"]`` in flight, plain boto3 threads: the request bound. From the objects as
  ``build_shards.py --upload`` wrote them (multipart, for files over 8 MB), or from ``spec["copies"]``, a folder
  of the bucket where each was written by one PUT (SeaweedFS serves ranges of those faster). ``depth`` of them are
  read first, untimed, so the pool's connections are open, as they are after an exact order's first batch;
  the bytes are checked against the local copy after the clock stops;
- ``loader``: one epoch of ``BatchLoader`` over ``spec["location"]`` (a bucket URL or a local folder) in
  ``spec["shuffle"]`` order, ``spec["cache_dir"]`` its shard cache (an empty folder: a cold cache),
  ``spec["loader_options"]`` passed on (the JPEG set's ``image_size``).

Each reports seconds, samples, the bytes it delivered, its CPU seconds (every thread) and the peak RssAnon
and RssFile polled during the timed part. The endpoint comes from the AWS environment the parent sets.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import PeakMemorySampler
from streamload.format.manifest import Manifest, read_manifest
from streamload.places.bucket import BucketPlace

Result = dict[str, Any]
SPLIT = "train"


class CountingSink:
    """An ObjectSink that keeps nothing: the bytes of a GET, counted (a retried try counts from zero)."""

    def __init__(self) -> None:
        self.bytes = 0

    def restart(self) -> None:
        self.bytes = 0

    def write(self, data: memoryview) -> None:
        self.bytes += len(data)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sample_ranges(manifest: Manifest, count: int, seed: int) -> Result:
    """``count`` random samples as (shard, start, end) of their feature row in the shard's file."""
    split = manifest.split(SPLIT)
    feature = manifest.features[0]
    row = split.arrays[feature].sample_bytes
    sizes = np.array([shard.num_samples for shard in split.shards])
    rng = np.random.default_rng(seed)
    shards = rng.choice(len(sizes), count, p=sizes / sizes.sum())
    rows = rng.integers(0, sizes[shards])
    data_start = np.array([shard.files[feature].bytes - shard.num_samples * row for shard in split.shards])
    starts = data_start[shards] + rows * row
    return {"feature": feature, "shard": shards.tolist(), "start": starts.tolist(),
            "end": (starts + row).tolist()}


def _measured(run: Callable[[], tuple[int, int]]) -> Result:
    """``run()`` -> (samples, bytes delivered), timed, with its CPU seconds and peak memory."""
    sampler = PeakMemorySampler(interval=0.01).start()
    cpu, started = _cpu_seconds(), time.perf_counter()
    samples, delivered = run()
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    peak = sampler.stop()
    return {"seconds": seconds, "samples": samples, "delivered_bytes": delivered, "cpu_s": cpu,
            "peak_rss_anon": peak.rss_anon, "peak_rss_file": peak.rss_file}


def run_get(spec: Result) -> Result:
    """Every file of every shard, in order, one GET at a time."""
    place = BucketPlace(spec["location"])
    hold = place.open()
    split = hold.manifest.split(SPLIT)
    table, _ = place.shard_table(hold, split)
    keys, sizes = table.keys.tolist(), table.sizes.tolist()

    def run() -> tuple[int, int]:
        total = 0
        for key, size in zip(keys, sizes):
            sink = CountingSink()
            place.store.get_into(key, sink)
            if sink.bytes != size:
                raise RuntimeError(f"{spec['location']}/{key}: {sink.bytes} bytes fetched, the manifest says {size}")
            total += sink.bytes
        return split.num_samples, total

    return _measured(run)


def run_ranges(spec: Result) -> Result:
    """Random one-sample ranges, ``depth`` in flight; then checked against the same ranges of the local files."""
    from .s3_clients import Boto3Client

    place = BucketPlace(spec["location"])
    hold = place.open()
    ranges = sample_ranges(hold.manifest, spec["ranges"], spec["seed"])
    files = [shard.files[ranges["feature"]].name for shard in hold.manifest.split(SPLIT).shards]
    folder = spec.get("copies") or place.url.key(str(hold.generation))  # the uploaded objects, or copies of them
    keys = [f"{folder}/{files[shard]}" for shard in ranges["shard"]]
    client = Boto3Client(place.url.bucket)
    client.get_ranges(keys[:spec["depth"]], ranges["start"], ranges["end"], spec["depth"])  # the connections open
    parts: list[bytes] = []

    def run() -> tuple[int, int]:
        parts.extend(client.get_ranges(keys, ranges["start"], ranges["end"], spec["depth"]))
        return len(parts), sum(len(part) for part in parts)

    result = _measured(run)
    local = read_manifest(spec["local"])
    root = Path(spec["local"]) / str(local.generation)
    maps = {name: np.memmap(root / name, np.uint8, "r") for name in set(files)}
    expected = hashlib.sha256(b"".join(maps[files[s]][a:b].tobytes()
                                       for s, a, b in zip(ranges["shard"], ranges["start"], ranges["end"])))
    if hashlib.sha256(b"".join(parts)).hexdigest() != expected.hexdigest():
        raise RuntimeError(f"{spec['location']}: the ranges read differ from the same ranges of {spec['local']}")
    return result


def stored_bytes_per_sample(loader: Any) -> float:
    """The bytes a sample keeps on disk: its rows, or for records of varying length (JPEGs) the split's
    shard files over its samples."""
    arrays = loader.dataset.info.arrays
    if not any(arrays[key].ragged for key in loader.keys):
        return sum(arrays[key].sample_bytes for key in loader.keys)
    split = loader.dataset.manifest.split(SPLIT)
    return split.file_bytes / split.num_samples


def run_loader(spec: Result) -> Result:
    """One epoch of ``BatchLoader``, batch by batch, as a training loop asks for them."""
    from streamload.read.loader import BatchLoader

    loader = BatchLoader(spec["location"], SPLIT, batch_size=spec["batch_size"], shuffle=spec["shuffle"],
                         seed=spec["seed"], cache_dir=spec.get("cache_dir"), cache_bytes=spec["cache_bytes"],
                         **spec.get("loader_options", {}))
    per_sample = stored_bytes_per_sample(loader)

    marks = {"first_batch_s": 0, "tenth_of_batches_s": max(0, loader.num_batches // 10 - 1)}  # batch: its number
    reached: Result = {}

    def run() -> tuple[int, int]:
        started, samples = time.perf_counter(), 0
        for batch in range(loader.num_batches):
            samples += len(loader.load(spec["epoch"], batch)[1])
            reached.update({name: time.perf_counter() - started for name, at in marks.items() if at == batch})
        return samples, round(samples * per_sample)

    result = _measured(run)
    loader.close()
    return {**result, **reached}  # when the first batch, and the first tenth of them, were in hand


KINDS: dict[str, Callable[[Result], Result]] = {"get": run_get, "ranges": run_ranges, "loader": run_loader}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(KINDS[spec["kind"]](spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
