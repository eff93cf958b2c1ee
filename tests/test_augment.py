"""Tests for streamload.write.sources.augment: exact geometry of the warp, and the chunk stream's invariants."""

from __future__ import annotations

import numpy as np
import pytest

from streamload.errors import InvalidOptionError
from streamload.write.sources.augment import augmented_chunks, deform_images, warp_affine


def _random_images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def _digit_like(n: int, seed: int = 0) -> np.ndarray:
    """Blurry strokes inside the central 20x20 box of a 28x28 frame, like MNIST digits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    out = np.zeros((n, 28, 28))
    for _ in range(6):  # six blobs per image, vectorised over the images
        cy, cx = rng.uniform(9, 18, size=(2, n, 1, 1))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.6**2))
        out = np.maximum(out, blob)
    return np.round(out * 255).astype(np.uint8)


def _translation(n: int, tx: float, ty: float) -> np.ndarray:
    return np.tile(np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]]), (n, 1, 1))


def _reference_warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Slow per-pixel bilinear warp (float64, zero outside) that the vectorised one must match."""
    h, w = image.shape
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    src = image.astype(np.float64)
    out = np.zeros((h, w))

    def px(y: int, x: int) -> float:
        return src[y, x] if 0 <= y < h and 0 <= x < w else 0.0

    for y in range(h):
        for x in range(w):
            sx, sy, _ = inv @ [x, y, 1.0]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            top = px(y0, x0) * (1 - fx) + px(y0, x0 + 1) * fx
            bottom = px(y0 + 1, x0) * (1 - fx) + px(y0 + 1, x0 + 1) * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


# --- warp geometry ---------------------------------------------------------------------------


def test_zero_deformation_is_exact_identity() -> None:
    images = _random_images(50)
    rng = np.random.default_rng(1)
    out = deform_images(images, rng, max_shift=0, max_rotation_deg=0, scale_range=(1, 1))
    np.testing.assert_array_equal(out, images)


def test_integer_translation_moves_content_exactly() -> None:
    images = _random_images(7, 9, 11)
    right = warp_affine(images, _translation(7, 1.0, 0.0))
    np.testing.assert_array_equal(right[:, :, 1:], images[:, :, :-1])
    assert not right[:, :, 0].any()  # uncovered column is zero
    down = warp_affine(images, _translation(7, 0.0, 2.0))
    np.testing.assert_array_equal(down[:, 2:, :], images[:, :-2, :])
    assert not down[:, :2, :].any()


def test_rotation_by_90_degrees_matches_rot90_clockwise() -> None:
    # Computed cos/sin are not exactly 0/1 in floating point: rounding must still give exact pixels.
    images = _random_images(5, 12, 12)
    t = np.pi / 2
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.array([5.5, 5.5])
    m = np.hstack([r, (c - r @ c)[:, None]])
    out = warp_affine(images, np.tile(m, (5, 1, 1)))
    # Positive angles turn clockwise on screen because y points down; np.rot90 with k=-1 does too.
    np.testing.assert_array_equal(out, np.rot90(images, k=-1, axes=(1, 2)))


