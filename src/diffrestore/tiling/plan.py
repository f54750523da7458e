"""Tile plans: where the P×P windows go on an image of any size, and in which waves they can run.

Why a plan object: the network only sees P×P tiles, so every size question (images smaller than a tile,
sizes that are not a multiple of anything, SR tiles that must align with the LR grid, HiR factors) is
answered once, here, and the restoration code only walks the boxes.

Conventions (METHODS.md §2.3, §3.3):

* A box is ``(top, left, height, width)`` in x (output) pixels; tiles are always P×P.
* Positions along one axis of length ``L`` (tile ``P``, stride ``S = P − overlap``): ``p_i = i·S`` and the
  last tile is flush with the far edge, ``p_{n−1} = L − P``; ``n = ⌈(L − P)/S⌉ + 1``. Gaps are ≤ S, so every
  pixel is covered and neighbours overlap by at least ``P − S``.
* **Alignment** ``align = a``: every start is a multiple of ``a`` (SR ×s needs ``a = s`` so LR windows line
  up; HiR phase 2 needs the factor f too). ``a`` must divide ``P``; the stride is rounded *down* to a
  multiple of ``a`` (more overlap, never less), or to ``a`` itself when ``S < a``.
* **Canvas padding.** The tiles live on a *canvas* of size ``canvas_height × canvas_width``:
  ``max(P, ⌈L/a⌉·a)`` per axis. When the image is smaller than ``P`` (or not a multiple of ``a``) the canvas
  is larger than the image; the extra rows/columns sit at the bottom/right, outside the image. Restoration
  treats them as *null space* (METHODS §2.3: ``A' = A ∘ Crop``, ``A'⁺ = Cropᵀ A⁺``): the prior fills them
  freely and they are cropped away at the end. Nothing is reflect-padded, so no fake content constrains the
  real pixels; ``valid_box(i)`` gives the part of tile ``i`` inside the image.
* Tiles are numbered in raster order (rows outer, columns inner); that index is also the tile's noise stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from diffrestore.errors import UserError

__all__ = ["Box", "TilePlan", "axis_positions", "hq_demo_plan", "make_plan", "reach", "waves"]


class Box(NamedTuple):
    """A window ``(top, left, height, width)`` in x pixels (a plain tuple for ``Operator.restrict``)."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class TilePlan:
    """P×P tiles on a (possibly padded) canvas covering an ``height × width`` image.

    ``rows`` / ``cols`` are the strictly increasing tile starts on the canvas; tile ``i = r·n_cols + c``
    is ``Box(rows[r], cols[c], tile, tile)``.
    """

    height: int
    width: int
    tile: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    canvas_height: int
    canvas_width: int
    overlap: int
    align: int = 1
    kind: str = "msr"

    def __post_init__(self) -> None:
        axes = (("rows", self.rows, self.canvas_height), ("cols", self.cols, self.canvas_width))
        for name, starts, size in axes:
            if not starts or starts[0] != 0 or starts[-1] + self.tile != size:
                raise ValueError(f"plan {name} {starts} do not span the canvas {size} with tile {self.tile}")
            if any(b <= a for a, b in zip(starts, starts[1:])):
                raise ValueError(f"plan {name} {starts} are not strictly increasing")
            if any(b - a > self.tile for a, b in zip(starts, starts[1:])):
                raise ValueError(f"plan {name} {starts} leave a gap (stride > tile {self.tile})")

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_cols(self) -> int:
        return len(self.cols)

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def padded(self) -> bool:
        """True when the canvas is larger than the image (tiles reach into the null-space margin)."""
        return (self.canvas_height, self.canvas_width) != (self.height, self.width)

    # ---- boxes -------------------------------------------------------------------------------------
    def grid(self, index: int) -> tuple[int, int]:
        """``(r, c)`` of tile ``index`` (raster order)."""
        return divmod(index, self.n_cols)

    def box(self, index: int) -> Box:
        """Canvas window of tile ``index``."""
        r, c = self.grid(index)
        return Box(self.rows[r], self.cols[c], self.tile, self.tile)

    @property
    def boxes(self) -> list[Box]:
        """All canvas windows, raster order."""
        return [self.box(i) for i in range(self.n_tiles)]

    def valid_box(self, index: int) -> Box:
        """The part of tile ``index`` that lies inside the image (same top/left, clipped size).

        Never empty: starts are < the image size because the canvas exceeds the image only by less than
        one alignment step or up to the tile size, and the first tile always starts at 0.
        """
        b = self.box(index)
        return Box(b.top, b.left, min(b.height, self.height - b.top), min(b.width, self.width - b.left))

    def overlaps(self, i: int, j: int) -> bool:
        """Whether tiles ``i`` and ``j`` share at least one canvas pixel."""
        a, b = self.box(i), self.box(j)
        return abs(a.top - b.top) < self.tile and abs(a.left - b.left) < self.tile

    def dependencies(self, index: int) -> list[int]:
        """Raster-earlier tiles that overlap tile ``index`` (what it must wait for), ascending."""
        r, c = self.grid(index)
        rr = _near(self.rows, r, self.tile)
        cc = _near(self.cols, c, self.tile)
        return sorted(r2 * self.n_cols + c2 for r2 in rr for c2 in cc if (r2, c2) < (r, c))

    def summary(self) -> str:
        """One line for the plan printout."""
        pad = f", canvas {self.canvas_height}x{self.canvas_width}" if self.padded else ""
        return (
            f"{self.height}x{self.width} image, {self.n_tiles} tiles of {self.tile}px "
            f"({self.n_rows} rows x {self.n_cols} cols, overlap {self.overlap}{pad})"
        )


