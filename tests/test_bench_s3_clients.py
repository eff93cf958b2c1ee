"""The S3 client benchmark measures what it claims: every byte checked, each client in its own process, and a
report that the docs render from its JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from s3server import require_weed

from benchmarks.s3_clients import installed_bytes, main, make_objects, make_ranges, markdown


def test_installed_size_counts_the_dependencies() -> None:
    pytest.importorskip("boto3")
    assert installed_bytes("boto3") > installed_bytes("jmespath") > 0
    assert installed_bytes("no-such-distribution-here") == 0


def test_ranges_are_within_their_objects_and_their_digest_is_local_slicing(tmp_path: Path) -> None:
    paths = make_objects(tmp_path, 2, 300_000)
    ranges = make_ranges(paths, 50)
    datas = [path.read_bytes() for path in paths]
    sliced = b"".join(datas[o][s:e] for o, s, e in zip(ranges["object"], ranges["start"], ranges["end"]))
    assert hashlib.sha256(sliced).hexdigest() == ranges["sha256"] and len(sliced) == ranges["bytes"]
    assert all(1024 <= e - s <= 100 * 1024 and e <= 300_000 for s, e in zip(ranges["start"], ranges["end"]))


@pytest.mark.slow
def test_a_small_run_measures_and_reports_each_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_weed()
    pytest.importorskip("boto3")
    assert main(["--workdir", str(tmp_path), "--clients", "boto3", "--objects", "2", "--object-mib", "1",
                 "--ranges", "40", "--rounds", "1", "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    row = results["clients"]["boto3"]
    assert row["get_mb_per_s"] > 0 and row["put_mb_per_s"] > 0 and row["ranges_per_s"] > 0
    assert row["fork"] == "ok" and row["installed_bytes"] > 0 and row["get_peak_rss_anon"] > 0
    assert results["runs"]["boto3"]["ranges"][0]["bytes"] == make_ranges(make_objects(tmp_path / "objects", 2, 1 << 20),
                                                                          40)["bytes"]
    assert markdown(results) in capsys.readouterr().out
    assert not list(tmp_path.glob("seaweedfs-*"))  # the server's data is removed
