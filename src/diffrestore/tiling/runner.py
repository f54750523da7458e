"""Generic tiled driver: Mask-Shift Restoration over waves for any solver with an x0|t hook.

Why a separate driver: DDNM today, SHRED/ADIR later, and hq_demo's official sampler all restore a *batch of
P×P tiles* given a restricted operator, its measurement and a hook ``constrain_x0(x0hat, step)``. The
driver owns everything about the image as a whole — the canvas, the finished map, the order of tiles,
batching, noise streams, progress — so each solver stays a plain fixed-size method.

**MSR canvas rule** (METHODS §2.1–2.2; identical for every solver):

* canvas ``X`` (``[1, C, Hc, Wc]``, the plan's canvas) and finished map ``F`` (``[Hc, Wc]`` bool) start
  at 0 / False;
* tile k reads, once before it starts, ``M_k = F[Ω_k]`` and ``x_prev = X[Ω_k]``; the hook replaces the
  finished pixels of every x0 estimate, ``x̂ ← where(M_k, x_prev, x̂)`` (a copy, so finished pixels are
  carried bit-exactly);
* after tile k, only its *new* pixels are written, ``X[Ω_k] ← where(M_k, X[Ω_k], out_k)``, and
  ``F[Ω_k] ← True``. Finished pixels therefore never change: every pixel of the output is the value
  of the first tile (in raster order) that covers it. For DDNM the returned x̂0 equals ``x_prev`` on
  ``M_k`` anyway, so this equals writing the whole window (what hq_demo does); for loss-based solvers
  (SHRED, METHODS §3.4) it is the "write only new pixels" rule.

**Order.** ``order="waves"`` runs the dependency waves of ``plan.waves`` (a tile waits for every
raster-earlier tile that overlaps it), batching up to ``batch`` tiles of a wave per network call;
``order="raster"`` runs one tile at a time in raster order (required by solvers that carry state from
tile to tile, like hq_demo's chained x_T). With per-tile noise streams both orders feed every tile the
same inputs (METHODS §3.3 theorem), so waves with ``batch=1`` are bit-identical to raster order.

**Padding.** Where the canvas exceeds the image (images smaller than a tile, alignment), a tile's
operator only sees its part inside the image (``pad_tile``): the margin is null space, generated
by the prior and cropped away at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from diffrestore.diffusion.noise import Stream
from diffrestore.progress import Event, Ticker
from diffrestore.tiling.distributed import WaveExecutor, current_executor
from diffrestore.tiling.plan import Box, TilePlan, waves

__all__ = [
    "RULES",
    "Hook",
    "PadTileOperator",
    "PlanSummary",
    "TileContext",
    "TileProblem",
    "TileSolver",
    "blend_weights",
    "masked_mse",
    "pad_tile",
    "plan_summary",
    "run_tiles",
    "tile_batches",
]

Hook = Callable[[torch.Tensor, int], torch.Tensor]


class TileContext:
    """One tile batch as data: what a solver needs to restore it, and the MSR/HiR constraints as helpers.

    ``op``/``y``: the tiles' restricted operator and observation (model units); ``sigma``: the noise std
    of y in model units; ``shape``: ``[B, C, P, P]``; ``streams``: one noise stream per tile;
    ``known``/``finished``: the MSR mask ``[B, 1, P, P]`` of pixels earlier tiles finished and their
    values ``[B, C, P, P]``; ``low``: HiR's low-frequency correction (None outside HiR phase 2);
    ``boxes``: canvas boxes. The solver decides about gradients; the helpers are differentiable.
    """

    def __init__(self, op: Any, y: torch.Tensor, *, sigma: float, shape: tuple[int, int, int, int],
                 streams: Sequence[Stream], known: torch.Tensor, finished: torch.Tensor,
                 low: Hook | None = None, boxes: Sequence[Box] = ()) -> None:
        self.op, self.y, self.sigma, self.shape = op, y, float(sigma), tuple(shape)
        self.streams, self.known, self.finished, self.low = list(streams), known, finished, low
        self.boxes = list(boxes)

    @property
    def any_known(self) -> bool:
        return bool(self.known.any())

    def pin(self, x0: torch.Tensor, step: int = 0) -> torch.Tensor:
        """MSR by projection: the finished pixels replace the estimate (a copy, bit-exact)."""
        return torch.where(self.known, self.finished.to(x0.dtype), x0)

    def low_correct(self, x0: torch.Tensor, step: int = 0) -> torch.Tensor:
        """HiR's low-frequency projection (identity outside HiR phase 2)."""
        return x0 if self.low is None else self.low(x0, step)

    def overlap_loss(self, x0: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """MSR as a loss (METHODS §3.4): ``‖M_k ⊙ (x0 − x_prev)‖² / max(1, ΣM_k)`` per tile.

        ``reduction="sum"`` sums the per-tile terms (batched optimisation then equals per-tile runs),
        ``"none"`` returns them ``[B]`` (per-tile stopping).
        """
        return masked_mse(x0, self.known, self.finished, reduction)


def masked_mse(x0: torch.Tensor, known: torch.Tensor, finished: torch.Tensor,
               reduction: str = "sum") -> torch.Tensor:
    """Per-sample ``‖M ⊙ (x0 − finished)‖² / max(1, count(M))`` (M broadcast to x0; 0 with no known pixel)."""
    m = known.to(x0.dtype).expand_as(x0)
    per = (m * (x0 - finished.to(x0.dtype))).square().flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
    if reduction == "none":
        return per
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    return per.sum()


class TileSolver(Protocol):
    """Restores one tile batch (``ctx.shape``) given a :class:`TileContext`; what the driver needs.

    ``calls_per_tile`` is the number of sequential network evaluations one batch costs (for the plan
    printout); ``sequential`` says the solver carries state from one tile to the next (then the driver
    must use raster order, batch 1). A projection solver calls ``ctx.pin`` on every x0 estimate after
    its data-consistency step (and ``ctx.low_correct`` before it); a loss-based one adds
    ``ctx.overlap_loss``. The driver keeps finished pixels under the "first" canvas rule whatever the
    solver returns.
    """

    calls_per_tile: int
    sequential: bool

    def __call__(self, ctx: TileContext) -> torch.Tensor: ...


class PadTileOperator:
    """A tile operator whose image part is the top-left ``h × w`` of a ``tile_h × tile_w`` tile.

    ``A'(x) = A(x[..., :h, :w])``; ``At'`` and ``pinv'`` zero-embed (METHODS §2.3 crop/padding row), so
    ``A' A'⁺ A' = A'`` holds whenever it holds for the inner operator and the margin is exactly the added
    null space. Use ``pad_tile`` to build one: it adds the SVD view when the inner operator has one.
    """

    has_svd = False

    def __init__(self, inner: Any, tile_h: int, tile_w: int, h: int, w: int) -> None:
        self.inner, self.tile_h, self.tile_w, self.h, self.w = inner, tile_h, tile_w, h, w

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, self.tile_w - self.w, 0, self.tile_h - self.h))

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.h, : self.w]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.A(self._crop(x))

    def At(self, r: torch.Tensor) -> torch.Tensor:
        return self._pad(self.inner.At(r))

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        return self._pad(self.inner.pinv(r))

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.inner.y_shape((*x_shape[:-2], self.h, self.w)))

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        return (*tuple(self.inner.x_shape_from_y(y_shape))[:-2], self.tile_h, self.tile_w)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PadTileOperator:
        return pad_tile(self.inner.to(device, dtype), self.tile_h, self.tile_w, self.h, self.w)