def _near(starts: Sequence[int], k: int, tile: int) -> list[int]:
    """Indices j whose window overlaps window k along one axis (|start_j − start_k| < tile)."""
    return [j for j, s in enumerate(starts) if abs(s - starts[k]) < tile]


# ---- construction ----------------------------------------------------------------------------------
def axis_positions(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Starts ``i·stride`` with the last one snapped to ``length − tile`` (needs ``length ≥ tile``)."""
    if length < tile:
        raise ValueError(f"axis length {length} < tile {tile}")
    if length == tile:
        return (0,)
    n = math.ceil((length - tile) / stride) + 1
    return tuple(i * stride for i in range(n - 1)) + (length - tile,)


def make_plan(
    height: int,
    width: int,
    tile: int = 256,
    overlap: int | None = None,
    align: int = 1,
) -> TilePlan:
    """Plan P×P tiles over an ``height × width`` image (any size, see the module docstring).

    ``overlap`` defaults to ``tile // 2`` (MSR, seed 000: 256 px tiles, 128 px overlap); it must be in
    ``[0, tile)``. ``align`` (≥ 1, dividing ``tile``) forces every start to a multiple of it.
    """
    if height < 1 or width < 1:
        raise UserError(f"image size must be positive, got {height}x{width}")
    if tile < 1:
        raise UserError(f"tile size must be positive, got {tile}")
    if overlap is None:
        overlap = tile // 2
    if not 0 <= overlap < tile:
        raise UserError(f"overlap must be in [0, {tile}) for tile {tile}, got {overlap}")
    if align < 1 or tile % align:
        raise UserError(f"tile {tile} must be a multiple of the alignment {align} (e.g. the SR scale)")
    stride = tile - overlap
    stride = max(align, stride // align * align)
    canvas_h = max(tile, -(-height // align) * align)
    canvas_w = max(tile, -(-width // align) * align)
    return TilePlan(
        height=height,
        width=width,
        tile=tile,
        rows=axis_positions(canvas_h, tile, stride),
        cols=axis_positions(canvas_w, tile, stride),
        canvas_height=canvas_h,
        canvas_width=canvas_w,
        overlap=tile - stride,
        align=align,
    )


def hq_demo_plan(height: int, width: int, tile: int = 256, shift: int = 128) -> TilePlan:
    """The official hq_demo tile plan (method ``ddnm-hq``), for its fixed ``tile = 2·shift``.

    ``n_h = ⌈H/shift⌉ − 1`` rows at ``shift·i``; if ``H`` is not a multiple of ``shift`` the last row is flush
    with the far edge (``H − tile``); same for columns. hq_demo refuses images smaller than a tile.
    """
    if tile != 2 * shift:
        raise UserError(f"the official hq_demo plan needs tile = 2*shift, got tile {tile}, shift {shift}")
    if height < tile or width < tile:
        raise UserError(f"ddnm-hq (hq_demo) needs an output of at least {tile}x{tile}, got {height}x{width}")

    def axis(length: int) -> tuple[int, ...]:
        n = math.ceil(length / shift) - 1
        starts = [shift * i for i in range(n)]
        if length % shift:
            starts[-1] = length - tile
        return tuple(starts)

    return TilePlan(
        height=height,
        width=width,
        tile=tile,
        rows=axis(height),
        cols=axis(width),
        canvas_height=height,
        canvas_width=width,
        overlap=shift,
        align=1,
        kind="hq_demo",
    )


# ---- scheduling ------------------------------------------------------------------------------------
def reach(plan: TilePlan) -> int:
    """Horizontal reach k: the most later columns any tile overlaps (METHODS §3.3; 1 for S ≥ P/2)."""
    return max(
        (sum(1 for u2 in plan.cols[c + 1 :] if u2 - u < plan.tile) for c, u in enumerate(plan.cols)),
        default=0,
    )


def waves(plan: TilePlan) -> list[list[int]]:
    """Group tiles into waves: a tile's wave is 1 + the latest wave among its dependencies (0 if none).

    Dependencies are the raster-earlier overlapping tiles (for the usual 50 % overlap: left, upper-left,
    upper and upper-right neighbours). This longest-path rule is valid for any placement (snapped last
    tiles included) and never uses more waves than the closed form ``c + (k+1)·r``; tiles inside one wave
    never overlap (two overlapping tiles are always in a dependency relation). Within a wave tiles are in
    raster order, so the grouping is deterministic.
    """
    wave_of: list[int] = []
    for i in range(plan.n_tiles):
        deps = plan.dependencies(i)
        wave_of.append(1 + max(wave_of[j] for j in deps) if deps else 0)
    out: list[list[int]] = [[] for _ in range(max(wave_of) + 1)]
    for i, w in enumerate(wave_of):
        out[w].append(i)
    return out
