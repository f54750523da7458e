"""Identity operator (``A = I``): denoising, and the neutral element for compositions and tests.

Why an operator at all: DDNM+ with ``A = I`` is a denoiser driven by ``sigma_y`` (METHODS §1.4), and
pipelines (tiling, CLI) can treat denoising like any other task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diffrestore.operators.base import (
    IdentityBasis,
    LowResProblem,
    Operator,
    SameShape,
    pool,
    register_operator,
)

__all__ = ["Denoise", "Identity"]


@register_operator
class Identity(IdentityBasis, SameShape, Operator):
    """``A = Aᵀ = A⁺ = I``; SVD view with ``U = V = I`` and all singular values 1."""

    task = "identity"
    pointwise = True
    channelwise = True

    def A(self, x: Tensor) -> Tensor:
        return x

    def At(self, y: Tensor) -> Tensor:
        return y

    def pinv(self, y: Tensor) -> Tensor:
        return y

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        return torch.ones(1, 1, 1, dtype=torch.float64)

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """Commutes with pooling: ``y_low = D y`` (noise std / f)."""
        f = int(factor)
        return LowResProblem(type(self)(), pool(y, f), 1.0 / f, identity=True)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {}, {}


@register_operator
class Denoise(Identity):
    """The identity under the task name ``denoise`` (y = x + noise; the noise level goes to DDNM+)."""

    task = "denoise"