class _PadTileSVD(PadTileOperator):
    """``PadTileOperator`` with the inner SVD view extended by the identity on the margin (s = 0)."""

    has_svd = True

    def singular_values(self, x_shape: Sequence[int] | None = None) -> torch.Tensor:
        inner_shape = None if x_shape is None else (*tuple(x_shape)[:-2], self.h, self.w)
        s = self.inner.singular_values(inner_shape)
        return self._pad(s.expand(*s.shape[:-2], self.h, self.w))

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[..., : self.h, : self.w] = self.inner.Vt(self._crop(x))
        return out

    def V(self, c: torch.Tensor) -> torch.Tensor:
        out = c.clone()
        out[..., : self.h, : self.w] = self.inner.V(self._crop(c))
        return out

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self._pad(self.inner.Ut(y))

    def U(self, c: torch.Tensor) -> torch.Tensor:
        return self.inner.U(self._crop(c))


def pad_tile(inner: Any, tile_h: int, tile_w: int, h: int, w: int) -> PadTileOperator:
    """Wrap a tile operator acting on ``h × w`` so that it acts on ``tile_h × tile_w`` tiles."""
    cls = _PadTileSVD if getattr(inner, "has_svd", False) else PadTileOperator
    return cls(inner, tile_h, tile_w, h, w)


