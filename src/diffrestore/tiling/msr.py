"""Mask-Shift Restoration (MSR, seed 000 §3.3 / METHODS §2): restore an image of any size in P×P tiles.

Each tile is solved by a fixed-size solver with one extra constraint: the pixels that earlier tiles
already finished are known — pinned by projection (``TileContext.pin``, DDNM) or pulled by a loss
(``TileContext.overlap_loss``, SHRED). ``runner.run_tiles`` holds the canvas rules and the wave scheduler;
this module plans the tiles for an operator and announces the plan. It knows no method and no concrete
operator: alignment comes from ``op.tile_align()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from diffrestore.diffusion.noise import Stream
from diffrestore.errors import UserError
from diffrestore.progress import Event
from diffrestore.tiling.plan import TilePlan, make_plan
from diffrestore.tiling.runner import Hook, PlanSummary, TileProblem, TileSolver, plan_summary, run_tiles

__all__ = ["bound", "image_shape", "msr", "operator_align"]


def operator_align(op: Any) -> int:
    """Tile-start alignment an operator needs: ``op.tile_align()`` (duck-typed operators: 1)."""
    fn = getattr(op, "tile_align", None)
    if callable(fn):
        return int(fn())
    parts = getattr(op, "ops", None)
    if isinstance(parts, (list, tuple)):
        return math.lcm(1, *(operator_align(o) for o in parts))
    return 1


def image_shape(op: Any, y: torch.Tensor) -> tuple[int, int, int, int]:
    """``(1, C, H, W)`` of the image behind ``y``: the operator's bound shape, ``x_shape_from_y``, or
    the shape of ``A⁺y`` as a last resort (one image-sized tensor)."""
    bound_shape = getattr(op, "x_shape", None)
    if bound_shape is not None:
        return (1, *(int(v) for v in bound_shape[-3:]))
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
    sigma: float = 0.0,
    x_shape: Sequence[int] | None = None,
    tile: int = 256,
    overlap: int | None = None,
    align: int | None = None,
    batch: int = 1,
    order: Literal["waves", "raster", "independent"] | None = None,
    rule: str = "first",
    plan: TilePlan | None = None,
    streams: Callable[[int], Stream] | None = None,
    pre_correct: Callable[[list], Hook] | None = None,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Event], None] | None = None,
    phase: str = "",
) -> torch.Tensor:
    """Restore the whole image with any ``TileSolver`` over a tile plan; returns ``[1, C, H, W]``.

    ``sigma``: noise std of ``y`` (model units), handed to every tile's context. ``x_shape`` defaults to
    ``image_shape(op, y)``. ``plan`` overrides ``tile``/``overlap``/``align`` (default alignment:
    ``operator_align(op)``). ``order`` defaults to ``"raster"`` for sequential solvers, ``"independent"``
    for the blending rule and ``"waves"`` otherwise. ``on_plan`` receives the plan summary before any work.
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
        order = ("raster" if getattr(solver, "sequential", False)
                 else "independent" if rule == "blend" else "waves")
    if on_plan is not None:
        on_plan(plan_summary(plan, solver.calls_per_tile, batch, order, phase))
    return run_tiles(plan, TileProblem(op, y, pre_correct, sigma), solver, channels=c, batch=batch,
                     order=order, rule=rule, streams=streams, progress=progress, phase=phase,
                     dtype=torch.float32)
