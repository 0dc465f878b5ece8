"""Tests of qsenn_core.explain: overlays and masks on hand-built maps, and the pictures (decodable,
readable size, not blank, deterministic bytes) on tiny synthetic images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qsenn_core import explain
from qsenn_core.errors import DataError

RED = np.array([0xB2, 0x18, 0x2B])
BLUE = np.array([0x21, 0x66, 0xAC])


def _bird(seed: int, size: int = 32) -> np.ndarray:
    """A small coloured image: noisy background, a red ellipse (body) and a yellow dot (beak)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    img = np.empty((size, size, 3))
    img[:] = rng.uniform(60, 200, 3)
    body = ((x - size / 2) / (size / 3)) ** 2 + ((y - size / 2) / (size / 5)) ** 2 < 1
    img[body] = (200, 50, 40)
    img[(x - 0.8 * size) ** 2 + (y - 0.4 * size) ** 2 < (size / 12) ** 2] = (240, 200, 40)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _assert_readable(pixels: np.ndarray, min_w: int, min_h: int) -> None:
    """Big enough to read, not blank: varied pixel values and many distinct colours."""
    h, w = pixels.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    assert w <= 4000 and h <= 4000, (w, h)
    assert pixels.std() > 20
    packed = pixels.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    assert len(np.unique(packed)) > 50


def _count_colour(pixels: np.ndarray, rgb: np.ndarray, tol: int = 6) -> int:
    return int((np.abs(pixels.astype(int) - rgb).max(axis=2) <= tol).sum())


# ------------------------------------------------------------------------------------------------
# arrays
# ------------------------------------------------------------------------------------------------


def test_upsample_matches_torch_bilinear_and_keeps_constants() -> None:
    m = np.random.default_rng(0).random((4, 5))
    ours = explain.upsample_bilinear(m, (32, 24))
    ref = torch.nn.functional.interpolate(
        torch.tensor(m)[None, None], size=(32, 24), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert ours.shape == (32, 24)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_allclose(explain.upsample_bilinear(np.full((3, 3), 2.5), (9, 7)), 2.5)


def test_normalize_map_scales_and_handles_dead_features() -> None:
    m = np.array([[0.0, 2.0], [-1.0, 4.0]])
    np.testing.assert_allclose(explain.normalize_map(m), [[0, 0.5], [0, 1]])
    np.testing.assert_allclose(explain.normalize_map(m, vmax=8.0), [[0, 0.25], [0, 0.5]])
    assert not explain.normalize_map(np.zeros((3, 3))).any()
    assert not explain.normalize_map(-np.ones((3, 3))).any()


def test_as_rgb_accepts_gray_float_and_rgba_and_rejects_other_shapes() -> None:
    assert explain.as_rgb_uint8(np.ones((4, 5))).shape == (4, 5, 3)
    assert explain.as_rgb_uint8(np.ones((4, 5))).max() == 255
    assert explain.as_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(DataError, match="image"):
        explain.as_rgb_uint8(np.zeros((4, 5, 2)))


def test_overlay_is_hot_at_the_peak_and_cold_elsewhere_on_a_gray_image() -> None:
    img = _bird(0)
    fmap = np.zeros((4, 4))
    fmap[1, 2] = 3.0
    out = explain.overlay_heatmap(img, fmap, gamma=1.5, alpha=0.6)
    assert out.shape == img.shape and out.dtype == np.uint8
    peak = out[12, 20].astype(int)  # centre of cell (1, 2) in the 32 x 32 image
    corner = out[30, 1].astype(int)  # far from the peak: jet's dark blue
    assert peak[0] > peak[2] + 60
    assert corner[2] > corner[0] + 40
    # without the heat map (alpha 0) the image is shown in grayscale
    gray = explain.overlay_heatmap(img, fmap, alpha=0.0)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    colour = explain.overlay_heatmap(img, fmap, alpha=0.0, grayscale=False)
    np.testing.assert_array_equal(colour, img)


def test_overlay_shared_vmax_keeps_a_weak_map_dark() -> None:
    img = np.full((16, 16, 3), 128, np.uint8)
    weak = np.full((2, 2), 0.1)
    own = explain.overlay_heatmap(img, weak, alpha=1.0)
    shared = explain.overlay_heatmap(img, weak, alpha=1.0, vmax=1.0)
    assert own[8, 8, 0] > 100  # stretched to its own max: dark red
    assert shared[8, 8, 0] < 10 and shared[8, 8, 2] > 100  # on the shared scale: blue


# ------------------------------------------------------------------------------------------------
# local explanation mask (70 % of each feature's max)
# ------------------------------------------------------------------------------------------------


def test_local_mask_single_cell_colours_only_that_cell() -> None:
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 2] = 5.0
    labels = explain.local_mask(maps, (32, 32), threshold=0.7)
    shown = labels >= 0
    assert shown.any()
    ys, xs = np.nonzero(shown)
    assert ys.min() >= 8 and ys.max() < 16 and xs.min() >= 16 and xs.max() < 24
    assert (labels[shown] == 0).all()  # the all-zero feature 1 never shows


def test_local_mask_threshold_and_strongest_feature() -> None:
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0] = 1.0
    maps[0, 3, 3] = 0.6  # 60 % of feature 0's max: hidden at 70 %, shown at 50 %
    maps[1, 3, 3] = 2.0  # feature 1 is at its max there, so it wins that cell
    at70 = explain.local_mask(maps[:1], (16, 16), threshold=0.7)
    at50 = explain.local_mask(maps[:1], (16, 16), threshold=0.5)
    assert (at70[12:, 12:] == -1).all() and (at70[:4, :4] >= 0).any()
    assert (at50[12:, 12:] == 0).any()
    both = explain.local_mask(maps, (16, 16), threshold=0.7)
    assert both[0, 0] == 0 and both[14, 14] == 1
    with pytest.raises(DataError, match="threshold"):
        explain.local_mask(maps, (16, 16), threshold=1.0)


