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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from diffrestore.diffusion.noise import Stream
from diffrestore.tiling.plan import Box, TilePlan, waves

__all__ = [
    "Hook",
    "PadTileOperator",
    "PlanSummary",
    "Progress",
    "TileProblem",
    "TileSolver",
    "pad_tile",
    "plan_summary",
    "run_tiles",
    "tile_batches",
    "tqdm_progress",
]

Hook = Callable[[torch.Tensor, int], torch.Tensor]


class TileSolver(Protocol):
    """Restores a batch ``[B, C, P, P]`` of tiles; what the driver needs from a method.

    It must call ``constrain_x0`` on every x0 estimate after its data-consistency step (and
    ``pre_correct``, when given, before it), and return the final constrained estimate.

    ``calls_per_tile`` is the number of sequential network evaluations one batch costs (for the plan
    printout); ``sequential`` says the solver carries state from one tile to the next (then the driver
    must use raster order, batch 1).
    """

    calls_per_tile: int
    sequential: bool

    def __call__(
        self,
        op: Any,
        y: torch.Tensor,
        *,
        shape: tuple[int, int, int, int],
        constrain_x0: Hook,
        pre_correct: Hook | None,
        streams: Sequence[Stream],
    ) -> torch.Tensor: ...


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
    """Waves of network batches (raster: one tile per wave)."""
    if order == "raster":
        return [[[i]] for i in range(plan.n_tiles)]
    if order != "waves":
        raise ValueError(f"order must be 'waves' or 'raster', got {order!r}")
    return [tile_batches(plan, w, batch) for w in waves(plan)]


def plan_summary(plan: TilePlan, calls_per_tile: int, batch: int = 1, order: str = "waves",
                 phase: str = "") -> PlanSummary:
    """Counts for the plan printout (see ``PlanSummary.network_calls`` for the formula)."""
    sched = _schedule(plan, order, max(1, batch))
    return PlanSummary(
        plan=plan,
        n_waves=len(sched),
        max_wave=max(sum(len(b) for b in w) for w in sched),
        batch=max(1, batch) if order == "waves" else 1,
        network_batches=sum(len(w) for w in sched),
        calls_per_tile=calls_per_tile,
        order=order,
        phase=phase,
    )


@dataclass
class Progress:
    """Progress report after each tile batch; ``eta_s`` is None until the first wave has finished."""

    phase: str
    wave: int
    n_waves: int
    tiles_done: int
    n_tiles: int
    calls_done: int
    calls_total: int
    elapsed_s: float
    eta_s: float | None = None


def run_tiles(
    plan: TilePlan,
    problem: TileProblem,
    solver: TileSolver,
    *,
    channels: int,
    batch: int = 1,
    order: str = "waves",
    streams: Callable[[int], Stream] | None = None,
    progress: Callable[[Progress], None] | None = None,
    phase: str = "",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Restore the whole image tile by tile with the MSR constraint; returns ``[1, C, H, W]``.

    ``streams(i)`` names tile i's noise stream (default: its raster index ``i``), so a tile's draws do
    not depend on the order or batching. Memory: the canvas (image size) plus one tile batch.
    """
    if getattr(solver, "sequential", False) and order != "raster":
        raise ValueError("this solver carries state across tiles: use order='raster'")
    stream_of = streams if streams is not None else (lambda i: i)
    sched = _schedule(plan, order, max(1, batch))
    device = problem.y.device
    P = plan.tile
    X = torch.zeros(1, channels, plan.canvas_height, plan.canvas_width, dtype=dtype, device=device)
    done = torch.zeros(plan.canvas_height, plan.canvas_width, dtype=torch.bool, device=device)
    calls_total = solver.calls_per_tile * sum(len(w) for w in sched)  # = PlanSummary.network_calls
    calls_done = tiles_done = 0
    t0 = time.perf_counter()
    for w_idx, wave in enumerate(sched):
        for b_idx, idx in enumerate(wave):
            boxes = [plan.box(i) for i in idx]
            x_prev = torch.cat([X[:, :, b.top : b.top + P, b.left : b.left + P] for b in boxes])
            mask = torch.stack([done[b.top : b.top + P, b.left : b.left + P] for b in boxes])[:, None]
            op_k, y_k = problem.tile(plan, idx)
            out = solver(
                op_k,
                y_k,
                shape=(len(idx), channels, P, P),
                constrain_x0=_mask_hook(mask, x_prev),
                pre_correct=problem.pre_correct(boxes) if problem.pre_correct is not None else None,
                streams=[stream_of(i) for i in idx],
            )
            out = torch.where(mask, x_prev, out.to(dtype))
            for b, o in zip(boxes, out):
                X[0, :, b.top : b.top + P, b.left : b.left + P] = o
                done[b.top : b.top + P, b.left : b.left + P] = True
            calls_done += solver.calls_per_tile
            tiles_done += len(idx)
            if progress is not None:
                elapsed = time.perf_counter() - t0
                first_wave_done = w_idx > 0 or b_idx == len(wave) - 1
                eta = elapsed / calls_done * (calls_total - calls_done) if first_wave_done else None
                progress(Progress(phase, w_idx, len(sched), tiles_done, plan.n_tiles, calls_done,
                                  calls_total, elapsed, eta))
    return X[:, :, : plan.height, : plan.width]



def _mask_hook(mask: torch.Tensor, x_prev: torch.Tensor) -> Hook:
    """The MSR constraint ``x̂ ← where(M, x_prev, x̂)`` for one tile batch (a copy: bit-exact)."""

    def hook(x0: torch.Tensor, step: int) -> torch.Tensor:
        return torch.where(mask, x_prev.to(x0.dtype), x0)

    return hook


def tqdm_progress(desc: str = "restoring", **tqdm_kwargs: Any) -> Callable[[Progress], None]:
    """A ``progress`` callback drawing a tqdm bar over network calls, with the wave and our ETA.

    tqdm's own rate estimate is shown too; ``eta`` in the postfix is the driver's estimate, available
    once the first wave has finished (the first wave includes warm-up, so it is not extrapolated alone).
    """
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def update(p: Progress) -> None:
        key = p.phase or desc
        if bar.get("key") != key:
            if "bar" in bar:
                bar["bar"].close()
            bar.update(key=key, bar=tqdm(total=p.calls_total, desc=key, unit="call", **tqdm_kwargs), n=0)
        b = bar["bar"]
        b.update(p.calls_done - bar["n"])
        bar["n"] = p.calls_done
        eta = "..." if p.eta_s is None else f"{p.eta_s:.0f}s"
        b.set_postfix_str(f"wave {p.wave + 1}/{p.n_waves}, tiles {p.tiles_done}/{p.n_tiles}, eta {eta}")
        if p.tiles_done == p.n_tiles:
            b.close()
            bar.clear()

    return update
