"""Super-resolution operators: average pooling ×s and MATLAB-style antialiased bicubic ×s.

Why two: average pooling has a trivial exact A⁺ (replicate; ``A A⁺ = I``) and is what DDNM/MSR use by
default; bicubic is how most LR test images are made (MATLAB ``imresize`` / BasicSR), so restoring such
an image needs that operator. Both need ``H`` and ``W`` to be multiples of the scale (``UserError``
otherwise; ``fit_shape`` gives the crop); ``restore`` starts from the LR y, so ``x = s·y`` always fits.

Tiling: tile boxes must be aligned to the scale (top, left, height and width multiples of s), so that a
tile's LR window is ``box / s``. Average pooling is block-local: the tile operator is the same operator
and the tile's y is the LR crop (exact). Bicubic rows reach ~2 LR pixels beyond a tile: a tile's
operator keeps the rows whose taps all fall inside the tile (or inside it after the image border's
reflection) and zeroes the others; its y is the LR crop with those rows/columns zeroed (exact,
``A_tile(x_tile) == restrict_y(A x)``); the dropped LR rows are seen by the overlapping neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    Box,
    LowResProblem,
    Operator,
    SVDView,
    _with_batch,
    check_boxes,
    crop_stack,
    fit_multiple,
    pool,
    register_operator,
    shape_chw,
)

__all__ = ["AvgPoolSR", "BicubicSR", "SeparableTiles", "bicubic_matrix", "dct_matrix"]


def _check_scale(scale: Any, lo: int = 1, hi: int = 64) -> int:
    s = int(scale)
    if s != scale or not lo <= s <= hi:
        raise UserError(f"scale must be an integer in {lo}..{hi}, got {scale}")
    return s


def _check_divisible(name: str, s: int, x_shape: Sequence[int]) -> None:
    _, H, W = shape_chw(x_shape)
    if H % s or W % s:
        raise UserError(
            f"{name} x{s} needs height and width divisible by {s}, got {H}x{W} "
            f"(crop to {H - H % s}x{W - W % s})"
        )


def _check_aligned(boxes: Sequence[Box], s: int) -> None:
    for b in boxes:
        if any(v % s for v in b):
            raise UserError(
                f"tile box {tuple(b)} is not aligned to the SR scale {s}: tile positions and sizes must be "
                f"multiples of {s}"
            )


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix ``[n, n]`` (float64); row 0 is the constant ``1/√n``.

    Why DCT: it is an orthonormal basis of any block size whose first vector is the block mean
    direction, i.e. exactly the right-singular vector of s×s average pooling.
    """
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] = 1.0 / math.sqrt(n)
    return d


