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
* **Phase-1 problem** (``lowres_problem``), with ``x_low ≈ D x``:
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
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource
from diffrestore.diffusion.samplers import range_null_correct
from diffrestore.errors import UserError
from diffrestore.operators.colorize import Colorize
from diffrestore.operators.compose import Compose
from diffrestore.operators.denoise import Identity
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR, BicubicSR
from diffrestore.tiling.msr import DDNMSolver, bound, image_shape, msr, operator_align
from diffrestore.tiling.plan import Box, TilePlan, make_plan
from diffrestore.tiling.runner import Hook, PlanSummary, Progress, TileSolver, plan_summary

__all__ = ["LowFrequency", "LowResProblem", "ddnm_hir", "hir", "lowres_problem"]


@dataclass
class LowResProblem:
    """The phase-1 problem: ``y_low = op_low(x_low)`` with ``x_low ≈ D_f x``.

    ``sigma_scale`` multiplies σ_y for phase 1; ``exact`` is False where ``A ≠ A_low ∘ D``;
    ``identity`` marks ``A_low = I`` (noise-free: ``x_low = y_low`` without running the network).
    """

    op: Any
    y: torch.Tensor
    sigma_scale: float
    exact: bool = True
    identity: bool = False


def _pool(y: torch.Tensor, f: int) -> torch.Tensor:
    return F.avg_pool2d(y, f) if f > 1 else y


