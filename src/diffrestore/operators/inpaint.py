"""Inpainting: ``A x = m ⊙ x`` with a boolean mask (True = known pixel).

Why y lives in x's shape (zeros at unknown pixels) instead of a compact vector: it is the simplest
layout for files (an image) and for tiles (a tile's y is the crop), and ``A⁺ = Aᵀ = A`` is then the
Moore–Penrose inverse (a 0/1 diagonal projector). The values of y at unknown pixels are ignored
everywhere (``A⁺`` multiplies by the mask), so an observation image may hold anything there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    Box,
    IdentityBasis,
    LowResProblem,
    Operator,
    SameShape,
    check_boxes,
    crop_stack,
    pool,
    register_operator,
    shape_chw,
)

__all__ = ["Inpaint", "as_mask"]


def as_mask(mask: Tensor | np.ndarray) -> Tensor:
    """A ``[Bm, Cm, H, W]`` bool CPU mask from a 2-, 3- or 4-D array (non-bool: > 0.5 is known)."""
    m = torch.as_tensor(mask).detach().cpu()
    if m.dtype != torch.bool:
        m = m.to(torch.float64) > 0.5
    if not 2 <= m.dim() <= 4:
        raise UserError(f"an inpainting mask must be 2-D to 4-D, got shape {tuple(m.shape)}")
    while m.dim() < 4:
        m = m[None]
    return m.contiguous()


@register_operator
class Inpaint(IdentityBasis, SameShape, Operator):
    """``A = Aᵀ = A⁺ = m ⊙ ·`` for a mask ``[1 or B, 1 or C, H, W]`` (True = known).

    SVD view: ``U = V = I``, singular values = the mask (``[Cm, H, W]``, or ``[B, Cm, H, W]`` for one
    mask per image). Tiles: the tile operator is the cropped mask (exact); y tiles are crops.
    """

    task = "inpaint"

    def __init__(self, mask: Tensor | np.ndarray) -> None:
        super().__init__()
        self.mask = as_mask(mask)
        self.channelwise = self.mask.shape[1] == 1

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """``y_low = D y`` with the conservative mask "known iff all f² sub-pixels are known"."""
        f = int(factor)
        if self.mask.shape[0] != 1:
            raise UserError("hierarchical restoration needs one inpainting mask for the image")
        m_low = -torch.nn.functional.max_pool2d(-self.mask.to(torch.float32), f) > 0.5
        return LowResProblem(Inpaint(m_low), pool(y, f) * m_low.to(y), 1.0 / f)

    @property
    def known_fraction(self) -> float:
        """Fraction of known mask entries (for logs and params)."""
        return float(self.mask.float().mean())

    def check_shape(self, x_shape: Sequence[int]) -> None:
        c, h, w = shape_chw(x_shape)
        mb, mc, mh, mw = self.mask.shape
        if (mh, mw) != (h, w):
            raise UserError(f"the inpainting mask is {mh}x{mw} but the image is {h}x{w}")
        if mc not in (1, c):
            raise UserError(f"the inpainting mask has {mc} channels but the image has {c}")
        if len(x_shape) == 4 and mb not in (1, int(x_shape[0])):
            raise ValueError(f"mask batch {mb} does not match image batch {x_shape[0]}")

    def _m(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        return self._cached("mask", x, lambda: self.mask.to(torch.float64))

    def y_from_image(self, img: Tensor) -> Tensor:
        """A photo with holes: whatever the file holds at unknown pixels is not data, so zero it (y = A y)."""
        return self.A(img)

    def A(self, x: Tensor) -> Tensor:
        return x * self._m(x)

    def At(self, y: Tensor) -> Tensor:
        return y * self._m(y)

    def pinv(self, y: Tensor) -> Tensor:
        return y * self._m(y)

    # SVD view: identity bases (IdentityBasis), singular values = mask
    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        m = self.mask.to(torch.float64)
        return m[0] if m.shape[0] == 1 else m

    # tiling: the mask crops with the image
    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        if self.mask.shape[0] != 1:
            raise ValueError("restrict needs one mask for the image (mask batch 1)")
        bx = check_boxes(boxes, tuple(self.mask.shape[-2:]))  # type: ignore[arg-type]
        op = Inpaint(crop_stack(self.mask, bx))
        return self._tiled(op, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        return crop_stack(y, check_boxes(boxes, (y.shape[-2], y.shape[-1])))

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {}, {"mask": self.mask}

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["known_fraction"] = round(self.known_fraction, 6)
        return out
