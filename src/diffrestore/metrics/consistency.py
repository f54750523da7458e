"""Measurement consistency ``A x - y``: does a restoration agree with what was observed?

Why: DDNM-style methods promise ``A x0 = y`` (exactly, for sigma_y = 0) by construction; PSNR against the
ground truth cannot tell a method that honours the measurement from one that hallucinates a plausible but
different image. The RMS residual (``||A x - y|| / sqrt(numel(y))``, in the units of ``y``, i.e. [-1, 1] or
[0, 1] per the caller's range) is comparable across image sizes and operators; the max-abs residual catches
a single broken tile that an RMS over a large image would average away. Computed in float64 under
``no_grad`` so that the metric's own round-off (~1e-16) is far below what float32 pipelines reach (~1e-7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

__all__ = ["consistency", "consistency_max_abs", "consistency_stats", "ConsistencyStats"]


class _HasA(Protocol):
    def A(self, x: torch.Tensor) -> torch.Tensor: ...  # noqa: N802 - the contract's name for the forward op


class ConsistencyStats(NamedTuple):
    """Residual statistics of ``A x - y``."""

    rms: float
    max_abs: float


def _residual(
    op: _HasA | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """``A x - y`` in float64; ``op`` is an Operator (``op.A``) or a plain callable."""
    forward = op.A if hasattr(op, "A") else op
    with torch.no_grad():
        ax = forward(x)  # type: ignore[operator]
        if ax.shape != y.shape:
            raise ValueError(f"A(x) has shape {tuple(ax.shape)} but y has {tuple(y.shape)}")
        return ax.to(torch.float64) - y.to(device=ax.device, dtype=torch.float64)


def consistency_stats(
    op: _HasA | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> ConsistencyStats:
    """RMS and max-abs of ``A x - y`` in one pass."""
    r = _residual(op, x, y)
    if r.numel() == 0:
        return ConsistencyStats(math.nan, math.nan)
    return ConsistencyStats(float(r.square().mean().sqrt()), float(r.abs().max()))


def consistency(
    op: _HasA | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> float:
    """RMS measurement residual ``||A x - y||_2 / sqrt(numel(y))``."""
    return consistency_stats(op, x, y).rms


def consistency_max_abs(
    op: _HasA | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> float:
    """Largest absolute entry of ``A x - y``."""
    return consistency_stats(op, x, y).max_abs
