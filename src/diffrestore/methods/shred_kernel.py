"""Blind deconvolution for SHRED (METHODS §4): the SelfDeblur kernel generator and a differentiable blur.

Why a generator rather than free kernel pixels: ``k_θ = softmax(MLP(z))`` is non-negative and sums to one by
construction, and the MLP's implicit smoothness keeps the joint (image, kernel) optimisation from collapsing
into noise-like kernels (SelfDeblur, Ren et al. 2020; SHRED/BIRD reuse it).

Randomness: every number (the fixed input ``z`` and the initial MLP weights) is drawn from a
:class:`~diffrestore.diffusion.noise.NoiseSource`, one stream per kernel, so a run is reproducible and a
kernel's start does not depend on how many other kernels are optimised in the same batch. The N(0, 1) draws
are mapped to U(0, 1) through the normal CDF, which gives SelfDeblur's ``z ~ U(0, 0.1)`` (**⚠ unspecified**
in SHRED; SelfDeblur's choice) and PyTorch's default ``nn.Linear`` init ``U(±1/√fan_in)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffrestore.diffusion.noise import NoiseSource, Stream

__all__ = ["KERNEL_STREAM", "KernelGenerator", "blur", "save_kernel"]

#: First element of the default kernel noise streams ``(KERNEL_STREAM, i)``; keeps clear of tile streams.
KERNEL_STREAM = 0x4B45524E  # "KERN"


def _uniform(noise: NoiseSource, shape: Sequence[int], stream: Stream, low: float, high: float) -> Tensor:
    """U(low, high) from N(0, 1) draws via the normal CDF (the noise sources only give Gaussians)."""
    g = noise.draw(shape, stream, dtype=torch.float64)
    u = 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0)))
    return (low + (high - low) * u).float()


class KernelGenerator(nn.Module):
    """``n`` SelfDeblur kernel generators: ``k = reshape_{K×K}(softmax(W2 relu6(W1 z + b1) + b2))``.

    ``n = 1``: one kernel shared by the whole batch (e.g. all tiles of one photo); ``n = B``: one kernel per
    batch element. Parameters are stacked over ``n`` (``[n, …]``) so per-sample early stopping can freeze
    rows. ``forward()`` returns ``[n, K, K]`` (non-negative, each sums to 1).
    """

    def __init__(
        self,
        size: int = 41,
        *,
        noise: NoiseSource,
        n: int = 1,
        streams: Sequence[Stream] | None = None,
        z_dim: int = 200,
        hidden: int = 1000,
    ) -> None:
        super().__init__()
        if size < 1 or n < 1:
            raise ValueError(f"kernel size and count must be >= 1, got size={size}, n={n}")
        streams = list(streams) if streams is not None else [(KERNEL_STREAM, i) for i in range(n)]
        if len(streams) != n:
            raise ValueError(f"{len(streams)} streams for {n} kernels")
        self.size = int(size)
        k2 = self.size**2
        z, w1, b1, w2, b2 = [], [], [], [], []
        for s in streams:  # fixed draw order per stream: z, W1, b1, W2, b2
            z.append(_uniform(noise, (z_dim,), s, 0.0, 0.1))
            r1, r2 = 1 / math.sqrt(z_dim), 1 / math.sqrt(hidden)
            w1.append(_uniform(noise, (hidden, z_dim), s, -r1, r1))
            b1.append(_uniform(noise, (hidden,), s, -r1, r1))
            w2.append(_uniform(noise, (k2, hidden), s, -r2, r2))
            b2.append(_uniform(noise, (k2,), s, -r2, r2))
        self.register_buffer("z", torch.stack(z))
        self.w1 = nn.Parameter(torch.stack(w1))
        self.b1 = nn.Parameter(torch.stack(b1))
        self.w2 = nn.Parameter(torch.stack(w2))
        self.b2 = nn.Parameter(torch.stack(b2))

    @property
    def n(self) -> int:
        """Number of kernels."""
        return int(self.z.shape[0])

    def forward(self) -> Tensor:
        """The kernels ``[n, K, K]`` (float32)."""
        h = F.relu6(torch.einsum("nhz,nz->nh", self.w1, self.z) + self.b1)
        logits = torch.einsum("nkh,nh->nk", self.w2, h) + self.b2
        return torch.softmax(logits, dim=-1).reshape(self.n, self.size, self.size)


def blur(x: Tensor, kernel: Tensor, padding_mode: str = "circular") -> Tensor:
    """``k * x`` with 'same' output size, one kernel for all channels; differentiable in both.

    True convolution with the kernel centre at ``(kh // 2, kw // 2)`` — the convention of
    :class:`diffrestore.operators.deblur.Blur`, which ``padding_mode="circular"`` reproduces exactly (so y
    made by ``diffrestore degrade`` is matched). ``"zeros"`` is BIRD's choice; ``"reflect"`` suits photos.
    ``kernel``: ``[kh, kw]`` or ``[n, kh, kw]`` with ``n`` 1 (shared) or ``B`` (one per element).
    """
    if x.dim() != 4:
        raise ValueError(f"blur expects x as [B, C, H, W], got {tuple(x.shape)}")
    k = kernel if kernel.dim() == 3 else kernel[None]
    B, C, H, W = x.shape
    n, kh, kw = k.shape
    if n not in (1, B):
        raise ValueError(f"{n} kernels for a batch of {B}")
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    pad = (left, kw // 2, top, kh // 2)
    if padding_mode in ("circular", "reflect") and (max(top, kh // 2) >= H or max(left, kw // 2) >= W):
        raise ValueError(f"a {kh}x{kw} kernel is too large for {padding_mode} padding of a {H}x{W} image")
    mode = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}.get(padding_mode)
    if mode is None:
        raise ValueError(f"padding_mode must be circular, reflect or zeros, got {padding_mode!r}")
    xp = F.pad(x, pad, mode=mode)
    kf = k.to(x.dtype).flip(-1, -2)  # conv2d correlates; flipping makes it a true convolution
    if n == 1:
        out = F.conv2d(xp.reshape(B * C, 1, *xp.shape[-2:]), kf[:, None])
    else:
        w = kf.repeat_interleave(C, dim=0)[:, None]
        out = F.conv2d(xp.reshape(1, B * C, *xp.shape[-2:]), w, groups=B * C)
    return out.reshape(B, C, H, W)


def save_kernel(kernel: Tensor, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write a ``[K, K]`` (or ``[1, K, K]``) kernel as ``<stem>.png`` (scaled so its maximum is white, for
    viewing) and ``<stem>.npy`` (exact float values, sum 1), both atomically; returns ``(png, npy)``.

    ``path`` may end in ``.png``, ``.npy`` or have no suffix (the stem is what counts).
    """
    from diffrestore.io.images import write_float, write_image

    k = kernel.detach().float().cpu()
    while k.dim() > 2 and k.shape[0] == 1:
        k = k[0]
    if k.dim() != 2:
        raise ValueError(f"save_kernel takes one 2-D kernel, got shape {tuple(kernel.shape)}")
    p = Path(path)
    stem = p.with_suffix("") if p.suffix.lower() in (".png", ".npy") else p
    png, npy = Path(f"{stem}.png"), Path(f"{stem}.npy")
    peak = float(k.max())
    write_image(png, (k / peak if peak > 0 else k)[None])
    write_float(npy, k)
    return png, npy
