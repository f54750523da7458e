"""Compressed sensing: random pixel sampling and block Walsh–Hadamard sampling.

Both have orthonormal rows, so ``A⁺ = Aᵀ`` is the Moore–Penrose inverse and ``A A⁺ = I``.
``rate`` here is the **kept** fraction (sampling ratio m/n), unlike ``masks.random_mask``'s missing
fraction. Random choices come from a CPU ``torch.Generator`` seeded with ``seed``; the chosen indices
are also saved with the parameters, so an observation stays readable whatever the RNG does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    Box,
    Operator,
    SVDView,
    _with_batch,
    check_boxes,
    crop_stack,
    fit_multiple,
    register_operator,
    shape_chw,
)
from diffrestore.operators.inpaint import Inpaint

__all__ = ["RandomPixelsCS", "WalshHadamardCS", "fwht"]


def _check_rate(rate: float) -> float:
    if not 0 < rate <= 1:
        raise UserError(f"compressed-sensing rate (kept fraction) must be in (0, 1], got {rate}")
    return float(rate)


def _saved_indices(values: Tensor | np.ndarray, n: int, message: str) -> Tensor:
    """Flat int64 CPU indices, each in ``[0, n)`` and at least one; else ``UserError(message)``."""
    idx = torch.as_tensor(values).detach().cpu().to(torch.int64).flatten()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise UserError(message)
    return idx


@register_operator
class RandomPixelsCS(SVDView, Operator):
    """Keep ``round(rate·H·W)`` random pixel positions (all channels); y = the compact ``[B, C, M]``.

    Same information as inpainting with a random mask, but y is the vector of kept values (SHRED's
    "CS"). Bound to one image size ``image_hw`` (the positions depend on it). ``Aᵀ = A⁺`` scatters into
    zeros. SVD view: ``V = I``, singular value 1 at kept pixels, ``Ut`` = scatter, ``U`` = gather.
    Tiles: the tile operator is ``Inpaint`` with the tile's part of the sampling mask and the tile's y is
    the scattered y cropped (y layout changes from compact to image-shaped; exact).
    """

    task = "cs"

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        image_hw: Sequence[int] | None = None,
        indices: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if image_hw is None:
            raise UserError("pixel compressed sensing needs the image size (image_hw)")
        self.rate = _check_rate(rate)
        self.seed = int(seed)
        self.image_hw = (int(image_hw[-2]), int(image_hw[-1]))
        n = self.image_hw[0] * self.image_hw[1]
        if indices is None:
            g = torch.Generator().manual_seed(self.seed)
            m = max(1, round(self.rate * n))
            idx = torch.randperm(n, generator=g)[:m].sort().values
        else:
            idx = _saved_indices(indices, n, "saved compressed-sensing indices do not fit the image size")
        self.indices = idx

    @property
    def n_measurements(self) -> int:
        """Kept pixels per channel (M)."""
        return int(self.indices.numel())

    def check_shape(self, x_shape: Sequence[int]) -> None:
        _, h, w = shape_chw(x_shape)
        if (h, w) != self.image_hw:
            raise UserError(
                f"this pixel-CS operator is for {self.image_hw[0]}x{self.image_hw[1]} images, got {h}x{w}"
            )

    def _idx(self, like: Tensor) -> Tensor:
        return self._cached("idx", like, lambda: self.indices)

    def sampling_mask(self) -> Tensor:
        """``[1, 1, H, W]`` bool, True at the kept pixels."""
        m = torch.zeros(self.image_hw[0] * self.image_hw[1], dtype=torch.bool)
        m[self.indices] = True
        return m.reshape(1, 1, *self.image_hw)

    def A(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        return x.flatten(2)[:, :, self._idx(x)]

    def At(self, y: Tensor) -> Tensor:
        B, C, _ = y.shape
        out = y.new_zeros(B, C, self.image_hw[0] * self.image_hw[1])
        out[:, :, self._idx(y)] = y
        return out.reshape(B, C, *self.image_hw)

    def pinv(self, y: Tensor) -> Tensor:
        return self.At(y)

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        self.check_shape(x_shape)
        c, _, _ = shape_chw(x_shape)
        return _with_batch(x_shape, (c, self.n_measurements))

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        if len(y_shape) == 3:
            return (int(y_shape[0]), int(y_shape[1]), *self.image_hw)
        return (int(y_shape[0]), *self.image_hw)

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        return self.sampling_mask()[0].to(torch.float64)

    def Vt(self, x: Tensor) -> Tensor:
        return x

    def V(self, c: Tensor) -> Tensor:
        return c

    def Ut(self, y: Tensor) -> Tensor:
        return self.At(y)

    def U(self, c: Tensor) -> Tensor:
        return self.A(c)

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        bx = check_boxes(boxes, self.image_hw)
        op = Inpaint(crop_stack(self.sampling_mask(), bx))
        return self._tiled(op, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        return crop_stack(self.At(y), check_boxes(boxes, self.image_hw))

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"rate": self.rate, "seed": self.seed, "image_hw": list(self.image_hw)}, {
            "indices": self.indices
        }


def fwht(x: Tensor) -> Tensor:
    """Orthonormal fast Walsh–Hadamard transform along the last axis (length a power of two).

    Natural (Sylvester) order; symmetric and its own inverse. log2(n) vectorised butterfly stages.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"FWHT length must be a power of two, got {n}")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x / math.sqrt(n)


