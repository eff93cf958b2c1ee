"""The image-folder build benchmark must build what it claims: every PNG it generated, through the real CLI
in child processes, with the build's and its workers' memory measured apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_split
from PIL import Image

from benchmarks.build_images import generate_pngs, main, parse_args


def test_generated_pngs_are_reused_while_their_parameters_match(tmp_path: Path) -> None:
    assert generate_pngs(tmp_path / "p", count=12, size=5, classes=3)
    files = sorted((tmp_path / "p").rglob("*.png"))
    assert len(files) == 12 and {file.parent.name for file in files} == {"class0", "class1", "class2"}
    assert Image.open(files[0]).size == (5, 5) and Image.open(files[0]).mode == "L"
    stamps = [file.stat().st_mtime_ns for file in files]
    assert not generate_pngs(tmp_path / "p", count=12, size=5, classes=3)
    assert [file.stat().st_mtime_ns for file in files] == stamps
    assert generate_pngs(tmp_path / "p", count=12, size=6, classes=3)  # other parameters: written again


def test_builds_every_image_with_each_jobs_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workdir", str(tmp_path), "--count", "30", "--size", "6", "--classes", "3", "--jobs", "1", "2",
                 "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    runs = {run["jobs"]: run for run in results["runs"]}
    assert set(runs) == {1, 2}
    for jobs, run in runs.items():
        assert run["images"] == 30 and run["images_per_s"] == pytest.approx(30 / run["seconds"])
        assert run["peak"]["rss_anon"] > 0 and run["peak"]["rss_file"] > 0 and run["cpu_seconds"] > 0
        back = read_split(tmp_path / f"dataset-jobs{jobs}", "train")
        folder = tmp_path / "pngs-30-6-3"
        expected = [np.asarray(Image.open(path)) for path in sorted(folder.rglob("*.png"))]  # class0/ < class1/ ...
        np.testing.assert_array_equal(back["x"][..., 0], np.stack(expected))
    assert runs[1]["workers"]["most_alive"] == 0  # --jobs 1 decodes in the build process itself
    assert runs[2]["workers"]["most_alive"] == 2 and runs[2]["workers"]["peak_rss_anon_sum"] > 0
    report = capsys.readouterr().out
    assert "| --jobs | wall | CPU (build + workers) | images/s |" in report
    assert report.count("\n| ") == 3  # the header and two rows


@pytest.mark.parametrize("option", [["--count", "0"], ["--size", "0"], ["--jobs", "0"]])
def test_rejects_non_positive_options(option: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(option)
