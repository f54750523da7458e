"""Colourisation: ``y = Σ_c w_c x_c`` per pixel (one grey channel from C colour channels).

Why generic weights: DDNM uses ``w = (1/3, 1/3, 1/3)`` (the default here); real scans follow a luminance
rule (e.g. BT.601 ``(0.299, 0.587, 0.114)``); the same formulas hold for any nonzero w. (The official
DDNM SVD path's ``[0.3333, 0.3334, 0.3333]`` row lives in ``methods/ddnm_official_ops.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    LowResProblem,
    Operator,
    SVDView,
    _with_batch,
    pool,
    register_operator,
    shape_chw,
)

__all__ = ["BT601", "Colorize", "householder_basis"]

BT601 = (0.299, 0.587, 0.114)


def householder_basis(w: Tensor) -> Tensor:
    """Orthogonal symmetric ``[C, C]`` (float64) whose first column is ``w/|w|``.

    Why Householder: a deterministic, exactly orthonormal completion of the singular direction for any
    C, built without an eigen/SVD solver (whose sign/basis choice may vary between libraries).
    """
    w = w.to(torch.float64)
    u = w / w.norm()
    e1 = torch.zeros_like(u)
    e1[0] = 1.0
    v = e1 - u
    if float(v.norm()) < 1e-12:
        return torch.eye(len(w), dtype=torch.float64)
    return torch.eye(len(w), dtype=torch.float64) - 2.0 * torch.outer(v, v) / (v @ v)


@register_operator
class Colorize(SVDView, Operator):
    """``A x = wᵀ x`` per pixel → ``[B, 1, H, W]``; ``Aᵀ y = w y``; ``A⁺ y = w y / |w|²`` (Moore–Penrose).

    SVD view: per pixel ``u = 1``, ``s = |w|``, ``v = w/|w|`` completed to an orthonormal colour basis
    (``householder_basis``); coefficient channel 0 is the observed direction, the others null space.
    Pointwise: a tile's operator is the operator itself and its y is the crop.
    """

    task = "colorize"
    pointwise = True

    def __init__(self, weights: Sequence[float] | Tensor | np.ndarray = (1 / 3, 1 / 3, 1 / 3)) -> None:
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().flatten()
        if w.numel() < 1 or not torch.isfinite(w).all() or float(w.norm()) == 0:
            raise UserError(f"colorization weights must be finite and not all zero, got {w.tolist()}")
        self.weights = w

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """Commutes with pooling: ``y_low = D y`` (noise std / f)."""
        f = int(factor)
        return LowResProblem(Colorize(self.weights), pool(y, f), 1.0 / f)

    @property
    def channels(self) -> int:
        """Number of colour channels of x."""
        return int(self.weights.numel())

    def check_shape(self, x_shape: Sequence[int]) -> None:
        c, _, _ = shape_chw(x_shape)
        if c != self.channels:
            raise UserError(
                f"colorization with {self.channels} weights needs {self.channels}-channel images, got {c}"
            )

    def _w(self, like: Tensor) -> Tensor:
        return self._cached("w", like, lambda: self.weights.to(torch.float64))

    def _q(self, like: Tensor) -> Tensor:
        return self._cached("q", like, lambda: householder_basis(self.weights))

    def A(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        return torch.einsum("c,bchw->bhw", self._w(x), x)[:, None]

    def At(self, y: Tensor) -> Tensor:
        return self._w(y)[None, :, None, None] * y

    def pinv(self, y: Tensor) -> Tensor:
        w = self._w(y)
        return (w / (w @ w))[None, :, None, None] * y

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        self.check_shape(x_shape)
        _, h, w = shape_chw(x_shape)
        return _with_batch(x_shape, (1, h, w))

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        _, h, w = shape_chw(y_shape)
        return _with_batch(y_shape, (self.channels, h, w))

    def y_from_image(self, img: Tensor) -> Tensor:
        """Grey observation from a file image: 1 channel kept; C channels → ``wᵀ img`` (a replicated grey
        image maps to itself when the weights sum to 1, a colour one is converted to grey)."""
        if img.shape[1] == 1:
            return img
        if img.shape[1] == self.channels:
            return self.A(img)
        raise UserError(f"a colorization observation needs 1 or {self.channels} channels, got {img.shape[1]}")

    # SVD view
    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        s = torch.zeros(self.channels, 1, 1, dtype=torch.float64)
        s[0] = self.weights.norm()
        return s

    def Vt(self, x: Tensor) -> Tensor:
        self.check_shape(x.shape)
        return torch.einsum("ck,bchw->bkhw", self._q(x), x)

    def V(self, c: Tensor) -> Tensor:
        return torch.einsum("ck,bkhw->bchw", self._q(c), c)

    def Ut(self, y: Tensor) -> Tensor:
        B, _, H, W = y.shape
        c = y.new_zeros(B, self.channels, H, W)
        c[:, :1] = y
        return c

    def U(self, c: Tensor) -> Tensor:
        return c[:, :1]

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"weights": self.weights.tolist()}, {}
