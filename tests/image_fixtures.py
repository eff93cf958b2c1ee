"""Image folders written with Pillow for the source tests, with the pixels and labels they hold.

Every file's expected position is declared by the test (the order Keras lists files in), so the
library's own listing is checked against it, not reused to build it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def random_pixels(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """Random uint8 pixels (H, W, C) over the full value range."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def smooth_pixels(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """Gradients plus a little noise: JPEG keeps these close, unlike pure noise."""
    rows, cols = np.mgrid[0:height, 0:width]
    planes = [(cols * (3 + c) + rows * (2 + seed % 5) + 17 * c) % 256 for c in range(channels)]
    noise = np.random.default_rng(seed).integers(-8, 9, (height, width, channels))
    return np.clip(np.stack(planes, -1) + noise, 0, 255).astype(np.uint8)


def save_image(path: Path, pixels: np.ndarray, **options: object) -> Path:
    """Write (H, W, C) pixels with Pillow; the format comes from the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = MODES[pixels.shape[2]]
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path, **options)
    return path


def truncated_jpeg(path: Path, pixels: np.ndarray) -> Path:
    """A JPEG cut in half: Pillow's verify() accepts it, only decoding finds it truncated."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def eps_named_as_image(path: Path) -> Path:
    """A minimal Encapsulated PostScript file (Pillow's EPS plugin opens it and hands it to Ghostscript to
    render), under whatever image name ``path`` has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
                     b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")
    return path


def fake_ghostscript(folder: Path) -> tuple[Path, Path]:
    """An executable ``gs`` in ``folder`` that records each call in a marker file and fails; put ``folder``
    first on PATH and the marker shows whether anything ran Ghostscript. (folder, marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "gs-was-run"
    script = folder / "gs"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\nexit 1\n')
    script.chmod(0o755)
    return folder, marker


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_colour_png(path: Path, height: int, width: int) -> Path:
    """A black 1-bit PNG of any size, written row by row: kilobytes on disk, ``height * width`` pixels decoded."""
    compressor, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
                     + _png_chunk(b"IEND", b""))
    return path


@dataclass
class ImageFolder:
    """A class-folder tree and, in the order Keras lists them, its files, labels and written pixels."""

    root: Path
    class_names: list[str]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)

    def add(self, relative: str, pixels: np.ndarray, **options: object) -> Path:
        """Write ``class/.../name.ext`` and record it as the next file in listing order."""
        path = save_image(self.root / relative, pixels, **options)
        self.files.append(str(path))
        self.labels.append(self.class_names.index(relative.split("/")[0]))
        self.pixels.append(pixels)
        return path


RESIZE_SHAPES = [((28, 28, 1), (32, 32)), ((100, 75, 3), (64, 64)), ((37, 53, 3), (256, 200)),
                 ((7, 9, 4), (3, 2)), ((480, 640, 3), (224, 224)), ((1, 1, 3), (5, 4)), ((333, 517, 3), (97, 101))]


def odd_resize_shapes(count: int) -> list[tuple[tuple[int, int, int], tuple[int, int]]]:
    """``count`` (input shape, output size) pairs: each side 1-700, scaled 0.2-3x independently, 1/3/4 channels."""
    rng = np.random.default_rng(19)
    shapes = []
    for number in range(count):
        height, width = (int(side) for side in rng.integers(1, 700, 2))
        size = tuple(max(1, int(side * rng.uniform(0.2, 3.0))) for side in (height, width))
        shapes.append(((height, width, (1, 3, 4)[number % 3]), size))
    return shapes


def tensorflow_resize(image: np.ndarray, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """``tf.image.resize`` without antialias, as numpy: the reference every resize test compares with."""
    import tensorflow as tf

    return tf.image.resize(image, size, method=method, antialias=False).numpy()


def assert_keras_pixels(ours: np.ndarray, keras: np.ndarray) -> None:
    """Decoded-on-read pixels equal Keras' within the read path's resize tolerance (OpenCV's bilinear kernel
    against TensorFlow's; bit for bit without OpenCV, and for nearest), for images up to 1,000 px a side."""
    from streamload.images.resize_opencv import tolerance

    assert ours.dtype == keras.dtype and ours.shape == keras.shape
    np.testing.assert_allclose(ours, keras, rtol=0, atol=tolerance(1000, 1000))


def resized_in_threads(resize: Callable[..., np.ndarray], rounds: int = 3) -> Iterator[tuple[np.ndarray, ...]]:
    """(ours, TensorFlow's, input) for images of 24 odd sizes resized by ``resize`` in 4 threads at once, ``rounds``
    times: each thread must reuse only its own working buffers."""
    shapes = odd_resize_shapes(24)
    images = [random_pixels(*in_shape, seed=number) for number, (in_shape, _) in enumerate(shapes)]
    expected = [tensorflow_resize(image, size) for image, (_, size) in zip(images, shapes)]
    for _ in range(rounds):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda pair: resize(*pair), zip(images, [size for _, size in shapes])))
        yield from zip(results, expected, images)
