"""Hierarchical Restoration: phase-1 problems, consistency with y, low-frequency agreement with phase 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiled_ddnm import ddnm_hir

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import SeededNoise
from diffrestore.errors import UserError
from diffrestore.operators.colorize import Colorize
from diffrestore.operators.denoise import Identity
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR

KW = dict(steps=5, eta=0.85, tile=32)


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g) * 2 - 1, size=(h, w),
                         mode="bilinear", align_corners=False)


def _hole_mask(h: int, w: int) -> torch.Tensor:
    m = torch.ones(1, 1, h, w, dtype=torch.bool)
    m[..., h // 4 : h // 4 + h // 2 + 1, w // 5 : w // 5 + w // 2 + 3] = False  # a big hole, odd edges
    return m


def test_lowres_problems() -> None:
    y = torch.randn(1, 3, 8, 12)
    p = AvgPoolSR(4).lowres(y, 2)
    assert isinstance(p.op, AvgPoolSR) and p.op.scale == 2 and p.y is y and p.sigma_scale == 1.0
    p = AvgPoolSR(2).lowres(y, 2)
    assert isinstance(p.op, Identity) and p.identity
    p = AvgPoolSR(2).lowres(y, 4)  # f multiple of s: x_low = pool(y), noise std halves
    assert p.identity and p.y.shape == (1, 3, 4, 6) and p.sigma_scale == 0.5
    m = torch.ones(1, 1, 8, 12, dtype=torch.bool)
    m[0, 0, 0, 0] = False
    p = Inpaint(m).lowres(y, 2)
    assert not p.op.mask[0, 0, 0, 0] and p.op.mask.sum() == 4 * 6 - 1  # known iff all f² pixels known
    torch.testing.assert_close(p.y[..., 1:, 1:], F.avg_pool2d(y, 2)[..., 1:, 1:])
    p = Colorize().lowres(y[:, :1], 2)
    assert isinstance(p.op, Colorize) and p.y.shape == (1, 1, 4, 6) and p.sigma_scale == 0.5
    with pytest.raises(UserError):
        AvgPoolSR(3).lowres(y, 2)


def test_hir_inpainting_consistent_and_keeps_low_frequencies(denoiser: Denoiser) -> None:
    """Non-square 48×80 (> tile): A x = y, and D x = x_low wherever a 2×2 block is all known/unknown."""
    x = _image(48, 80)
    op = Inpaint(_hole_mask(48, 80))
    y = op.A(x)
    trace: dict = {}
    plans: list = []
    with torch.no_grad():
        out = ddnm_hir(denoiser, op, y, noise=SeededNoise(0), factor=2, batch=2, trace=trace,
                       on_plan=plans.append, **KW)
    assert out.shape == (1, 3, 48, 80)
    assert (op.A(out) - y).abs().max() < 1e-6
    assert [s.phase for s in plans] == ["hir phase 1", "hir phase 2"]
    m = op.mask.float()
    pure = (F.avg_pool2d(m, 2) == 0) | (F.avg_pool2d(m, 2) == 1)  # blocks not cut by the hole's edge
    diff = (F.avg_pool2d(out, 2) - trace["x_low"]).abs()
    assert pure.float().mean() > 0.9 and diff[pure.expand_as(diff)].max() < 1e-5


def test_hir_sr_phase1_runs_and_agrees(denoiser: Denoiser) -> None:
    """SR ×4 with f = 2: phase 1 is SR ×2 at half size; the result matches y and D x = x_low."""
    op = AvgPoolSR(4)
    y = op.A(_image(64, 96, seed=1))
    trace: dict = {}
    with torch.no_grad():
        out = ddnm_hir(denoiser, op, y, noise=SeededNoise(1), factor=2, batch=4, trace=trace, **KW)
    assert out.shape == (1, 3, 64, 96)
    assert (op.A(out) - y).abs().max() < 1e-6 and trace["x_low"].shape == (1, 3, 32, 48)
    assert (F.avg_pool2d(out, 2) - trace["x_low"]).abs().max() < 1e-5
    assert (AvgPoolSR(2).A(trace["x_low"]) - y).abs().max() < 1e-6  # phase 1 solved y = A_low x_low


def test_hir_odd_size(denoiser: Denoiser) -> None:
    """41×57 is not a multiple of f: phase 1 covers 40×56, the padded phase-2 canvas is cropped."""
    x = _image(41, 57, seed=2)
    op = Inpaint(_hole_mask(41, 57))
    y = op.A(x)
    with torch.no_grad():
        out = ddnm_hir(denoiser, op, y, noise=SeededNoise(2), factor=2, **KW)
    assert out.shape == (1, 3, 41, 57)
    assert (op.A(out) - y).abs().max() < 1e-6
