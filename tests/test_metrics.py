"""PSNR / SSIM / Y channel / MATLAB imresize / consistency / timing.

The anchor tests pin the whole SR-evaluation pipeline (resize + Y + crop + PSNR/SSIM) to the published
bicubic numbers in ANCHORS.md; the small tests pin each convention by hand-computable cases.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import require
from scipy.ndimage import correlate

from diffrestore.metrics import (
    consistency,
    consistency_stats,
    imresize,
    measure,
    psnr,
    psnr_batch,
    psnr_y,
    resize_matrix,
    rgb_to_y,
    ssim,
    ssim_batch,
    ssim_y,
)
from diffrestore.metrics.ssim import gaussian_window_1d

EVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def _load_set(name: str) -> list[np.ndarray]:
    """All images of one eval set as uint8 RGB HWC arrays (skip the test when the data is absent)."""
    from PIL import Image

    d = EVAL_DIR / name
    require(d, "eval set")
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(d.glob("*.png"))]


def _bicubic_scores(images: list[np.ndarray], s: int) -> tuple[float, float]:
    """Mean (PSNR-Y, SSIM-Y) of MATLAB bicubic down-up by ``s``, border ``s`` (the SR benchmark protocol)."""
    ps, ss = [], []
    for hr in images:
        h, w = hr.shape[:2]
        hr = hr[: h - h % s, : w - w % s]
        sr = imresize(imresize(hr, 1 / s), s)
        ps.append(psnr_y(sr, hr, crop_border=s))
        ss.append(ssim_y(sr, hr, crop_border=s))
    return float(np.mean(ps)), float(np.mean(ss))


# ---------------------------------------------------------------- published anchors


@pytest.mark.parametrize(
    ("scale", "want_psnr", "want_ssim"), [(4, 28.43, 0.8111), (2, 33.67, None), (8, 24.40, None)]
)
def test_set5_bicubic_matches_published(scale: int, want_psnr: float, want_ssim: float | None) -> None:
    p, s = _bicubic_scores(_load_set("Set5"), scale)
    assert abs(p - want_psnr) < 0.01, p
    if want_ssim is not None:
        assert abs(s - want_ssim) < 0.0005, s


# ---------------------------------------------------------------- PSNR by hand


def test_psnr_identical_is_inf() -> None:
    a = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    t = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    assert torch.isinf(psnr_batch(t, t)).all()


def test_psnr_known_mse() -> None:
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    b = np.full((16, 16, 3), 10, dtype=np.uint8)  # MSE = 100 (uint8 must not wrap around)
    want = 10 * math.log10(255.0**2 / 100.0)
    assert psnr(a, b) == pytest.approx(want, abs=1e-12)
    assert psnr(b, a) == pytest.approx(want, abs=1e-12)
    # Half the pixels off by 2 -> MSE 2.
    c = a.copy()
    c[:8] = 2
    assert psnr(a, c) == pytest.approx(10 * math.log10(255.0**2 / 2.0), abs=1e-12)


def test_psnr_crop_border_ignores_frame() -> None:
    a = np.full((20, 20), 100.0)
    b = a.copy()
    b[:3] = 0
    b[:, -3:] = 255
    assert psnr(a, b, crop_border=3) == math.inf
    assert psnr(a, b, crop_border=2) < 20


def test_rgb_to_y_bt601_studio_range() -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(rgb)
    assert np.allclose(y[0], [16.0, 16 + 65.481 + 128.553 + 24.966, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    assert y[0, 1] == pytest.approx(235.0, abs=1e-9)
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    assert torch.allclose(rgb_to_y(t)[0, 0] * 255, torch.from_numpy(y), atol=1e-9)


def test_psnr_y_known_value() -> None:
    # Green channel +10 only: Y moves by 128.553 * 10 / 255 everywhere.
    a = np.full((12, 12, 3), 100, dtype=np.uint8)
    b = a.copy()
    b[..., 1] += 10
    dy = 128.553 * 10 / 255
    assert psnr_y(a, b) == pytest.approx(10 * math.log10(255.0**2 / dy**2), abs=1e-9)


def test_grey_image_scored_on_raw_values() -> None:
    a = np.full((12, 12), 50.0)
    b = a + 5
    assert psnr(a, b, test_y_channel=True) == pytest.approx(10 * math.log10(255.0**2 / 25.0))


def test_numpy_and_tensor_entry_points_agree() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    for y in (False, True):
        pn = psnr(a, b, crop_border=2, test_y_channel=y)
        assert psnr(ta, tb, crop_border=2, test_y_channel=y) == pytest.approx(pn, abs=1e-9)
        assert float(psnr_batch(ta, tb, 2, y, quantize=True)[0]) == pytest.approx(pn, abs=1e-9)
        sn = ssim(a, b, crop_border=2, test_y_channel=y)
        assert ssim(ta, tb, crop_border=2, test_y_channel=y) == pytest.approx(sn, abs=1e-12)
        assert float(ssim_batch(ta, tb, 2, y, quantize=True)[0]) == pytest.approx(sn, abs=1e-12)
    # Batches score each image separately.
    both = psnr_batch(torch.cat([ta, ta]), torch.cat([tb, ta]))
    assert both.shape == (2,) and torch.isinf(both[1]) and math.isfinite(float(both[0]))


# ---------------------------------------------------------------- SSIM by hand


def test_ssim_identical_is_one_and_symmetric() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (32, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 30, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert ssim(a, b) < 0.1


def test_ssim_constant_images_closed_form() -> None:
    # Constant images: sigma terms vanish, SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1).
    c1, c2 = 100.0, 120.0
    k1 = (0.01 * 255) ** 2
    want = (2 * c1 * c2 + k1) / (c1**2 + c2**2 + k1)
    assert ssim(np.full((16, 16), c1), np.full((16, 16), c2)) == pytest.approx(want, abs=1e-12)


def test_ssim_matches_direct_2d_valid_filtering() -> None:
    # Independent check of the separable/batched implementation: non-separable 11x11 window, scipy, crop 5.
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 255, (30, 27))
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    g = gaussian_window_1d().numpy()
    win = np.outer(g, g)

    def filt(x: np.ndarray) -> np.ndarray:
        return correlate(x, win, mode="constant")[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    k1, k2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mu1 * mu2 + k1) * (2 * s12 + k2)) / ((mu1**2 + mu2**2 + k1) * (s11 + s22 + k2))
    assert ssim(a, b) == pytest.approx(float(smap.mean()), abs=1e-12)
    # Per-channel mean for colour images.
    a3, b3 = np.stack([a, b, a], -1), np.stack([b, b, b], -1)
    want = np.mean([ssim(a3[..., c], b3[..., c]) for c in range(3)])
    assert ssim(a3, b3) == pytest.approx(want, abs=1e-12)


def test_gaussian_window_matches_opencv_definition() -> None:
    g = gaussian_window_1d(11, 1.5).numpy()
    x = np.arange(11) - 5
    ref = np.exp(-(x**2) / (2 * 1.5**2))
    assert np.allclose(g, ref / ref.sum(), atol=1e-15)


# ---------------------------------------------------------------- imresize


def test_imresize_shapes_and_constants() -> None:
    a = np.full((17, 23, 3), 77, dtype=np.uint8)
    assert imresize(a, 0.5).shape == (9, 12, 3)  # ceil
    assert (imresize(a, 0.5) == 77).all() and (imresize(a, 3) == 77).all()
    assert imresize(a, output_shape=(10, 40)).shape == (10, 40, 3)


def test_imresize_torch_numpy_and_matrix_agree() -> None:
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 1, (19, 26, 3))
    t = torch.from_numpy(a).permute(2, 0, 1)[None]
    for s in (0.25, 0.5, 1 / 3, 2, 4):
        n = imresize(a, s)
        tt = imresize(t, s)
        assert isinstance(tt, torch.Tensor) and tt.dtype == torch.float64
        assert np.allclose(tt[0].permute(1, 2, 0).numpy(), n, atol=1e-12)
        rh, rw = resize_matrix(19, scale=s), resize_matrix(26, scale=s)
        assert np.allclose(np.einsum("ih,hwc,jw->ijc", rh, a, rw), n, atol=1e-12)
        assert np.allclose(rh.sum(1), 1.0)


def test_imresize_known_small_case() -> None:
    # Upsampling x2 of a 1-D ramp: interior samples are the cubic (a = -0.5) interpolant, which reproduces
    # linear functions exactly; output pixel i (1-based) sits at u = i/2 + 1/4 in input coordinates.
    ramp = np.arange(1.0, 9.0)[None, :]  # 1..8 at positions 1..8
    out = imresize(np.repeat(ramp, 8, 0), 2.0)
    u = np.arange(1, 17) / 2 + 0.25
    interior = (u > 2) & (u < 7)
    assert np.allclose(out[4, interior], u[interior], atol=1e-12)
    # Downsampling by 2 with antialiasing averages symmetric neighbourhoods: a ramp stays a ramp inside.
    down = imresize(np.repeat(np.arange(1.0, 33.0)[None], 4, 0), 0.5)
    u = np.arange(1, 17) * 2 - 0.5
    assert np.allclose(down[0, 3:-3], u[3:-3], atol=1e-12)


def test_imresize_uint8_rounds_and_is_differentiable_in_torch() -> None:
    a = np.random.default_rng(5).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    out = imresize(a, 2)
    assert out.dtype == np.uint8
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    imresize(x, 0.5).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- consistency / timing


def test_consistency_rms_and_max() -> None:
    x = torch.zeros(1, 3, 4, 4)
    y = torch.zeros(1, 3, 4, 4)
    y[0, 0, 0, 0] = 2.0
    st = consistency_stats(lambda t: t, x, y)
    assert st.rms == pytest.approx(2.0 / math.sqrt(48))
    assert st.max_abs == pytest.approx(2.0)

    class Down:
        def A(self, t: torch.Tensor) -> torch.Tensor:  # noqa: N802
            return torch.nn.functional.avg_pool2d(t, 2)

    xx = torch.rand(2, 3, 8, 8)
    assert consistency(Down(), xx, Down().A(xx)) == 0.0
    with pytest.raises(ValueError):
        consistency(Down(), xx, xx)


def test_measure_reports_time_cpu_and_peak() -> None:
    with measure("alloc") as t:
        buf = np.ones(40_000_000 // 8)  # 40 MB, touched
        buf.sum()
    assert t.wall_s > 0 and t.cpu_s >= 0
    assert t.peak_rss_bytes > 40_000_000
    assert "alloc" in str(t)
