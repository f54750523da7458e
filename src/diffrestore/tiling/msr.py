"""Mask-Shift Restoration (MSR, seed 000 §3.3 / METHODS §2): restore an image of any size in P×P tiles.

Each tile is solved by a fixed-size method (DDNM here) with one extra constraint: the pixels that earlier
tiles already finished are treated as known, ``x̂ ← M_k ⊙ x_prev + (1 − M_k) ⊙ x̂``, applied after the y
correction at every step (``runner.run_tiles`` holds the canvas rule and the wave scheduler).

Two behaviours:

* **paper** (default): METHODS §2.2 — tiles from ``make_plan`` (any size, overlap ``P/2`` by default,
  aligned to the operator's scale), fresh ``N(0, I)`` per tile from the tile's own noise stream (its
  raster index), dependency waves batched ``batch`` tiles per network call; ``methods.ddnm.ddnm``.
* **official** (``compat="official"``): hq_demo — its tile plan (``hq_demo_plan``), its sampler
  (``methods.ddnm_hq``), tiles strictly in raster order with x_T chained from the previous tile's last
  sample, one shared noise stream. Reproduces ``refs/ddnm_msr_small``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.diffusion.schedules import ddnm_transitions
from diffrestore.errors import UserError
from diffrestore.methods.ddnm import ddnm
from diffrestore.methods.ddnm_hq import HQSchedule, ddnm_hq
from diffrestore.tiling.plan import TilePlan, hq_demo_plan, make_plan
from diffrestore.tiling.runner import (
    Hook,
    PlanSummary,
    Progress,
    TileProblem,
    TileSolver,
    plan_summary,
    run_tiles,
)

__all__ = ["DDNMSolver", "HQDemoSolver", "ddnm_msr", "image_shape", "msr", "operator_align"]


class DDNMSolver:
    """``TileSolver`` running ``methods.ddnm.ddnm`` (paper formulas) on a batch of tiles."""

    sequential = False

    def __init__(
        self,
        denoiser: Denoiser,
        *,
        noise: NoiseSource,
        steps: int = 100,
        eta: float = 0.85,
        sigma_y: float = 0.0,
        travel: tuple[int, int] = (1, 1),
        **ddnm_kwargs: Any,
    ) -> None:
        self.denoiser, self.noise = denoiser, noise
        self.kwargs = dict(steps=steps, eta=eta, sigma_y=sigma_y, travel=tuple(travel), **ddnm_kwargs)
        plan = ddnm_transitions(steps, travel[0], travel[1], denoiser.num_timesteps,
                                start=ddnm_kwargs.get("start_t"))
        self.calls_per_tile = sum(1 for tr in plan if tr.kind == "denoise")

    def __call__(
        self,
        op: Any,
        y: torch.Tensor,
        *,
        shape: tuple[int, int, int, int],
        constrain_x0: Hook,
        pre_correct: Hook | None,
        streams: Sequence[Stream],
    ) -> torch.Tensor:
        x_T = draw_batch(self.noise, shape, streams, device=y.device)
        return ddnm(self.denoiser, op, y, noise=self.noise, x_T=x_T, constrain_x0=constrain_x0,
                    pre_correct=pre_correct, streams=streams, **self.kwargs)


class HQDemoSolver:
    """``TileSolver`` with hq_demo's sampler and its chained x_T (so ``sequential``: raster order only).

    The first tile draws x_T; every later tile starts from the previous tile's last sample (in the
    previous window's coordinates, as hq_demo does). All draws come from one stream (0), like the
    official global RNG.
    """

    sequential = True

    def __init__(
        self,
        denoiser: Denoiser,
        *,
        noise: NoiseSource,
        steps: int = 100,
        sigma_y: float = 0.0,
        travel: tuple[int, int] = (1, 1),
        official_lambda: bool = True,
        trace: dict[str, Any] | None = None,
    ) -> None:
        self.denoiser, self.noise, self.sigma_y = denoiser, noise, float(sigma_y)
        self.schedule = HQSchedule(denoiser.betas, steps, tuple(travel))
        self.calls_per_tile = self.schedule.network_calls
        self.official_lambda = official_lambda
        self.trace = trace
        self._x: torch.Tensor | None = None
        self._tile = 0

    def __call__(
        self,
        op: Any,
        y: torch.Tensor,
        *,
        shape: tuple[int, int, int, int],
        constrain_x0: Hook,
        pre_correct: Hook | None,
        streams: Sequence[Stream],
    ) -> torch.Tensor:
        if shape[0] != 1:
            raise ValueError("hq_demo's chained sampler runs one tile at a time")
        x_T = draw_batch(self.noise, shape, [0], device=y.device) if self._x is None else self._x
        tr: dict[str, Any] | None = {} if self.trace is not None else None
        x0hat, self._x = ddnm_hq(
            self.denoiser, op, y, sigma_y=self.sigma_y, noise=self.noise, x_T=x_T, streams=[0],
            constrain_x0=constrain_x0, pre_correct=pre_correct, schedule=self.schedule,
            official_lambda=self.official_lambda, trace=tr,
        )
        if self.trace is not None and tr is not None:
            self.trace[f"xstart.{self._tile:02d}"] = x_T.detach().clone()
            for key, v in tr.items():  # "xt.KKK" -> "xt.TT.KKK", the refs' naming
                name, step = key.split(".")
                self.trace[f"{name}.{self._tile:02d}.{step}"] = v
        self._tile += 1
        return x0hat


def operator_align(op: Any) -> int:
    """Tile-start alignment an operator needs: the lcm of its grid sizes (SR ×s: ``scale``; block
    Walsh–Hadamard CS: ``block``; an explicit ``align``), over all parts of a composition; else 1.

    Why: a tile's measurement must be a whole window of y (LR pixels, whole CS blocks).
    """
    parts = getattr(op, "ops", None)
    if isinstance(parts, (list, tuple)):
        return math.lcm(1, *(operator_align(o) for o in parts))
    a = 1
    for name in ("align", "scale", "block"):
        v = getattr(op, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            a = math.lcm(a, v)
    return a


def image_shape(op: Any, y: torch.Tensor) -> tuple[int, int, int, int]:
    """``(1, C, H, W)`` of the image behind ``y``: the operator's bound shape, ``x_shape_from_y``, or
    the shape of ``A⁺y`` as a last resort (one image-sized tensor)."""
    bound = getattr(op, "x_shape", None)
    if bound is not None:
        return (1, *(int(v) for v in bound[-3:]))
    try:
        return tuple(int(v) for v in op.x_shape_from_y(tuple(y.shape)))  # type: ignore[return-value]
    except (AttributeError, NotImplementedError):
        return tuple(int(v) for v in op.pinv(y).shape)  # type: ignore[return-value]


def bound(op: Any, chw: tuple[int, int, int]) -> Any:
    """``op`` with its image shape fixed (a bound copy if it was unbound), so tile operators know their
    size (``singular_values()`` of DDNM+'s SVD rule) and size errors surface before any work."""
    if getattr(op, "x_shape", 1) is None and hasattr(op, "bind"):
        return op.to().bind(chw)
    return op


def msr(
    solver: TileSolver,
    op: Any,
    y: torch.Tensor,
    *,
    x_shape: Sequence[int] | None = None,
    tile: int = 256,
    overlap: int | None = None,
    align: int | None = None,
    batch: int = 1,
    order: Literal["waves", "raster"] | None = None,
    plan: TilePlan | None = None,
    streams: Callable[[int], Stream] | None = None,
    pre_correct: Callable[[list], Hook] | None = None,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    phase: str = "",
) -> torch.Tensor:
    """Mask-Shift Restoration of the whole image with any ``TileSolver``; returns ``[1, C, H, W]``.

    ``x_shape`` defaults to ``image_shape(op, y)``. ``plan`` overrides ``tile``/``overlap``/``align``
    (default alignment: ``operator_align(op)``). ``order`` defaults to ``"raster"`` for sequential
    solvers and ``"waves"`` otherwise. ``on_plan`` receives the plan summary before any work.
    """
    if y.shape[0] != 1:
        raise UserError(f"MSR restores one image at a time, got a batch of {y.shape[0]}")
    if x_shape is None:
        x_shape = image_shape(op, y)
    _, c, h, w = (int(v) for v in x_shape)
    op = bound(op, (c, h, w))
    if plan is None:
        plan = make_plan(h, w, tile, overlap, operator_align(op) if align is None else align)
    elif (plan.height, plan.width) != (h, w):
        raise ValueError(f"plan is for {plan.height}x{plan.width}, the image is {h}x{w}")
    if order is None:
        order = "raster" if getattr(solver, "sequential", False) else "waves"
    if on_plan is not None:
        on_plan(plan_summary(plan, solver.calls_per_tile, batch, order, phase))
    return run_tiles(plan, TileProblem(op, y, pre_correct), solver, channels=c, batch=batch, order=order,
                     streams=streams, progress=progress, phase=phase, dtype=torch.float32)


def ddnm_msr(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    noise: NoiseSource,
    steps: int = 100,
    eta: float = 0.85,
    sigma_y: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    start_t: int | None = None,
    tile: int = 256,
    overlap: int | None = None,
    batch: int = 1,
    compat: Literal["paper", "official"] = "paper",
    order: Literal["waves", "raster"] | None = None,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    trace: dict[str, Any] | None = None,
) -> torch.Tensor:
    """DDNM + Mask-Shift Restoration of an image of any size (model range [-1, 1]) → ``[1, C, H, W]``.

    ``compat="paper"``: METHODS §2.2 (``sigma_y`` in [0, 1] file units, as ``ddnm``). ``compat="official"``:
    hq_demo (its plan needs ``overlap = tile/2`` and an output ≥ tile; ``sigma_y`` used as given, in model
    units, like hq_demo; ``eta`` unused; ``trace`` gets hq_demo-named per-tile traces).
    """
    if compat == "official":
        if overlap not in (None, tile // 2) or tile % 2:
            raise UserError("compat official uses hq_demo's fixed 50% overlap (even tile, overlap = tile/2)")
        x_shape = image_shape(op, y)
        plan = hq_demo_plan(int(x_shape[2]), int(x_shape[3]), tile, tile // 2)
        solver: TileSolver = HQDemoSolver(denoiser, noise=noise, steps=steps, sigma_y=sigma_y,
                                          travel=travel, trace=trace)
        return msr(solver, op, y, x_shape=x_shape, plan=plan, order="raster", on_plan=on_plan,
                   progress=progress, phase="msr (official)")
    if compat != "paper":
        raise UserError(f"unknown compat {compat!r}: use 'paper' or 'official'")
    solver = DDNMSolver(denoiser, noise=noise, steps=steps, eta=eta, sigma_y=sigma_y, travel=travel,
                        start_t=start_t)
    return msr(solver, op, y, tile=tile, overlap=overlap, batch=batch, order=order, on_plan=on_plan,
               progress=progress, phase="msr")

