"""Building blocks shared by the official networks (ADM, DDPM, ResShift Swin-UNet, VQ).

They reproduce the official numerics (GroupNorm computed in float32, the two different sinusoidal
timestep embeddings) while using ``scaled_dot_product_attention`` so that no T x T attention matrix
is ever materialised in Python (large tiles would otherwise run out of memory on CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GroupNorm32",
    "normalization",
    "adm_timestep_embedding",
    "ddpm_timestep_embedding",
    "sdpa",
    "qkv_attention",
    "zero_module",
]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that normalises in float32 and returns the input dtype (official ADM behaviour).

    Upcasting keeps bf16/fp16 runs stable: the variance of a wide group underflows in half precision.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, num_groups: int = 32, affine: bool = True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def normalization(channels: int, eps: float = 1e-5) -> GroupNorm32:
    """ADM's ``normalization``: 32 groups, eps 1e-5, fp32 compute."""
    return GroupNorm32(channels, eps=eps)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (official init for residual outputs: each block starts as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _as_1d(timesteps: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(timesteps)
    return t.reshape(1) if t.dim() == 0 else t


def adm_timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """guided-diffusion embedding: ``[cos, sin]`` of ``t * exp(-ln(max_period) * i / half)``, float32.

    The exact formula (not ``max_period ** (-i/half)``) is kept so outputs match the official ones to
    float32 noise.
    """
    t = _as_1d(timesteps)
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def ddpm_timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """DDPM (Ho et al. port) embedding: ``[sin, cos]`` with frequencies ``exp(-ln(1e4) i / (half-1))``."""
    t = _as_1d(timesteps)
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over ``(..., T, d)`` (e.g. ``(B*heads, T, d)``) with the 1/sqrt(d) scale.

    Mathematically identical to the official d^-1/4 pre-scaling of q and k; SDPA picks a fused kernel
    that never stores the T x T logits.
    """
    return F.scaled_dot_product_attention(q, k, v)


def qkv_attention(qkv: torch.Tensor, heads: int, legacy: bool, q_tokens: int | None = None) -> torch.Tensor:
    """Multi-head attention from a fused ``qkv`` laid out token-major ``(B, T, 3C)``.

    ``legacy`` selects guided-diffusion's ``QKVAttentionLegacy`` channel order (per head: q, k, v);
    otherwise ``QKVAttention`` (q | k | v, each split into heads). Returns ``(B, T_q, C)`` with heads
    concatenated head-major. ``q_tokens`` keeps only the first queries (AttentionPool2d needs token 0).
    """
    b, t, c3 = qkv.shape
    d = c3 // (3 * heads)
    if legacy:
        parts = qkv.reshape(b, t, heads, 3, d).permute(3, 0, 2, 1, 4)  # (3, B, heads, T, d)
    else:
        parts = qkv.reshape(b, t, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = parts[0], parts[1], parts[2]
    if q_tokens is not None:
        q = q[:, :, :q_tokens]
    out = sdpa(q, k, v)  # (B, heads, Tq, d)
    return out.transpose(1, 2).reshape(b, out.shape[2], heads * d)