class _Downscale:
    """Mixin: y is x with height and width divided by the integer ``scale`` (``check_shape`` decides)."""

    scale: int
    check_shape: Callable[[Sequence[int]], None]  # the operator's own size rule

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        self.check_shape(x_shape)
        c, h, w = shape_chw(x_shape)
        return _with_batch(x_shape, (c, h // self.scale, w // self.scale))

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        c, h, w = shape_chw(y_shape)
        return _with_batch(y_shape, (c, h * self.scale, w * self.scale))


@register_operator
class AvgPoolSR(_Downscale, SVDView, Operator):
    """``A`` = mean over non-overlapping s×s blocks (per channel); ``A⁺`` = replicate; ``Aᵀ = A⁺/s²``.

    ``A A⁺ = I`` exactly, so ``A⁺`` is the Moore–Penrose inverse. SVD view: per block, the block-DCT
    (coefficients in place of the block's pixels); the DC coefficient (``s·mean``) has singular value
    ``1/s``, the other s²−1 are null space. Any integer scale ≥ 1 (the CLI allows 2..32).
    """

    task = "sr"
    has_svd = True
    channelwise = True

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = _check_scale(scale)

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """f | s: ``A = AvgPool(s/f) ∘ D_f`` exactly, ``y_low = y``; s | f: ``A_low = I``, pooled y."""
        from diffrestore.operators.denoise import Identity

        s, f = self.scale, int(factor)
        if s % f == 0:
            if s == f:
                return LowResProblem(Identity(), y, 1.0, identity=True)
            return LowResProblem(AvgPoolSR(s // f), y, 1.0)
        if f % s == 0:
            return LowResProblem(Identity(), pool(y, f // s), s / f, identity=True)
        raise UserError(f"hierarchical factor {f} and SR scale {s} must divide one another")

    def check_shape(self, x_shape: Sequence[int]) -> None:
        _check_divisible("average-pooling SR", self.scale, x_shape)

    def fit_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return fit_multiple(x_shape, self.scale)

    def _blocks(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        B, C, H, W = x.shape
        s = self.scale
        return x.reshape(B, C, H // s, s, W // s, s)

    def _replicate(self, y: Tensor) -> Tensor:
        B, C, h, w = y.shape
        s = self.scale
        return y[:, :, :, None, :, None].expand(B, C, h, s, w, s).reshape(B, C, h * s, w * s)

    def A(self, x: Tensor) -> Tensor:
        return self._blocks(x).mean(dim=(3, 5))

    def At(self, y: Tensor) -> Tensor:
        return self._replicate(y) / self.scale**2

    def pinv(self, y: Tensor) -> Tensor:
        return self._replicate(y)

    # SVD view: block DCT in place
    def _dct(self, like: Tensor) -> Tensor:
        return self._cached(("dct", self.scale), like, lambda: dct_matrix(self.scale))

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        H, W = self._svd_hw(x_shape)
        _check_divisible("average-pooling SR", self.scale, (1, H, W))
        s = torch.zeros(1, H, W, dtype=torch.float64)
        s[:, :: self.scale, :: self.scale] = 1.0 / self.scale
        return s

    def Vt(self, x: Tensor) -> Tensor:
        d = self._dct(x)
        return torch.einsum("ki,lj,bchiwj->bchkwl", d, d, self._blocks(x)).reshape(x.shape)

    def V(self, c: Tensor) -> Tensor:
        d = self._dct(c)
        return torch.einsum("ki,lj,bchkwl->bchiwj", d, d, self._blocks(c)).reshape(c.shape)

    def Ut(self, y: Tensor) -> Tensor:
        B, C, h, w = y.shape
        s = self.scale
        c = y.new_zeros(B, C, h * s, w * s)
        c[:, :, ::s, ::s] = y
        return c

    def U(self, c: Tensor) -> Tensor:
        self.check_shape(c.shape)
        return c[:, :, :: self.scale, :: self.scale]

    # tiling: block-local, exact
    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        bx = check_boxes(boxes, self._hw_or_none(image_shape))
        _check_aligned(bx, self.scale)
        new = AvgPoolSR(self.scale)
        return self._tiled(new, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        return crop_stack(y, check_boxes(boxes), self.scale)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"scale": self.scale}, {}


# ---------------------------------------------------------------------------------------- bicubic


def _cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys cubic convolution kernel with a = −0.5 (MATLAB ``imresize``'s ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (a + 2) * ax3 - (a + 3) * ax2 + 1
    far = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def bicubic_matrix(length: int, scale: int) -> Tensor:
    """1-D antialiased bicubic downsampling matrix ``[length // scale, length]`` (float64).

    MATLAB ``imresize(x, 1/scale, 'bicubic')`` (as BasicSR's ``imresize`` used to make LR test sets):
    LR pixel r is centred at HR position ``u = (r + 0.5)·s − 0.5``, weights ``cubic((j − u)/s)`` over
    the 4s taps with ``|j − u| < 2s``, normalised to sum 1; taps outside the image are mirrored with the
    edge pixel repeated (``j < 0 → −j − 1``, MATLAB's symmetric padding, folded into the matrix).
    For even s this is DDNM's ``sr_bicubic`` kernel ``cubic((i − 2s + 0.5)/s)``.
    """
    s = int(scale)
    n = length // s
    r = torch.arange(n, dtype=torch.float64)
    u = (r + 0.5) * s - 0.5
    j = torch.floor(u - 2 * s)[:, None] + torch.arange(4 * s + 2, dtype=torch.float64)[None, :]
    w = _cubic((j - u[:, None]) / s)
    w = w / w.sum(dim=1, keepdim=True)
    ji = j.long() % (2 * length)  # symmetric padding, any depth: period 2L, mirrored second half
    ji = torch.where(ji >= length, 2 * length - 1 - ji, ji)
    return torch.zeros(n, length, dtype=torch.float64).scatter_add_(1, ji, w)


class _Separable(_Downscale, SVDView, Operator):
    """``y[b, c] = Ah[t] @ x[b, c] @ Aw[t]ᵀ`` with 1-D tables shared (t = 0) or one per tile (t = b).

    ``A⁺`` = ``Ah⁺ ⊗ Aw⁺`` from the 1-D SVDs with singular values ≤ ``threshold`` zeroed (exactly the
    Moore–Penrose inverse of the separable matrix when none is cut). SVD view: ``Vhᵀ X Vw`` with
    singular values ``sh[i]·sw[j]`` on the top-left ``n × m`` corner, 0 elsewhere.
    """

    has_svd = True
    channelwise = True
    scale: int
    threshold: float

    def _tables(self, H: int, W: int) -> tuple[Tensor, Tensor]:
        """CPU float64 ``Ah [Th, n, H]``, ``Aw [Tw, m, W]``."""
        raise NotImplementedError

    def _factors(self, H: int, W: int, like: Tensor) -> tuple[Tensor, ...]:
        def build() -> tuple[Tensor, ...]:
            ah, aw = self._tables(H, W)
            out: list[Tensor] = [ah, aw]
            for a in (ah, aw):
                u, sv, vh = torch.linalg.svd(a, full_matrices=True)
                inv = torch.where(sv > self.threshold, 1.0 / sv.clamp_min(1e-300), torch.zeros_like(sv))
                n = sv.shape[-1]
                p = vh[..., :n, :].mT @ (inv[..., :, None] * u.mT)  # [T, H, n]
                out += [u, sv, vh, p]
            return tuple(out)

        return self._cached(("sep", H, W), like, build)

    def _hw_from_y(self, y: Tensor) -> tuple[int, int]:
        return y.shape[-2] * self.scale, y.shape[-1] * self.scale

    @staticmethod
    def _check_t(t: int, b: int) -> None:
        if t not in (1, b):
            raise ValueError(f"operator holds {t} tile tables but got a batch of {b}")

    def _lr(self, mh: Tensor, x: Tensor, mw: Tensor) -> Tensor:
        """``mh[t] @ x[b, c] @ mw[t]ᵀ`` with tile tables broadcast over channels."""
        self._check_t(mh.shape[0], x.shape[0])
        self._check_t(mw.shape[0], x.shape[0])
        return mh[:, None] @ x @ mw[:, None].mT

    def A(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        ah, aw = self._factors(x.shape[-2], x.shape[-1], x)[:2]
        return self._lr(ah, x, aw)

    def At(self, y: Tensor) -> Tensor:
        ah, aw = self._factors(*self._hw_from_y(y), y)[:2]
        return self._lr(ah.mT, y, aw.mT)

    def pinv(self, y: Tensor) -> Tensor:
        f = self._factors(*self._hw_from_y(y), y)
        return self._lr(f[5], y, f[9])

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        H, W = self._svd_hw(x_shape)
        self.check_shape((1, H, W))
        f = self._factors(H, W, torch.zeros((), dtype=torch.float64))
        sh, sw = f[3], f[7]
        n, m = sh.shape[-1], sw.shape[-1]
        corner = sh[:, :, None] * sw[:, None, :]  # [T, n, m]
        grid = F.pad(corner, (0, W - m, 0, H - n))[:, None]  # [T, 1, H, W]
        return grid[0] if grid.shape[0] == 1 else grid

    def Vt(self, x: Tensor) -> Tensor:
        f = self._factors(x.shape[-2], x.shape[-1], x)
        return self._lr(f[4], x, f[8])

    def V(self, c: Tensor) -> Tensor:
        f = self._factors(c.shape[-2], c.shape[-1], c)
        return self._lr(f[4].mT, c, f[8].mT)

    def Ut(self, y: Tensor) -> Tensor:
        H, W = self._hw_from_y(y)
        f = self._factors(H, W, y)
        c = self._lr(f[2].mT, y, f[6].mT)
        return F.pad(c, (0, W - c.shape[-1], 0, H - c.shape[-2]))

    def U(self, c: Tensor) -> Tensor:
        H, W = c.shape[-2:]
        f = self._factors(H, W, c)
        n, m = f[3].shape[-1], f[7].shape[-1]
        return self._lr(f[2], c[..., :n, :m], f[6])


@register_operator
class BicubicSR(_Separable):
    """MATLAB-style antialiased bicubic downsampling ×s (per channel, symmetric boundary).

    ``A = Ah ⊗ Aw`` (``bicubic_matrix`` per axis), ``Aᵀ`` exact, ``A⁺`` from the 1-D SVDs with singular
    values ≤ ``threshold`` zeroed (default 3e-2, DDNM's value; for s = 2, 4, 8 the 1-D singular values
    stay above it at the sizes tested, so ``A⁺`` is the Moore–Penrose inverse there). Scales 2, 4, 8 are
    the usual ones; any integer ≥ 2 works.
    """

    task = "sr"
    block_local = False  # each LR pixel sees 4s+2 HR pixels per axis: its footprint crosses tile edges

    def __init__(self, scale: int, threshold: float = 3e-2) -> None:
        super().__init__()
        self.scale = _check_scale(scale, 2, 32)
        self.threshold = float(threshold)

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """f | s: bicubic ×(s/f) on ``y`` itself (approximate: bicubic does not factor through D_f)."""
        from diffrestore.operators.denoise import Identity

        s, f = self.scale, int(factor)
        if s % f:
            raise UserError(f"hierarchical factor {f} must divide the bicubic SR scale {s}")
        low: Operator = Identity() if s == f else BicubicSR(s // f, self.threshold)
        return LowResProblem(low, y, 1.0, exact=False, identity=s == f)

    def check_shape(self, x_shape: Sequence[int]) -> None:
        _check_divisible("bicubic SR", self.scale, x_shape)

    def fit_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return fit_multiple(x_shape, self.scale)

    def _tables(self, H: int, W: int) -> tuple[Tensor, Tensor]:
        return bicubic_matrix(H, self.scale)[None], bicubic_matrix(W, self.scale)[None]

    def _axis_tiles(self, length: int, starts: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Per-tile 1-D tables ``[T, size/s, size]`` and observed-row masks ``[T, size/s]`` along one axis.

        A tile keeps LR row r iff all of r's weight (after the border reflection) lies inside the tile.
        """
        m = bicubic_matrix(length, self.scale)
        s = self.scale
        tabs, obs = [], []
        for a in starts:
            rows = m[a // s : (a + size) // s]
            inside = rows[:, a : a + size]
            ok = (rows.abs().sum(1) - inside.abs().sum(1)) <= 1e-12
            tabs.append(inside * ok[:, None])
            obs.append(ok)
        return torch.stack(tabs), torch.stack(obs)

    def _tile_parts(self, boxes: Sequence[Box], H: int, W: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h, w = boxes[0][2], boxes[0][3]
        th, oh = self._axis_tiles(H, [b[0] for b in boxes], h)
        tw, ow = self._axis_tiles(W, [b[1] for b in boxes], w)
        return th, tw, oh, ow

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        H, W = self._hw(image_shape)
        bx = check_boxes(boxes, (H, W))
        _check_aligned(bx, self.scale)
        th, tw, _, _ = self._tile_parts(bx, H, W)
        op = SeparableTiles(th, tw, self.scale, self.threshold)
        return self._tiled(op, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        bx = check_boxes(boxes)
        H, W = self._hw_from_y(y)
        _check_aligned(bx, self.scale)
        _, _, oh, ow = self._tile_parts(bx, H, W)
        mask = (oh[:, :, None] & ow[:, None, :])[:, None]
        return crop_stack(y, bx, self.scale) * mask.to(device=y.device, dtype=y.dtype)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"scale": self.scale, "threshold": self.threshold}, {}


@register_operator
class SeparableTiles(_Separable):
    """A tile stack's separable operator with explicit 1-D tables (``BicubicSR.restrict``'s result).

    Rows of a table that are all zero are LR pixels the tile cannot see; its y holds zeros there.
    Identical tables of all tiles are stored once (then ``singular_values`` is ``[1, h, w]``, else
    ``[T, 1, h, w]``).
    """

    task = "sr"

    def __init__(self, table_h: Tensor, table_w: Tensor, scale: int, threshold: float = 3e-2) -> None:
        super().__init__()
        self.table_h = _dedupe(torch.as_tensor(table_h, dtype=torch.float64))
        self.table_w = _dedupe(torch.as_tensor(table_w, dtype=torch.float64))
        self.scale = int(scale)
        self.threshold = float(threshold)
        self.tile_hw = self.table_hw

    @property
    def table_hw(self) -> tuple[int, int]:
        """Tile size the tables are for."""
        return self.table_h.shape[-1], self.table_w.shape[-1]

    def check_shape(self, x_shape: Sequence[int]) -> None:
        _, h, w = shape_chw(x_shape)
        if (h, w) != self.table_hw:
            raise ValueError(f"tile operator is for {self.table_hw} tiles, got {(h, w)}")

    def _tables(self, H: int, W: int) -> tuple[Tensor, Tensor]:
        self.check_shape((1, H, W))
        return self.table_h.detach().cpu().double(), self.table_w.detach().cpu().double()

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        raise UserError("a tile operator cannot be restricted again")

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"scale": self.scale, "threshold": self.threshold}, {
            "table_h": self.table_h,
            "table_w": self.table_w,
        }


def _dedupe(t: Tensor) -> Tensor:
    """``[T, ...]`` → ``[1, ...]`` when all T entries are equal (interior tiles share one table)."""
    if t.dim() == 2:
        t = t[None]
    if t.shape[0] > 1 and bool((t == t[:1]).all()):
        return t[:1].clone()
    return t