def test_matches_slow_reference_for_random_affine_maps() -> None:
    rng = np.random.default_rng(3)
    images = _random_images(6, 10, 13, seed=3)
    linear = np.eye(2) + rng.uniform(-0.4, 0.4, (6, 2, 2))
    m = np.concatenate([linear, rng.uniform(-3, 3, (6, 2, 1))], axis=2)
    out = warp_affine(images, m)
    for image, matrix, got in zip(images, m, out):
        ref = _reference_warp(image, matrix)
        # float32 vs float64 may flip a value sitting on a .5 rounding boundary, nothing more.
        diff = np.abs(got.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 2, diff


def test_half_pixel_shift_blends_with_zero_border() -> None:
    images = np.full((1, 3, 4), 201, dtype=np.uint8)
    out = warp_affine(images, _translation(1, 0.5, 0.0))
    np.testing.assert_array_equal(out[0], [[101, 201, 201, 201]] * 3)  # 100.5 rounds to nearest, up


def test_warp_rejects_bad_matrices() -> None:
    images = _random_images(2, 5, 5)
    with pytest.raises(InvalidOptionError, match="shape"):
        warp_affine(images, np.zeros((3, 2, 3)))
    with pytest.raises(InvalidOptionError, match="invertible"):
        warp_affine(images, np.zeros((2, 2, 3)))


# --- deform_images -----------------------------------------------------------------------------


def test_deform_output_is_new_contiguous_uint8_and_changes_pixels() -> None:
    images = _digit_like(64)
    out = deform_images(images, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert out.flags.c_contiguous and not np.shares_memory(out, images)
    changed = (out != images).reshape(len(out), -1).any(axis=1)
    assert changed.all()  # every image got its own non-trivial transform


def test_deform_is_deterministic_in_the_generator() -> None:
    images = _digit_like(32)
    a = deform_images(images, np.random.default_rng(5))
    b = deform_images(images, np.random.default_rng(5))
    c = deform_images(images, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_deformation_roughly_keeps_ink() -> None:
    images = _digit_like(400, seed=2)
    out = deform_images(images, np.random.default_rng(2))
    ratio = out.mean() / images.mean()
    assert 0.9 < ratio < 1.1, ratio
    # Defaults keep digits inside the frame: the border stays (almost) empty.
    assert out[:, [0, -1], :].max() == 0 and out[:, :, [0, -1]].max() == 0


def test_deform_handles_empty_batch_and_rejects_bad_options() -> None:
    empty = np.zeros((0, 28, 28), np.uint8)
    assert deform_images(empty, np.random.default_rng(0)).shape == (0, 28, 28)
    images = _random_images(2)
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidOptionError, match="uint8"):
        deform_images(images.astype(np.float32), rng)
    with pytest.raises(InvalidOptionError, match="uint8"):
        deform_images(images[0], rng)
    with pytest.raises(InvalidOptionError, match="max_shift"):
        deform_images(images, rng, max_shift=-1)
    with pytest.raises(InvalidOptionError, match="max_rotation_deg"):
        deform_images(images, rng, max_rotation_deg=float("nan"))
    with pytest.raises(InvalidOptionError, match="scale_range"):
        deform_images(images, rng, scale_range=(1.2, 0.8))
    with pytest.raises(InvalidOptionError, match="scale_range"):
        deform_images(images, rng, scale_range=(0.0, 1.0))


# --- augmented_chunks --------------------------------------------------------------------------


def _collect(chunks: object) -> tuple[list[int], np.ndarray, np.ndarray]:
    parts = list(chunks)  # type: ignore[call-overload]
    sizes = [len(p["x"]) for p in parts]
    for p in parts:
        assert len(p["x"]) == len(p["y"])
    x = np.concatenate([p["x"] for p in parts]) if parts else np.zeros((0, 28, 28), np.uint8)
    y = np.concatenate([p["y"] for p in parts]) if parts else np.zeros(0, np.int64)
    return sizes, x, y


def test_chunks_sum_to_total_and_keep_labels() -> None:
    images = _digit_like(37)
    labels = np.arange(37, dtype=np.uint8) % 10
    total = 37 * 2 + 11  # neither a multiple of len(images) nor of chunk_size
    sizes, x, y = _collect(augmented_chunks(images, labels, total, seed=4, chunk_size=16))
    assert sum(sizes) == total and all(0 < s <= 16 for s in sizes)
    assert sizes == [16] * 5 + [5]
    assert x.dtype == np.uint8 and x.shape == (total, 28, 28)
    assert y.dtype == labels.dtype
    np.testing.assert_array_equal(y, labels[np.arange(total) % 37])
    assert (x[:37] != images).reshape(37, -1).any(axis=1).all()  # the first pass is deformed too
    assert (x[:37] != x[37:74]).any()  # each pass gets fresh deformations


def test_chunks_are_deterministic_and_regenerable_one_by_one() -> None:
    images = _digit_like(20)
    labels = np.arange(20) % 10
    _, a, _ = _collect(augmented_chunks(images, labels, 50, seed=9, chunk_size=12))
    _, b, _ = _collect(augmented_chunks(images, labels, 50, seed=9, chunk_size=12))
    _, c, _ = _collect(augmented_chunks(images, labels, 50, seed=10, chunk_size=12))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    # Chunk 3 (samples 36..47) rebuilt from its own seed alone, as a resumed build would.
    rng = np.random.default_rng(np.random.SeedSequence([9, 3]))
    np.testing.assert_array_equal(a[36:48], deform_images(images[np.arange(36, 48) % 20], rng))


def test_total_zero_yields_nothing() -> None:
    assert list(augmented_chunks(_random_images(3), np.zeros(3), 0, seed=0)) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total": -1}, "total"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"total": 2.5}, "integers"),
        ({"seed": -3}, "seed"),
        ({"labels": np.zeros(4)}, "labels"),
        ({"labels": np.zeros((3, 1))}, "labels"),
        ({"images": np.zeros((0, 28, 28), np.uint8), "labels": np.zeros(0)}, "empty"),
        ({"images": np.zeros((3, 28, 28), np.float32)}, "uint8"),
    ],
)
def test_bad_arguments_raise_at_call_time(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"images": _random_images(3), "labels": np.zeros(3)}
    args.update(total=10, seed=0, chunk_size=4)
    args.update(kwargs)
    with pytest.raises(InvalidOptionError, match=match):
        augmented_chunks(**args)  # type: ignore[arg-type]  # no next(): validation is eager