@register_operator
class WalshHadamardCS(SVDView, Operator):
    """Block Walsh–Hadamard CS: per ``block × block`` block and channel, keep ``m = round(rate·block²)``
    of the orthonormal 2-D WHT coefficients (the same random subset for every block and channel).

    y is ``[B, C·m, H/block, W/block]`` (channel-major: index ``c·m + k``), so it crops like an image
    on the block grid. ``keep_dc`` (default) always keeps coefficient 0 (the block mean) — without it a
    block can lose its brightness entirely. H and W must be multiples of ``block`` (a power of two).
    SVD view: V = block WHT in place (coefficients at the block's pixels, row-major ``k = i·b + j``),
    singular value 1 at kept slots. Tiles: boxes aligned to the block grid; the tile operator is the same
    operator, y tiles are crops of the block grid (exact).
    """

    task = "cs"

    def __init__(
        self,
        rate: float,
        seed: int = 0,
        block: int = 32,
        keep_dc: bool = True,
        kept: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.rate = _check_rate(rate)
        self.seed = int(seed)
        b = int(block)
        if b != block or b < 1 or b & (b - 1):
            raise UserError(f"Walsh-Hadamard block must be a power of two, got {block}")
        self.block = b
        self.keep_dc = bool(keep_dc)
        n = b * b
        if kept is None:
            m = min(n, max(1, round(self.rate * n)))
            g = torch.Generator().manual_seed(self.seed)
            if self.keep_dc:
                rest = torch.randperm(n - 1, generator=g)[: m - 1] + 1
                idx = torch.cat([torch.zeros(1, dtype=torch.int64), rest])
            else:
                idx = torch.randperm(n, generator=g)[:m]
            kept = idx.sort().values
        self.kept = _saved_indices(kept, n, "saved Walsh-Hadamard indices do not fit the block size")

    @property
    def m(self) -> int:
        """Kept coefficients per block and channel."""
        return int(self.kept.numel())

    def check_shape(self, x_shape: Sequence[int]) -> None:
        _, H, W = shape_chw(x_shape)
        b = self.block
        if H % b or W % b:
            raise UserError(
                f"Walsh-Hadamard CS with {b}x{b} blocks needs height and width divisible by {b}, got {H}x{W} "
                f"(crop to {H - H % b}x{W - W % b} or choose a smaller block)"
            )

    def fit_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return fit_multiple(x_shape, self.block)

    def _wht(self, x: Tensor) -> Tensor:
        """Block 2-D WHT ``[B, C, H, W]`` → ``[B, C, H/b, W/b, b·b]`` (involutory up to the layout)."""
        self.check_shape(x.shape)
        B, C, H, W = x.shape
        b = self.block
        t = x.reshape(B, C, H // b, b, W // b, b).permute(0, 1, 2, 4, 3, 5)  # [B,C,nh,nw,i,j]
        t = fwht(fwht(t).transpose(-1, -2)).transpose(-1, -2)
        return t.reshape(B, C, H // b, W // b, b * b)

    def _iwht(self, c: Tensor) -> Tensor:
        B, C, nh, nw, _ = c.shape
        b = self.block
        t = c.reshape(B, C, nh, nw, b, b)
        t = fwht(fwht(t).transpose(-1, -2)).transpose(-1, -2)
        return t.permute(0, 1, 2, 4, 3, 5).reshape(B, C, nh * b, nw * b)

    def _k(self, like: Tensor) -> Tensor:
        return self._cached("kept", like, lambda: self.kept)

    def A(self, x: Tensor) -> Tensor:
        c = self._wht(x)[..., self._k(x)]  # [B, C, nh, nw, m]
        B, C, nh, nw, m = c.shape
        return c.permute(0, 1, 4, 2, 3).reshape(B, C * m, nh, nw)

    def _scatter(self, y: Tensor) -> Tensor:
        B, Cm, nh, nw = y.shape
        m = self.m
        if Cm % m:
            raise ValueError(f"y has {Cm} channels, not a multiple of {m} kept coefficients")
        c = y.new_zeros(B, Cm // m, nh, nw, self.block**2)
        c[..., self._k(y)] = y.reshape(B, Cm // m, m, nh, nw).permute(0, 1, 3, 4, 2)
        return c

    def At(self, y: Tensor) -> Tensor:
        return self._iwht(self._scatter(y))

    def pinv(self, y: Tensor) -> Tensor:
        return self.At(y)

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        self.check_shape(x_shape)
        c, h, w = shape_chw(x_shape)
        return _with_batch(x_shape, (c * self.m, h // self.block, w // self.block))

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        cm, h, w = shape_chw(y_shape)
        if cm % self.m:
            raise UserError(
                f"observation has {cm} channels, not a multiple of {self.m} coefficients per block"
            )
        return _with_batch(y_shape, (cm // self.m, h * self.block, w * self.block))

    # SVD view: block WHT coefficients in place of the block's pixels
    def _to_planes(self, c: Tensor) -> Tensor:
        B, C, nh, nw, _ = c.shape
        b = self.block
        return c.reshape(B, C, nh, nw, b, b).permute(0, 1, 2, 4, 3, 5).reshape(B, C, nh * b, nw * b)

    def _from_planes(self, p: Tensor) -> Tensor:
        self.check_shape(p.shape)
        B, C, H, W = p.shape
        b = self.block
        return (
            p.reshape(B, C, H // b, b, W // b, b)
            .permute(0, 1, 2, 4, 3, 5)
            .reshape(B, C, H // b, W // b, b * b)
        )

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        H, W = self._svd_hw(x_shape)
        self.check_shape((1, H, W))
        s = torch.zeros(1, 1, H // self.block, W // self.block, self.block**2, dtype=torch.float64)
        s[..., self.kept] = 1.0
        return self._to_planes(s)[0]

    def Vt(self, x: Tensor) -> Tensor:
        return self._to_planes(self._wht(x))

    def V(self, c: Tensor) -> Tensor:
        return self._iwht(self._from_planes(c))

    def Ut(self, y: Tensor) -> Tensor:
        return self._to_planes(self._scatter(y))

    def U(self, c: Tensor) -> Tensor:
        t = self._from_planes(c)[..., self._k(c)]
        B, C, nh, nw, m = t.shape
        return t.permute(0, 1, 4, 2, 3).reshape(B, C * m, nh, nw)

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        bx = check_boxes(boxes, self._hw_or_none(image_shape))
        for box in bx:
            if any(v % self.block for v in box):
                raise UserError(
                    f"tile box {box} is not aligned to the {self.block}-pixel Walsh-Hadamard blocks"
                )
        op = WalshHadamardCS(self.rate, self.seed, self.block, self.keep_dc, kept=self.kept)
        return self._tiled(op, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        return crop_stack(y, check_boxes(boxes), self.block)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"rate": self.rate, "seed": self.seed, "block": self.block, "keep_dc": self.keep_dc}, {
            "kept": self.kept
        }