def lowres_problem(op: Any, y: torch.Tensor, factor: int) -> LowResProblem:
    """Build the phase-1 problem for HiR factor ``factor`` (see the module docstring for the rules)."""
    f = int(factor)
    if isinstance(op, Compose):
        if not all(getattr(o, "pointwise", False) for o in op.ops[:-1]) or isinstance(op.ops[-1], Inpaint):
            raise UserError(
                "hierarchical restoration supports compositions of pointwise operators (colorize) with SR, "
                "colorize or denoise inside"
            )
        inner = lowres_problem(op.ops[-1], y, f)
        return LowResProblem(Compose([*op.ops[:-1], inner.op], task=op.task), inner.y, inner.sigma_scale,
                             inner.exact, False)
    if isinstance(op, AvgPoolSR):
        s = op.scale
        if s % f == 0:
            if s == f:
                return LowResProblem(Identity(), y, 1.0, identity=True)
            return LowResProblem(AvgPoolSR(s // f), y, 1.0)
        if f % s == 0:
            return LowResProblem(Identity(), _pool(y, f // s), s / f, identity=True)
        raise UserError(f"hierarchical factor {f} and SR scale {s} must divide one another")
    if isinstance(op, BicubicSR):
        s = op.scale
        if s % f:
            raise UserError(f"hierarchical factor {f} must divide the bicubic SR scale {s}")
        low: Any = Identity() if s == f else BicubicSR(s // f, op.threshold)
        return LowResProblem(low, y, 1.0, exact=False, identity=s == f)
    if isinstance(op, Inpaint):
        if op.mask.shape[0] != 1:
            raise UserError("hierarchical restoration needs one inpainting mask for the image")
        m_low = -F.max_pool2d(-op.mask.to(torch.float32), f) > 0.5  # known iff all f² sub-pixels are known
        return LowResProblem(Inpaint(m_low), _pool(y, f) * m_low.to(y), 1.0 / f)
    if isinstance(op, Identity):
        return LowResProblem(type(op)(), _pool(y, f), 1.0 / f, identity=True)
    if isinstance(op, Colorize):
        return LowResProblem(Colorize(op.weights), _pool(y, f), 1.0 / f)
    raise UserError(
        f"hierarchical restoration does not support the {getattr(op, 'task', type(op).__name__)} operator "
        "(supported: sr, inpaint, colorize, denoise and colorize compositions)"
    )


class LowFrequency:
    """Phase-2 ``pre_correct`` builder: ``x0 ← x0 − D⁺(m ⊙ (D x0 − x_low,k))`` for a tile batch.

    ``x_low`` (``[1, C, h, w]``, the phase-1 result) is placed on the low-resolution canvas
    ``(canvas/f)``; ``m`` is 1 where it exists (0 in the margin), so the operator is ``D`` or
    ``Inpaint(m) ∘ D``. Tile boxes must start at multiples of f.
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
        self.D = AvgPoolSR(f)

    def __call__(self, boxes: list[Box]) -> Hook:
        f = self.factor
        for b in boxes:
            if any(v % f for v in b):
                raise ValueError(f"tile box {tuple(b)} is not aligned to the HiR factor {f}")
        win = [(b[0] // f, b[1] // f, b[2] // f, b[3] // f) for b in boxes]
        xl = torch.cat([self.x_low[..., t : t + h, l : l + w] for t, l, h, w in win])
        m = torch.cat([self.known[..., t : t + h, l : l + w] for t, l, h, w in win])
        low_op: Any = self.D if bool(m.all()) else Compose([Inpaint(m), self.D])

        def hook(x0: torch.Tensor, step: int) -> torch.Tensor:
            return range_null_correct(x0, low_op, xl.to(x0))

        return hook


def hir(
    make_solver: Callable[[float], TileSolver],
    op: Any,
    y: torch.Tensor,
    *,
    sigma_y: float = 0.0,
    factor: int = 2,
    tile: int = 256,
    overlap: int | None = None,
    batch: int = 1,
    lowres: LowResProblem | None = None,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    trace: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Two-phase HiR with any solver; ``make_solver(sigma)`` builds the solver of a phase for the noise
    std ``sigma`` of its measurement (phase 1: ``sigma_y · lowres.sigma_scale``, phase 2: ``sigma_y``).
    Returns ``[1, C, H, W]``.

    ``lowres`` overrides the automatic phase-1 problem (``lowres_problem``); its x is
    ``⌊H/f⌋ × ⌊W/f⌋``. ``trace`` (a dict) receives ``x_low`` and the ``lowres`` problem.
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
        lowres = lowres_problem(op1, y1, f)
    low_shape = (1, c, hf // f, wf // f)
    skip1 = lowres.identity and sigma_y == 0  # A_low = I, noise-free: DDNM would return y_low itself
    solver1 = None if skip1 else make_solver(sigma_y * lowres.sigma_scale)
    plan1 = make_plan(hf // f, wf // f, tile, overlap, operator_align(lowres.op))
    solver2 = make_solver(sigma_y)
    plan2 = make_plan(h, w, tile, overlap, math.lcm(f, operator_align(op)))
    if on_plan is not None:  # both phases are announced before any work
        if solver1 is not None:
            on_plan(plan_summary(plan1, solver1.calls_per_tile, batch, "waves", "hir phase 1"))
        on_plan(plan_summary(plan2, solver2.calls_per_tile, batch, "waves", "hir phase 2"))
    if solver1 is None:
        x_low = lowres.y.float()
    else:
        x_low = msr(solver1, lowres.op, lowres.y, x_shape=low_shape, plan=plan1, batch=batch, order="waves",
                    streams=lambda i: (1, i), progress=progress, phase="hir phase 1")
    if trace is not None:
        trace.update(x_low=x_low, lowres=lowres)
    return msr(solver2, op, y, x_shape=(1, c, h, w), plan=plan2, batch=batch, order="waves",
               pre_correct=LowFrequency(x_low, f, plan2), streams=lambda i: (2, i), progress=progress,
               phase="hir phase 2")


def ddnm_hir(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    noise: NoiseSource,
    factor: int = 2,
    steps: int = 100,
    eta: float = 0.85,
    sigma_y: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    start_t: int | None = None,
    tile: int = 256,
    overlap: int | None = None,
    batch: int = 1,
    compat: Literal["paper"] = "paper",
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    trace: dict[str, Any] | None = None,
) -> torch.Tensor:
    """DDNM + HiR + MSR (paper formulas; hq_demo has no HiR, so there is no official mode)."""
    if compat != "paper":
        raise UserError("hierarchical restoration has no official reference code: use compat 'paper'")

    def make(sigma: float) -> DDNMSolver:
        return DDNMSolver(denoiser, noise=noise, steps=steps, eta=eta, sigma_y=sigma, travel=travel,
                          start_t=start_t)

    return hir(make, op, y, sigma_y=sigma_y, factor=factor, tile=tile, overlap=overlap, batch=batch,
               on_plan=on_plan, progress=progress, trace=trace)
