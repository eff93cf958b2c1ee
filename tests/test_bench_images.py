"""The image benchmark at a toy size: the JSON it writes, every pipeline delivering the same images (count,
labels, pixels within the decoder's tolerance), the goals computed from the run's medians; no timing asserted."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("simplejpeg")

from benchmarks import images_bench as ib  # noqa: E402
from benchmarks import images_pipelines as ip  # noqa: E402
from benchmarks.images_report import headline, markdown  # noqa: E402

IMAGES, CLASSES, BATCH = 20, 3, 8  # 3 batches, the last one short


def test_random_resized_boxes_stay_inside_and_within_the_ranges() -> None:
    rng = np.random.default_rng(0)
    for height, width in ((375, 500), (1000, 200), (224, 224)):
        for _ in range(200):
            top, left, h, w = ip.random_resized_box(rng, height, width)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
            assert h * w <= height * width


def test_the_chosen_decoder_with_augmentation_gives_fit_ready_pixels() -> None:
    from benchmarks.decoders import generate_jpegs

    data = generate_jpegs(2, seed=1)
    for one in data:
        out = ip.decode_augment(one, np.random.default_rng(3))
        assert out.shape == (*ip.SIZE, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
        np.testing.assert_array_equal(out, ip.decode_augment(one, np.random.default_rng(3)))  # a pure function


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("images")
    out = root / "images.json"
    argv = ["--images", str(IMAGES), "--classes", str(CLASSES), "--batch-size", str(BATCH), "--rounds", "1",
            "--data", str(root / "data"), "--check-images", str(IMAGES), "--json", str(out), "--no-progress"]
    assert ib.main(argv) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_pipeline_that_ran_delivered_the_same_images(results: dict) -> None:
    ran = [name for name in ip.PIPELINES if name not in results["not_run"]]
    assert set(results["integrity"]) == set(ran)
    assert {ip.KERAS, ip.TFRECORD, ip.DECODED, *ip.BOUNDS} <= set(ran)
    for name, check in results["integrity"].items():
        assert check["images"] == IMAGES and check["checked"] == IMAGES and check["labels_equal"], name
        assert check["max_abs_diff"] <= check["tolerance"] == ib.TOLERANCE[check["decoder"]], name
        assert check["ok"]
    # decoders that match give the very pixels: TensorFlow's in Keras and tf.data, simplejpeg's in the peers
    assert results["integrity"][ip.KERAS]["max_abs_diff"] == results["integrity"][ip.TFRECORD]["max_abs_diff"] == 0
    for name in (ip.GRAIN, ip.WEBDATASET, ip.BOUND_SIMPLEJPEG, ip.ENCODED_REDUCED):
        if name in results["integrity"]:
            assert results["integrity"][name]["max_abs_diff"] == 0, name


@pytest.mark.slow
def test_every_case_times_every_pipeline_over_every_image(results: dict) -> None:
    ran = [name for name in ip.PIPELINES if name not in results["not_run"]]
    assert set(results["cases"]) == set(ip.CASES)
    for case, part in results["cases"].items():
        expected = [name for name in ran if ip.runs_case(name, case)]
        assert part["pipelines"] == expected and (ip.DECODED in expected) == (case == "resize")
        assert (ip.ENCODED_REDUCED in expected) == (ip.ENCODED_REDUCED in ran and case == "resize")
        assert part["passes"] == 2
        for one in part["rounds"]:
            assert sorted(one["order"]) == sorted(expected)
            for name, figures in one["results"].items():
                cold = name == ip.ENCODED_COLD
                assert len(figures["passes"]) == (1 if cold else 2), (case, name)  # the cold cache: its first only
                assert {**figures["passes"][-1], "passes": figures["passes"]}.items() <= figures.items()
                for number, one_pass in enumerate(figures["passes"]):
                    assert one_pass["images"] == IMAGES, (case, name, number)
                    assert one_pass["timed_images"] == IMAGES - BATCH  # the first batch is left out of the rate
                    assert one_pass["images_per_s"] == one_pass["timed_images"] / one_pass["timed_seconds"]
                    assert 0 < one_pass["timed_cpu_seconds"] <= one_pass["cpu_seconds"]
                assert figures["peak_rss_anon"] > 0 and figures["cold"] is cold
        for number, figures in ((1, part), (0, part["first_pass"])):
            medians = figures["median_images_per_s"]
            ran_passes = [name for name in expected if number == 0 or name != ip.ENCODED_COLD]
            assert medians == {name: statistics.median(one["results"][name]["passes"][number]["images_per_s"]
                                                       for one in part["rounds"]) for name in ran_passes}
            passes = [[one["results"][name]["passes"][number] for one in part["rounds"]] for name in ran_passes]
            assert figures["median_images_per_cpu_s"] == {  # the CPU time after the first batch, as the rate
                name: statistics.median(p["timed_images"] / p["timed_cpu_seconds"] for p in runs)
                for name, runs in zip(ran_passes, passes)}
            for entry in figures["ratios"]:
                assert entry["value"] == pytest.approx(medians[entry["numerator"]] / medians[entry["denominator"]])
                assert entry["met"] is (None if entry["goal"] is None else entry["value"] >= entry["goal"])


@pytest.mark.slow
def test_disk_is_counted_per_store_and_the_report_renders(results: dict) -> None:
    source = results["images"]["source_bytes"]
    assert results["disk_bytes"][ip.KERAS] == source and results["disk_per_source"][ip.KERAS] == 1.0
    # the same JPEG bytes in other containers: each a little over the source, never under it
    for name in (ip.TFRECORD, ip.GRAIN, ip.WEBDATASET):
        if results["disk_bytes"].get(name) is not None:
            assert 1.0 < results["disk_per_source"][name] < 1.2, name
    assert math.isclose(results["disk_per_source"][ip.DECODED], results["disk_bytes"][ip.DECODED] / source)
    text = markdown(results)
    assert results["command"].startswith("python3 scripts/benchmark_images.py --images 20")
    for name in results["integrity"]:
        assert f"| {name} |" in text
    for name in results["not_run"]:
        assert f"not run: {name}" in text


@pytest.mark.slow
def test_the_front_page_headline_quotes_the_run(results: dict) -> None:
    text = headline(results)
    for case in ip.CASES:
        rate = results["cases"][case]["median_images_per_s"]
        assert f"{rate[ip.KERAS]:,.0f}" in text
    resize, augment = (results["cases"][case]["median_images_per_s"] for case in ("resize", "augment"))
    if ip.ENCODED_WARM in resize:
        assert f"| {ip.ENCODED_WARM} | {resize[ip.ENCODED_WARM]:,.0f} | {augment[ip.ENCODED_WARM]:,.0f} |" in text
        assert f"{resize[ip.ENCODED_WARM] / resize[ip.KERAS]:.2f}x Keras' pipeline resizing" in text
    one_case = {**results, "cases": {"resize": results["cases"]["resize"]}}
    assert "only one case" in headline(one_case)


def test_the_encoded_rows_are_listed_as_not_run_where_the_build_has_no_encoded_store(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    monkeypatch.setattr(ib, "has_encoded_store", lambda: False)
    assert not any(ib.available(name) for name in ip.ENCODED)
    assert ib.available(ip.KERAS) and ib.available(ip.BOUND_SIMPLEJPEG)