@dataclass
class TileProblem:
    """The measurement of the whole image and how to cut it into tiles.

    ``tile`` gives ``op.restrict(boxes)`` / ``op.restrict_y(y, boxes)`` on the tiles' parts inside the
    image (wrapped by ``pad_tile`` where a tile reaches into the canvas margin). ``pre_correct``
    optionally builds, from a batch's canvas boxes, a hook applied to x0 BEFORE the y correction (HiR's
    low-frequency constraint).
    """

    op: Any
    y: torch.Tensor
    pre_correct: Callable[[list[Box]], Hook] | None = None
    sigma: float = 0.0

    def tile(self, plan: TilePlan, indices: Sequence[int]) -> tuple[Any, torch.Tensor]:
        """Restricted operator and measurement for a batch of tiles sharing one in-image size."""
        valid = [tuple(plan.valid_box(i)) for i in indices]
        h, w = valid[0][2:]
        if any(v[2:] != (h, w) for v in valid):
            raise ValueError("a tile batch must have one in-image size (use tile_batches)")
        op_k = self.op.restrict(valid, image_shape=(plan.height, plan.width))
        y_k = self.op.restrict_y(self.y, valid)
        if (h, w) != (plan.tile, plan.tile):
            op_k = pad_tile(op_k, plan.tile, plan.tile, h, w)
        return op_k, y_k


def tile_batches(plan: TilePlan, wave: Sequence[int], batch: int) -> list[list[int]]:
    """Split a wave into network batches of ≤ ``batch`` tiles sharing one in-image size.

    Tiles with different in-image sizes (only the last row/column of a padded canvas) need different
    restricted operators, so they go to different batches; order is deterministic (by size, then raster).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i in wave:
        v = plan.valid_box(i)
        groups.setdefault((v.height, v.width), []).append(i)
    out: list[list[int]] = []
    for key in sorted(groups, reverse=True):
        g = groups[key]
        out.extend(g[s : s + batch] for s in range(0, len(g), batch))
    return out


@dataclass(frozen=True)
class PlanSummary:
    """What the CLI prints before starting."""

    plan: TilePlan
    n_waves: int
    max_wave: int
    batch: int
    network_batches: int
    calls_per_tile: int
    order: str
    phase: str = ""

    @property
    def network_calls(self) -> int:
        """Sequential network calls: ``calls_per_tile × Σ_waves Σ_sizes ⌈n_tiles/batch⌉``."""
        return self.calls_per_tile * self.network_batches

    @property
    def tile_evaluations(self) -> int:
        """Tile-sized network evaluations (work, independent of batching): ``n_tiles × calls_per_tile``."""
        return self.plan.n_tiles * self.calls_per_tile

    def describe(self) -> str:
        head = f"{self.phase}: " if self.phase else ""
        sched = (
            f"{self.n_waves} waves (up to {self.max_wave} tiles each), batch {self.batch}"
            if self.order == "waves"
            else "raster order, one tile at a time"
        )
        return (
            f"{head}{self.plan.summary()}; {sched}; {self.network_calls} network calls "
            f"({self.calls_per_tile} per tile batch, {self.tile_evaluations} tile evaluations)"
        )


def _schedule(plan: TilePlan, order: str, batch: int) -> list[list[list[int]]]:
    """Waves of network batches (raster: one tile per wave; independent: all tiles in one wave)."""
    if order == "raster":
        return [[[i]] for i in range(plan.n_tiles)]
    if order == "independent":
        return [tile_batches(plan, range(plan.n_tiles), batch)]
    if order != "waves":
        raise ValueError(f"order must be 'waves', 'raster' or 'independent', got {order!r}")
    return [tile_batches(plan, w, batch) for w in waves(plan)]


def plan_summary(plan: TilePlan, calls_per_tile: int, batch: int = 1, order: str = "waves",
                 phase: str = "") -> PlanSummary:
    """Counts for the plan printout (see ``PlanSummary.network_calls`` for the formula)."""
    sched = _schedule(plan, order, max(1, batch))
    return PlanSummary(
        plan=plan,
        n_waves=len(sched),
        max_wave=max(sum(len(b) for b in w) for w in sched),
        batch=max(1, batch) if order != "raster" else 1,
        network_batches=sum(len(w) for w in sched),
        calls_per_tile=calls_per_tile,
        order=order,
        phase=phase,
    )


#: Canvas rules: MSR's "first finished tile wins" and weighted blending of independent tiles.
RULES = ("first", "blend")


def blend_weights(P: int, overlap: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[P, P]`` weights of the blending rule: a raised-cosine ramp over ``overlap`` pixels at each edge.

    Why a ramp: plain averaging (the official ResShift chopping) switches weight abruptly at a tile edge,
    leaving a visible step wherever two tiles disagree; a smooth ramp spreads the disagreement over the
    whole overlap. Strictly positive, so every canvas pixel gets a weight.
    """
    r = max(1, int(overlap))
    i = torch.arange(P, dtype=torch.float32, device=device)
    d = torch.minimum(i, P - 1 - i)
    ramp = torch.where(d < r, 0.5 - 0.5 * torch.cos(math.pi * (d + 1) / (r + 1)), torch.ones_like(d))
    return ramp[:, None] * ramp[None, :]


