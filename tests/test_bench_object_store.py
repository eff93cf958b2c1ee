"""The object store benchmark measures what it claims: the proxy really delays each request and counts the
bytes a real server sent, the ranges are single samples, the ratios are judged against the goals, and a small
run reports every case from its JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MakeMnist
from image_fixtures import ImageFolder, smooth_pixels
from s3server import S3Admin, S3Endpoint, require_weed
from shards import build

from benchmarks import object_store_report as report
from benchmarks.common import process_cpu_seconds, sha256_bytes_per_cpu_s
from benchmarks.object_store import jpeg_store, plan, run_rounds
from benchmarks.object_store_child import sample_ranges
from benchmarks.object_store_proxy import LatencyProxy
from streamload.format.manifest import read_manifest
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources.images import ImageOptions, image_folder_sources


def _proxy_for(endpoint: S3Endpoint) -> LatencyProxy:
    host, port = endpoint.url.split("://", 1)[1].rsplit(":", 1)
    return LatencyProxy((host, int(port)))


def test_the_proxy_delays_each_request_and_counts_what_the_server_sent(s3: S3Endpoint) -> None:
    body = np.random.default_rng(1).bytes(300_000)
    S3Admin(s3).put(s3.bucket, "proxy/one.bin", body)
    with _proxy_for(s3) as proxy:
        through = S3Admin(S3Endpoint(proxy.url, s3.access_key, s3.secret_key, bucket=s3.bucket))
        assert through.get(s3.bucket, "proxy/one.bin") == body  # no delay yet
        first = proxy.traffic()
        assert (first.requests, first.connections) == (1, 1)
        assert len(body) < first.down_bytes < len(body) + 2000  # the body and the answer's headers
        proxy.reset()
        proxy.delay_s = 0.25
        started = time.perf_counter()
        for _ in range(3):
            assert through.get(s3.bucket, "proxy/one.bin") == body
        assert time.perf_counter() - started >= 3 * 0.25  # each request waited (a lower bound, never a timing)
        assert proxy.traffic().requests == 3 and proxy.traffic().down_bytes == 3 * first.down_bytes


def test_requests_on_one_kept_alive_connection_are_each_delayed(aws_env: S3Endpoint,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    S3Admin(aws_env).put(aws_env.bucket, "proxy/two.bin", b"x" * 5000)
    with _proxy_for(aws_env) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        client = boto3.client("s3")
        proxy.delay_s = 0.2
        started = time.perf_counter()
        for _ in range(4):
            assert client.get_object(Bucket=aws_env.bucket, Key="proxy/two.bin")["Body"].read() == b"x" * 5000
        assert time.perf_counter() - started >= 4 * 0.2
        traffic = proxy.traffic()
    assert traffic.connections == 1 and traffic.requests == 4 and traffic.down_bytes > 4 * 5000


def test_ranges_are_one_whole_sample_of_the_shard_they_name(tmp_path: Path) -> None:
    folder, arrays = build(tmp_path, 250, "npy", 100)  # sample i's first four bytes are i
    manifest = read_manifest(folder)
    ranges = sample_ranges(manifest, 40, seed=3)
    shards = manifest.split("train").shards
    root = folder / str(manifest.generation)
    for shard, start, end in zip(ranges["shard"], ranges["start"], ranges["end"]):
        piece = np.frombuffer((root / shards[shard].files["x"].name).read_bytes()[start:end], np.uint8)
        sample = int(piece[:4].view("<u4")[0])
        assert sample // 100 == shard and np.array_equal(piece, arrays["x"][sample].reshape(-1))
    assert len(set(ranges["shard"])) == 3


BUSY_CHILD = """
import resource, sys, time
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime + usage.ru_stime, flush=True)
sys.stdin.read()  # alive until the parent closes stdin: its /proc entry stays readable
"""


def test_a_servers_cpu_seconds_are_read_from_proc_as_the_process_counts_them() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        own = float(child.stdout.readline())
        seen = process_cpu_seconds(child.pid)
    finally:
        child.communicate("")
    assert own >= 0.4 and abs(seen - own) < 0.05  # clock ticks: 10 ms each
    assert process_cpu_seconds() == pytest.approx(process_cpu_seconds("self"), abs=0.05)


def test_the_cores_busy_count_the_reader_server_and_proxy() -> None:
    case = report.figures({"samples": 10, "seconds": 2.0, "delivered_bytes": 20, "cpu_s": 1.5, "server_cpu_s": 2.0,
                           "proxy_cpu_s": 0.5})
    assert case["cores_busy"] == pytest.approx(2.0) and case["samples_per_cpu_s"] == pytest.approx(10 / 1.5)


def test_the_cpu_floor_spreads_every_cpu_second_over_the_cores() -> None:
    cold, warm = report.loader_name("block", "cold"), report.loader_name("block", "warm")
    judged = {"median_cpu_s": {report.BANDWIDTH: 1.0, cold: 9.0, warm: 3.0},
              "median_server_cpu_s": {report.BANDWIDTH: 8.0, cold: 8.0, warm: 0.0},
              "median_proxy_cpu_s": {report.BANDWIDTH: 1.0, cold: 1.0, warm: 0.0},
              "median_seconds": {report.BANDWIDTH: 6.0, cold: 15.0, warm: 3.0}}
    floors = report.cpu_floors(judged, shard_bytes=2000, cores=2, sha256_per_cpu_s=1000.0)
    assert floors["cold_epoch_floor_s"] == pytest.approx(9.0) and floors["cold_epoch_ceiling"] == pytest.approx(6 / 9)
    assert floors["sha256_cpu_s"] == pytest.approx(2.0)
    assert floors["checking_reader_floor_s"] == pytest.approx((10.0 + 3.0 + 2.0) / 2)  # bound's CPU + warm + hash
    assert floors["checking_reader_ceiling"] == pytest.approx(6 / 7.5)
    roomy = report.cpu_floors(judged, shard_bytes=2000, cores=16, sha256_per_cpu_s=1000.0)
    assert roomy["cold_epoch_ceiling"] == roomy["checking_reader_ceiling"] == 1.0  # never above the bound itself
    assert report.cpu_floors({**judged, "median_cpu_s": {cold: 1.0}}, 2000, 2, 1000.0) is None  # cases not run


def test_sha256_speed_is_a_rate_of_this_machine() -> None:
    assert 1e7 < sha256_bytes_per_cpu_s(8 << 20) < 1e11


def _round(rates: dict[str, float], fetched: dict[str, float]) -> dict:
    return {"results": {name: {"samples_per_s": rate, "samples_per_cpu_s": rate, "delivered_bytes_per_s": rate * 785,
                               "fetched_bytes": fetched.get(name, 0), "requests": 1, "cpu_s": 1.0,
                               "server_cpu_s": 1.0, "proxy_cpu_s": 0.5, "cores_busy": 2.5,
                               "peak_rss_anon": 1, "peak_rss_file": 1, "seconds": 1.0}
                        for name, rate in rates.items()}}


def test_goals_are_ratios_of_medians_judged_against_the_issue() -> None:
    block, exact = report.loader_name("block", "cold"), report.loader_name("exact", "cold")
    slow_block = report.latency_name(block, 20)
    rates = {report.BANDWIDTH: 1000.0, report.DIRECT: 1100.0, report.REQUESTS: 10.0, block: 810.0, exact: 4.0,
             slow_block: 600.0, report.loader_name("block", "warm"): 95.0, report.loader_name("block", "local"): 100.0}
    lower = {name: rate / 2 for name, rate in rates.items()}
    rounds = [_round(rates, {block: 1200, report.BANDWIDTH: 1000}), _round(lower, {block: 1000}),
              _round(rates, {block: 1100})]
    results = report.summary(rounds, {"shard_bytes": 1000}, 20)
    judged = {(entry["numerator"], entry["denominator"]): entry for entry in results["summary"]["ratios"]}
    assert judged[(block, report.BANDWIDTH)]["value"] == pytest.approx(0.81)
    assert judged[(block, report.BANDWIDTH)]["met"] is True
    assert judged[(exact, report.REQUESTS)]["value"] == pytest.approx(0.4)
    assert judged[(exact, report.REQUESTS)]["met"] is False
    assert judged[(slow_block, block)]["met"] is False  # 600 / 810: latency costs 26%
    assert judged[(report.loader_name("block", "warm"), report.loader_name("block", "local"))]["met"]
    assert judged[(report.BANDWIDTH, report.DIRECT)]["met"] is None  # reported, no goal
    assert not any(entry["numerator"] == report.latency_name(exact, 20) for entry in judged.values())  # not run
    amplification = {entry["numerator"]: entry for entry in results["amplification"]}
    assert amplification[block]["value"] == pytest.approx(1.1) and amplification[block]["met"]  # median 1100
    best = results["range_reads"][0]
    assert best["whole_over_ranges"] == pytest.approx(0.4)
    assert best["break_even_sample_bytes"] == pytest.approx(1000 * 785 / 10)  # bandwidth bound bytes/s / GETs/s


def jpeg_set(images: Path, count: int) -> Path:
    """``images/set-<count>/encoded``: an encoded store of ``count`` JPEGs, as scripts/benchmark_images.py keeps it."""
    folder = ImageFolder(images / f"set-{count}" / "photos", ["a", "b"])
    for number in range(count):
        folder.add(f"{'ab'[number % 2]}/{number:03}.jpg", smooth_pixels(40 + number, 60 - number, 3, number),
                   quality=90)
    out = images / f"set-{count}" / "encoded"
    build_dataset(image_folder_sources(folder.root, ImageOptions(store="encoded", progress=False, jobs=1)), out,
                  BuildOptions(progress=False, shard_size=5))
    return out


def test_the_jpeg_rows_read_the_smallest_encoded_set(tmp_path: Path) -> None:
    assert jpeg_store(tmp_path / "absent") is None and jpeg_store(tmp_path) is None
    (tmp_path / "set-5" / "encoded").mkdir(parents=True)  # an unfinished build: no manifest
    larger, smaller = jpeg_set(tmp_path, 12), jpeg_set(tmp_path, 7)
    assert jpeg_store(tmp_path) == smaller and larger.exists()
    args = argparse.Namespace(batch_size=8, seed=0, cache_bytes=1 << 30, ranges=10, depth=4, latency_ms=0.0)
    cases = {case.name: case for group in plan(args, "s3://b/p", Path("/l"), ("s3://b/jpeg", smaller))
             for case in group}
    jpeg = {name: case for name, case in cases.items() if name.endswith("JPEG set")}
    assert len(cases) == 10 + 5 and len(jpeg) == 5
    assert jpeg[report.jpeg_name(report.loader_name("exact", "local"))].spec["location"] == str(smaller)
    assert all(case.spec["location"] == "s3://b/jpeg" for name, case in jpeg.items() if "local" not in name)
    assert all(case.spec["loader_options"] == {"image_size": [224, 224]} for case in jpeg.values()
               if case.spec["kind"] == "loader")


def test_the_plan_runs_each_warm_epoch_after_its_cold_one_beside_the_local_epoch() -> None:
    args = argparse.Namespace(batch_size=8, seed=0, cache_bytes=1 << 30, ranges=10, depth=4, latency_ms=20.0)
    groups = plan(args, "s3://b/p", Path("/local"))
    names = [case.name for group in groups for case in group]
    assert len(names) == len(set(names)) == 14
    for group in groups:
        assert [case.where for case in group] in (["cold", "warm", "local"], ["cold"], [""])
        assert all(case.delay_ms == (20.0 if case.name.endswith("+20 ms") else 0.0) for case in group)
    assert not [case for group in groups for case in group if case.where == "local" and case.proxy]
    assert len([name for group in plan(argparse.Namespace(**{**vars(args), "latency_ms": 0.0}), "s3://b/p",
                                       Path("/l")) for name in group]) == 10


def test_the_warm_and_local_epochs_take_turns_right_after_the_cold_one() -> None:
    """The two epochs the warm goal compares run side by side, neither always first after the cold epoch."""
    args = argparse.Namespace(batch_size=8, seed=0, cache_bytes=1 << 30, ranges=10, depth=4, latency_ms=0.0)
    ran: list[str] = []
    rounds = run_rounds(plan(args, "s3://b/p", Path("/local")), 2, lambda case: ran.append(case.where) or {})
    for number, one in enumerate(rounds):
        for shuffle in ("block", "exact"):
            at = one["order"].index(report.loader_name(shuffle, "cold"))
            after = [name.rsplit(", ", 1)[1] for name in one["order"][at + 1:at + 3]]
            assert after == [["warm cache", "local disk"], ["local disk", "warm cache"]][number]
    assert ran.count("warm") == ran.count("local") == ran.count("cold") == 4


@pytest.mark.slow
def test_a_small_run_measures_and_reports_every_case(make_mnist: MakeMnist, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    require_weed()
    pytest.importorskip("boto3")
    from benchmarks.object_store import main

    monkeypatch.setenv("STREAMLOAD_MNIST_DIR", str(make_mnist(n_train=300, n_test=20).folder))
    out = tmp_path / "r.json"
    jpeg_set(tmp_path / "images", 12)
    assert main(["--workdir", str(tmp_path / "w"), "--gigabytes", "0.002", "--shard-size", "1000", "--ranges", "30",
                 "--depth", "4", "--latency-ms", "5", "--rounds", "1", "--images", str(tmp_path / "images"),
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    figures = results["rounds"][0]["results"]
    assert len(figures) == 14 + 5 and results["dataset"]["shards"] == 3
    jpeg = {name: case for name, case in figures.items() if name.endswith("JPEG set")}
    assert results["jpeg"]["run"] and results["jpeg"]["samples"] == 12 and results["jpeg"]["shards"] == 3
    for name, case in jpeg.items():
        assert case["samples"] == 12, name
        if case["through_proxy"]:  # every JPEG shard fetched once, as the plain GETs fetch them, and the manifests
            bound = jpeg[report.jpeg_name(report.BANDWIDTH)]
            assert case["requests"] == bound["requests"] and abs(case["fetched_bytes"] - bound["fetched_bytes"]) < 500
            assert case["fetched_bytes"] > results["jpeg"]["shard_bytes"]
    figures = {name: case for name, case in figures.items() if name not in jpeg}
    loaders = {name for name, case in figures.items() if case.get("first_batch_s") is not None}
    assert loaders == {name for name in figures if name.startswith("streamload")} and len(loaders) == 8
    for name in loaders:  # the marks come in the order the batches do, within the epoch
        marks = results["marks"][name]
        assert 0 < marks["first_batch_s"] <= marks["tenth_of_batches_s"] <= marks["seconds"] * 1.01, name
    samples = results["dataset"]["samples"]
    for name, case in figures.items():
        assert case["samples"] == (30 if name.startswith(report.REQUESTS) else samples), name
    needed = results["dataset"]["shard_bytes"]
    for shuffle in ("block", "exact"):
        cold, warm = figures[report.loader_name(shuffle, "cold")], figures[report.loader_name(shuffle, "warm")]
        assert needed < cold["fetched_bytes"] < needed * 1.05  # every shard once, and the manifests
        assert warm["fetched_bytes"] < needed * 0.05  # only the manifests: the shards came from the cache
        assert figures[report.loader_name(shuffle, "local")]["fetched_bytes"] == 0
    bucket_cases = [case for case in figures.values() if case["through_proxy"]]
    assert sum(case["server_cpu_s"] for case in bucket_cases) > 0  # the server's own work, seen from outside it
    assert sum(case["proxy_cpu_s"] for case in bucket_cases) > 0
    assert figures[report.latency_name(report.BANDWIDTH, 5)]["requests"] >= 6  # two files a shard, and the manifests
    floors = results["cpu_floors"]
    assert 0 < floors["cold_epoch_ceiling"] <= 1 and 0 < floors["checking_reader_ceiling"] <= 1
    assert floors["cores"] == results["machine"]["usable_cpus"] and results["sha256_bytes_per_cpu_s"] > 0
    assert report.markdown(results) in capsys.readouterr().out
    assert not list((tmp_path / "w").glob("seaweedfs-*")) and not list((tmp_path / "w").glob("run-*"))
    assert os.environ.get("AWS_ENDPOINT_URL") is None or "127.0.0.1" not in os.environ["AWS_ENDPOINT_URL"]
