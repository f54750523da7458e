"""seam_score: ~1 without seams, >> 1 with a step at the join, seams derived from tile boxes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import require

from diffrestore.metrics import seam_score, seams_from_boxes

SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "Set5"


def _smooth(h: int = 192, w: int = 256) -> np.ndarray:
    """A smooth, statistically stationary colour image (Gaussian-filtered noise on a ramp), 0-255 scale.

    Stationary so that every row/column has the same expected neighbour difference -- a deterministic
    pattern (e.g. a sinusoid) makes single seams score anywhere in 0.6-1.4 depending on where they fall.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(0, 1, (h, w, 3)), sigma=(3, 3, 0))
    field *= 12 / field.std()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return 128 + field + 0.2 * (xx + yy)[..., None]


def test_smooth_image_scores_about_one() -> None:
    img = _smooth()
    assert seam_score(img, xs=[64, 128, 192], ys=[64, 128]) == pytest.approx(1.0, abs=0.1)


def test_step_at_seam_scores_high() -> None:
    img = _smooth()
    img[:, 128:] += 6.0  # a 6-grey-level brightness jump where two tiles meet
    assert seam_score(img, xs=[128]) > 1.5
    img2 = _smooth()
    img2[96:] -= 6.0
    assert seam_score(img2, ys=[96]) > 1.5
    # A horizontal step leaves every horizontal neighbour difference unchanged: a vertical seam elsewhere
    # scores exactly as on the clean image.
    assert seam_score(img2, xs=[128]) == pytest.approx(seam_score(_smooth(), xs=[128]), rel=1e-12)


def test_natural_images_score_about_one_and_tile_offsets_are_caught() -> None:
    from PIL import Image

    require(SET5, "Set5 eval photos")
    rng = np.random.default_rng(1)
    for p in sorted(SET5.glob("*.png")):
        img = np.asarray(Image.open(p).convert("RGB")).astype(np.float64)
        h, w = img.shape[:2]
        xs, ys = list(range(64, w, 64)), list(range(64, h, 64))
        assert 0.8 < seam_score(img, xs=xs, ys=ys) < 1.25, p.name
        # Independent per-tile brightness errors of a few grey levels, as badly stitched tiles would have.
        tiled = img.copy()
        for y0 in range(0, h, 64):
            for x0 in range(0, w, 64):
                tiled[y0 : y0 + 64, x0 : x0 + 64] += rng.uniform(-20, 20)
        assert seam_score(tiled, xs=xs, ys=ys) > 1.5, p.name


def test_seams_from_boxes_and_box_argument() -> None:
    boxes = [(0, 0, 64, 64), (0, 48, 64, 64), (40, 0, 64, 64), (40, 48, 64, 64)]  # 104x112, overlapping
    xs, ys = seams_from_boxes(boxes, 104, 112)
    assert xs == [48, 64] and ys == [40, 64]
    img = _smooth(104, 112)
    assert seam_score(img, boxes=boxes) == seam_score(img, xs=xs, ys=ys)


def test_orientation_matched_reference_and_edge_cases() -> None:
    # Vertical stripes: large horizontal differences everywhere, none vertically. A vertical seam inside
    # this texture is unremarkable (~1) because it is compared with horizontal pairs only.
    x = np.arange(64)
    stripes = np.tile((x % 2) * 100.0, (48, 1))
    assert seam_score(stripes, xs=[32]) == pytest.approx(1.0, abs=1e-9)
    assert seam_score(np.full((10, 10), 3.0), xs=[5]) == 1.0
    assert math.isnan(seam_score(np.zeros((10, 10))))
    with pytest.raises(ValueError):
        seam_score(np.zeros((10, 10)), xs=[10])
    t = torch.from_numpy(_smooth()).permute(2, 0, 1)[None] / 255
    assert seam_score(t, xs=[64]) == pytest.approx(seam_score(_smooth(), xs=[64]), rel=1e-12)


def test_grid_reference_ignores_lattice_blockiness() -> None:
    """An upsampled-looking image (jumps at every 4th line) with tile edges on that lattice: seam score
    against all pairs reads a seam, against the 4-pixel lattice it reads none; a real step still shows."""
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.random((16, 16, 3)), np.ones((4, 4, 1)))  # HWC 64x64, LR-block structure
    boxes = [(0, 0, 64, 32), (0, 32, 64, 32)]  # one seam at x = 32, a multiple of 4
    assert seam_score(blocks, boxes=boxes) > 2.0
    assert abs(seam_score(blocks, boxes=boxes, grid=4) - 1.0) < 0.3
    stepped = blocks * 0.5  # stay inside [0, 1]
    stepped[:, 32:, :] += 0.5
    assert seam_score(stepped, boxes=boxes, grid=4) > 1.5