def test_colour_mask_leaves_unmasked_pixels_gray() -> None:
    img = _bird(1)
    labels = np.full((32, 32), -1)
    labels[4:10, 4:10] = 1
    out = explain.colour_mask(img, labels, explain.feature_colours(3))
    rest = out[labels < 0]
    assert (rest[:, 0] == rest[:, 1]).all() and (rest[:, 1] == rest[:, 2]).all()
    inside = out[labels >= 0].astype(int)
    assert (np.ptp(inside, axis=1) > 20).all()


def test_feature_colours_are_distinct() -> None:
    for k in (5, 10, 14):
        cols = explain.feature_colours(k)
        assert cols.shape == (k, 3)
        assert len(np.unique(np.round(cols, 3), axis=0)) == k


def test_assigned_features_by_magnitude() -> None:
    row = np.array([0.0, -0.8, 0.8, 0.0, 1.2, -0.1])
    assert explain.assigned_features(row) == [4, 1, 2, 5]
    assert explain.assigned_features(row, max_features=2) == [4, 1]
    assert explain.assigned_features(np.zeros(4)) == []


# ------------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------------


def _global_inputs(n_images: int, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(k)
    images = [_bird(i) for i in range(n_images)]
    maps = rng.random((n_images, k, 4, 4)) ** 4
    return images, maps


def test_global_explanation_png_is_readable_and_grows_with_the_grid() -> None:
    images, maps = _global_inputs(3, 5)
    fig = explain.global_explanation(
        images,
        maps,
        [17, 3, 42, 8, 29],
        [1, 1, 1, -1, 1],
        "Cardinal",
        concept_names={17: "has_crown_color::red"},
    )
    big = _decode(explain.png_bytes(fig))
    _assert_readable(big, 600, 400)
    images1, maps1 = _global_inputs(1, 2)
    small = _decode(
        explain.png_bytes(explain.global_explanation(images1, maps1, [1, 2], [1, -1], "Cardinal"))
    )
    _assert_readable(small, 350, 200)
    assert big.shape[1] > small.shape[1] + 200  # more features: more columns
    assert big.shape[0] > small.shape[0] + 200  # more images: more rows


def test_global_explanation_rejects_mismatched_inputs() -> None:
    images, maps = _global_inputs(2, 3)
    with pytest.raises(DataError, match="feature ids"):
        explain.global_explanation(images, maps, [1, 2], [1, 1], "c")
    with pytest.raises(DataError, match="feature_maps"):
        explain.global_explanation(images, maps[0], [1, 2, 3], [1, 1, 1], "c")


def test_local_explanation_png_is_readable_and_shows_the_feature_colour() -> None:
    img = _bird(3)
    maps = np.zeros((3, 4, 4))
    maps[0, 1, 1] = 1.0
    maps[1, 2, 3] = 2.0
    contrib = [1.5, 0.8, -0.4]
    fig = explain.local_explanation(img, maps, [17, 3, 8], contrib, "Cardinal", "Cardinal")
    pixels = _decode(explain.png_bytes(fig))
    _assert_readable(pixels, 700, 300)
    # the blue of feature 0 (tab10) fills its bar; the bars are drawn in the legend colours
    blue = np.round(explain.feature_colours(3)[0] * 255).astype(int)
    assert _count_colour(pixels, blue) > 500
    with pytest.raises(DataError, match="contributions"):
        explain.local_explanation(img, maps, [17, 3, 8], [1.0], "a", "b")


def test_assignment_matrix_shows_assignments_for_50_and_200_classes() -> None:
    rng = np.random.default_rng(0)
    for n_c in (50, 200):
        w = np.zeros((n_c, 50))
        for c in range(n_c):
            w[c, rng.choice(50, 5, replace=False)] = rng.choice([-1.0, 1.0, 1.0], 5) * 0.7
        fig = explain.assignment_matrix(w, [f"{c:03d}.class_{c}" for c in range(n_c)], range(50))
        pixels = _decode(explain.png_bytes(fig))
        _assert_readable(pixels, 350, 500)
        assert _count_colour(pixels, RED) > 100 * n_c // 50
        assert _count_colour(pixels, BLUE) > 20 * n_c // 50
    tall = pixels
    assert tall.shape[0] > tall.shape[1]  # 200 x 50 keeps its aspect
    # one negative assignment adds one blue cell (the colour bar is the same in both pictures)
    w = np.zeros((5, 4))
    before = _decode(explain.png_bytes(explain.assignment_matrix(w, list("abcde"), range(4))))
    w[2, 1] = -1.0
    after = _decode(explain.png_bytes(explain.assignment_matrix(w, list("abcde"), range(4))))
    assert _count_colour(after, BLUE) - _count_colour(before, BLUE) > 150
    assert _count_colour(after, RED) == _count_colour(before, RED)


def test_png_bytes_are_deterministic_and_save_png_is_atomic(tmp_path: Path) -> None:
    w = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    a = explain.png_bytes(explain.assignment_matrix(w, ["a", "b"], [0, 1, 2]))
    b = explain.png_bytes(explain.assignment_matrix(w, ["a", "b"], [0, 1, 2]))
    assert a == b
    out = tmp_path / "sub" / "matrix.png"
    explain.save_png(explain.assignment_matrix(w, ["a", "b"], [0, 1, 2]), out)
    assert out.read_bytes() == a
    explain.save_png(b"\x89PNG fake", tmp_path / "raw.png")
    assert (tmp_path / "raw.png").read_bytes() == b"\x89PNG fake"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["matrix.png", "raw.png", "sub"]
