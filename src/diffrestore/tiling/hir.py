"""Hierarchical Restoration (HiR, seed 000 §3.4 / METHODS §3.1–3.2): semantics at low resolution first.

Why: MSR tiles see only P×P pixels, so a subject larger than a tile gets no global structure. HiR first
restores a version reduced by a factor f (phase 1, MSR on an image where one tile covers the subject),
then restores the full size with MSR (phase 2) while keeping the low frequencies of phase 1.

Both phases are range–null-space projections with the shared operators:

* ``D`` = average pooling ×f (``AvgPoolSR(f)``), ``D⁺`` = replicate. Phase 2, per step and tile k:
  (1) ``x0 ← x0 − D⁺(D x0 − x_low,k)`` (low frequencies from phase 1; the ``pre_correct`` hook, i.e.
  ``range_null_correct`` with the tile's low-frequency operator), (2) the y correction (``y`` wins on
  range(A)), (3) the MSR mask (finished pixels win). Where a tile reaches past the phase-1 image
  (canvas margin, or the < f last rows/columns of a size that is not a multiple of f) the low-frequency
  operator is ``Inpaint(m_low) ∘ D``: no low-frequency constraint there.
* **Phase-1 problem** (each operator's ``lowres(y, f)``, ``operators``), with ``x_low ≈ D x``:
  - SR average pooling ×s: f | s → ``A_low`` = average pooling ×(s/f) and ``y_low = y`` (exact:
    ``A = A_low D``; f = s makes phase 1 the identity, ``x_low = y`` when noise-free); s | f →
    ``A_low = I``, ``y_low`` = average pooling ×(f/s) of y;
  - bicubic SR ×s, f | s: ``A_low`` = bicubic ×(s/f), ``y_low = y`` (approximate: bicubic does not
    factor through D exactly, documented);
  - colourisation, denoising: ``A_low = A`` (they commute with D), ``y_low = D y``;
  - inpainting: ``y_low = D y`` with the conservative mask "known iff all f² sub-pixels are known";
  - ``Compose`` of pointwise outer operators (colourisation) with one of the above inside: the same rule
    on the innermost operator.
  Others (deblurring, compressed sensing) raise ``UserError``.
* **Noise.** ``D`` averages f² pixels, so where ``y_low = D y`` its noise std is σ_y/f (phase 1 uses
  that, METHODS §3.1 suggestion); where ``y_low = y`` it stays σ_y.
* **Noise streams.** Phase-1 tile i draws from stream ``(1, i)``, phase-2 tile i from ``(2, i)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from diffrestore.errors import UserError
from diffrestore.progress import Event
from diffrestore.tiling.msr import bound, image_shape, msr, operator_align
from diffrestore.tiling.plan import Box, TilePlan, make_plan
from diffrestore.tiling.runner import Hook, PlanSummary, TileSolver, plan_summary

__all__ = ["LowFrequency", "hir"]


class LowFrequency:
    """Phase-2 ``pre_correct`` builder: ``x0 ← x0 − D⁺(m ⊙ (D x0 − x_low,k))`` for a tile batch.

    ``D`` is average pooling ×f and ``D⁺`` replication (its Moore–Penrose inverse); ``x_low``
    (``[1, C, h, w]``, the phase-1 result) is placed on the low-resolution canvas ``(canvas/f)``; ``m`` is 1
    where it exists (0 in the margin), so the projection is onto ``D`` or ``Inpaint(m) ∘ D``. Tile boxes
    must start at multiples of f.
    """

    def __init__(self, x_low: torch.Tensor, factor: int, plan: TilePlan) -> None:
        f = self.factor = int(factor)
        if plan.canvas_height % f or plan.canvas_width % f or plan.tile % f:
            raise ValueError(f"the phase-2 plan must be aligned to the HiR factor {f}")
        hc, wc = plan.canvas_height // f, plan.canvas_width // f
        _, c, h, w = x_low.shape
        self.x_low = x_low.new_zeros(1, c, hc, wc)
        self.x_low[..., :h, :w] = x_low
        self.known = torch.zeros(1, 1, hc, wc, dtype=torch.bool, device=x_low.device)
        self.known[..., :h, :w] = True

    def __call__(self, boxes: list[Box]) -> Hook:
        f = self.factor
        for b in boxes:
            if any(v % f for v in b):
                raise ValueError(f"tile box {tuple(b)} is not aligned to the HiR factor {f}")
        win = [(b[0] // f, b[1] // f, b[2] // f, b[3] // f) for b in boxes]
        xl = torch.cat([self.x_low[..., t : t + h, l : l + w] for t, l, h, w in win])
        m = torch.cat([self.known[..., t : t + h, l : l + w] for t, l, h, w in win])

        def hook(x0: torch.Tensor, step: int) -> torch.Tensor:
            r = torch.where(m, F.avg_pool2d(x0, f) - xl.to(x0), torch.zeros((), dtype=x0.dtype))
            return x0 - r.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)

        return hook


def hir(
    solver: TileSolver,
    op: Any,
    y: torch.Tensor,
    *,
    sigma: float = 0.0,
    factor: int = 2,
    tile: int = 256,
    overlap: int | None = None,
    batch: int = 1,
    lowres: Any = None,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Event], None] | None = None,
    on_low: Callable[[torch.Tensor, Any], None] | None = None,
) -> torch.Tensor:
    """Two-phase HiR with any solver (each tile's context carries its phase's noise std: phase 1
    ``sigma · lowres.sigma_scale``, phase 2 ``sigma``, model units). Returns ``[1, C, H, W]``.

    ``lowres`` overrides the operator's phase-1 problem (``op.lowres(y, f)``, an
    ``operators.LowResProblem``); its x is ``⌊H/f⌋ × ⌊W/f⌋``. ``on_low(x_low, lowres)`` is called with the
    phase-1 result (tests, previews).
    """
    f = int(factor)
    if f < 2:
        raise UserError(f"the hierarchical factor must be >= 2, got {factor}")
    if tile % f:
        raise UserError(f"tile {tile} must be a multiple of the hierarchical factor {f}")
    _, c, h, w = image_shape(op, y)
    op = bound(op, (c, h, w))
    hf, wf = h // f * f, w // f * f
    if hf == 0 or wf == 0:
        raise UserError(f"the image {h}x{w} is smaller than the hierarchical factor {f}")
    if lowres is None:
        op1, y1 = op, y
        if (hf, wf) != (h, w):  # phase 1 covers the largest multiple of f; the rest has no x_low
            box = [(0, 0, hf, wf)]
            op1, y1 = op.restrict(box, image_shape=(c, h, w)), op.restrict_y(y, box)
        if not hasattr(op1, "lowres"):
            raise UserError(f"hierarchical restoration does not support the {type(op1).__name__} operator")
        lowres = op1.lowres(y1, f)
    low_shape = (1, c, hf // f, wf // f)
    skip1 = lowres.identity and sigma == 0  # A_low = I, noise-free: the solver would return y_low itself
    plan1 = make_plan(hf // f, wf // f, tile, overlap, operator_align(lowres.op))
    plan2 = make_plan(h, w, tile, overlap, math.lcm(f, operator_align(op)))
    if on_plan is not None:  # both phases are announced before any work
        if not skip1:
            on_plan(plan_summary(plan1, solver.calls_per_tile, batch, "waves", "hir phase 1"))
        on_plan(plan_summary(plan2, solver.calls_per_tile, batch, "waves", "hir phase 2"))
    if skip1:
        x_low = lowres.y.float()
    else:
        x_low = msr(solver, lowres.op, lowres.y, sigma=sigma * lowres.sigma_scale, x_shape=low_shape,
                    plan=plan1, batch=batch, order="waves", streams=lambda i: (1, i), progress=progress,
                    phase="hir phase 1")
    if on_low is not None:
        on_low(x_low, lowres)
    return msr(solver, op, y, sigma=sigma, x_shape=(1, c, h, w), plan=plan2, batch=batch, order="waves",
               pre_correct=LowFrequency(x_low, f, plan2), streams=lambda i: (2, i), progress=progress,
               phase="hir phase 2")