def run_tiles(
    plan: TilePlan,
    problem: TileProblem,
    solver: TileSolver,
    *,
    channels: int,
    batch: int = 1,
    order: str = "waves",
    rule: str = "first",
    streams: Callable[[int], Stream] | None = None,
    progress: Callable[[Event], None] | None = None,
    phase: str = "",
    dtype: torch.dtype = torch.float32,
    executor: WaveExecutor | None = None,
) -> torch.Tensor:
    """Restore the whole image tile by tile; returns ``[1, C, H, W]``.

    ``rule="first"`` (MSR): every pixel keeps the value of the first tile that finished it; each tile
    sees the finished pixels under it in its context. ``rule="blend"``: tiles are independent (one
    wave), the canvas is their ``blend_weights``-weighted average. ``streams(i)`` names tile i's noise
    stream (default: its raster index), so a tile's draws do not depend on order or batching. Progress
    events count network calls. Memory: the canvas (image size) plus one tile batch.

    ``executor`` (default: ``tiling.distributed.current_executor()``) runs each wave's batches, e.g. over
    torch.distributed ranks; the canvas is then written in the same order, so the result is bit-identical.
    Sequential solvers and overlapping tiles of one wave (``"independent"`` order with the ``"first"`` rule)
    always run here.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if getattr(solver, "sequential", False) and order != "raster":
        raise ValueError("this solver carries state across tiles: use order='raster'")
    if rule == "blend" and order == "waves":
        order = "independent"
    stream_of = streams if streams is not None else (lambda i: i)
    sched = _schedule(plan, order, max(1, batch))
    device = problem.y.device
    P = plan.tile
    X = torch.zeros(1, channels, plan.canvas_height, plan.canvas_width, dtype=dtype, device=device)
    done = torch.zeros(plan.canvas_height, plan.canvas_width, dtype=torch.bool, device=device)
    if rule == "blend":
        Wsum = torch.zeros(plan.canvas_height, plan.canvas_width, dtype=dtype, device=device)
        w_tile = blend_weights(P, plan.overlap, device).to(dtype)
    ticker = Ticker(progress, phase, solver.calls_per_tile * sum(len(w) for w in sched), unit="call",
                    warmup=solver.calls_per_tile * len(sched[0]) if order == "waves" else 0)
    if executor is None:
        executor = current_executor()
    if getattr(solver, "sequential", False) or (order == "independent" and rule == "first"):
        executor = None  # state carried across tiles / tiles of one wave that overlap: this process only
    tiles_done = 0

    def inputs(idx: list[int]) -> tuple[list[Box], torch.Tensor, torch.Tensor]:
        boxes = [plan.box(i) for i in idx]
        if rule == "first":
            x_prev = torch.cat([X[:, :, b.top : b.top + P, b.left : b.left + P] for b in boxes])
            mask = torch.stack([done[b.top : b.top + P, b.left : b.left + P] for b in boxes])[:, None]
        else:
            x_prev = X.new_zeros(len(idx), channels, P, P)
            mask = torch.zeros(len(idx), 1, P, P, dtype=torch.bool, device=device)
        return boxes, x_prev, mask

    def solve(idx: list[int]) -> torch.Tensor:
        boxes, x_prev, mask = inputs(idx)
        op_k, y_k = problem.tile(plan, idx)
        ctx = TileContext(op_k, y_k, sigma=problem.sigma, shape=(len(idx), channels, P, P),
                          streams=[stream_of(i) for i in idx], known=mask, finished=x_prev,
                          low=problem.pre_correct(boxes) if problem.pre_correct is not None else None,
                          boxes=boxes)
        return solver(ctx).detach().to(dtype)

    for w_idx, wave in enumerate(sched):
        outs = None
        if executor is not None:  # no tile of a wave reads another's pixels: solve all from this canvas
            outs = executor.run_wave(wave, solve, lambda idx: X.new_empty(len(idx), channels, P, P))
        for j, idx in enumerate(wave):
            out = outs[j] if outs is not None else solve(idx)
            boxes, x_prev, mask = inputs(idx)
            if rule == "first":
                out = torch.where(mask, x_prev, out)
                for b, o in zip(boxes, out):
                    X[0, :, b.top : b.top + P, b.left : b.left + P] = o
                    done[b.top : b.top + P, b.left : b.left + P] = True
            else:
                for b, o in zip(boxes, out):
                    X[0, :, b.top : b.top + P, b.left : b.left + P] += o * w_tile
                    Wsum[b.top : b.top + P, b.left : b.left + P] += w_tile
            tiles_done += len(idx)
            ticker.tick(solver.calls_per_tile, wave=f"{w_idx + 1}/{len(sched)}",
                        tiles=f"{tiles_done}/{plan.n_tiles}", _tiles_done=tiles_done, _n_tiles=plan.n_tiles)
    if rule == "blend":
        X = X / Wsum.clamp_min(1e-12)
    return X[:, :, : plan.height, : plan.width]
