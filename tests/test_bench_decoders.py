"""The decoder benchmark must decode what it claims: every generated JPEG, by each decoder, into the same pixels."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.decoders import DECODERS, available, generate_jpegs, main


def test_generated_jpegs_are_imagenet_sized_quality_90_photos() -> None:
    encoded = generate_jpegs(6, seed=2)
    assert encoded == generate_jpegs(6, seed=2)  # the same set each run
    for data in encoded:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and 200 <= min(image.size) and max(image.size) <= 1000


def test_every_decoder_gives_the_same_224_pixels_at_full_size() -> None:
    data = generate_jpegs(1, seed=4)[0]
    decoded = {name: decode(data, False) for name, (module, decode) in DECODERS.items() if available(module)}
    assert "simplejpeg" in decoded and decoded["simplejpeg"].shape == (224, 224, 3)
    for name, pixels in decoded.items():
        assert np.abs(pixels - decoded["simplejpeg"]).max() <= (6 if name == "pillow" else 0), name  # IDCT


def test_one_run_measures_all_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "3", "--rounds", "1", "--decoders", "simplejpeg", "tf.data", "streamload",
                 "--json", str(tmp_path / "r.json")]) == 0
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    cells = {(run["decoder"], run["parallel"], run["workers"], run["reduced"]) for run in runs}
    assert {("simplejpeg", parallel, workers, reduced) for parallel, workers in
            (("threads", 1), ("threads", 2), ("processes", 2)) for reduced in (False, True)} <= cells
    assert {("tf.data", "tf.data", 1, None), ("tf.data", "tf.data", 2, None),
            ("streamload", "threads", 2, True)} <= cells
    assert all(run["images_per_s"] == pytest.approx(3 / run["seconds"]) for run in runs)
    assert "| simplejpeg | off |" in capsys.readouterr().out
