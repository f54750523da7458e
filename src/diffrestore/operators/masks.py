"""Inpainting masks: box, random pixels, line scratches, and masks read from files.

Every mask is ``[1, 1, H, W]`` bool with **True = known** (kept) pixel, the convention of
``Inpaint`` (and DDNM's ``mask.npy``, 1 = keep). Random masks are drawn from a ``torch.Generator``
seeded with ``seed`` on the CPU, so the same (size, parameters, seed) gives the same mask everywhere.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import read_array_file

__all__ = ["box_mask", "line_mask", "load_mask", "random_mask"]


def _check_hw(H: int, W: int) -> tuple[int, int]:
    if int(H) != H or int(W) != W or H < 1 or W < 1:
        raise UserError(f"mask size must be positive integers, got {H}x{W}")
    return int(H), int(W)


def box_mask(H: int, W: int, frac: float = 0.5, box: tuple[int, int, int, int] | None = None) -> Tensor:
    """One missing rectangle: ``box = (top, left, height, width)``, or a centred box whose sides are
    ``frac`` of the image's sides (default 0.5: a quarter of the area, DDNM's 128² hole in 256²)."""
    H, W = _check_hw(H, W)
    if box is None:
        if not 0 <= frac <= 1:
            raise UserError(f"box fraction must be in [0, 1], got {frac}")
        bh, bw = round(frac * H), round(frac * W)
        box = ((H - bh) // 2, (W - bw) // 2, bh, bw)
    t, left, bh, bw = (int(v) for v in box)
    if bh < 0 or bw < 0:
        raise UserError(f"bad box {box}")
    m = torch.ones(1, 1, H, W, dtype=torch.bool)
    m[..., max(t, 0) : max(t + bh, 0), max(left, 0) : max(left + bw, 0)] = False
    return m


def random_mask(H: int, W: int, rate: float = 0.5, seed: int = 0) -> Tensor:
    """Exactly ``round(rate·H·W)`` pixels **missing**, uniformly at random (``rate`` = missing fraction).

    Note the opposite reading of ``rate`` in compressed sensing (``cs.RandomPixelsCS``: kept fraction).
    """
    H, W = _check_hw(H, W)
    if not 0 <= rate <= 1:
        raise UserError(f"random mask rate (missing fraction) must be in [0, 1], got {rate}")
    g = torch.Generator().manual_seed(int(seed))
    n_missing = round(rate * H * W)
    m = torch.ones(H * W, dtype=torch.bool)
    m[torch.randperm(H * W, generator=g)[:n_missing]] = False
    return m.reshape(1, 1, H, W)


def line_mask(H: int, W: int, n: int = 8, width: float = 5.0, seed: int = 0) -> Tensor:
    """``n`` random straight scratches of ``width`` pixels (missing), like cracks on an old photo.

    Endpoints are uniform over the image; a pixel is missing when its centre lies within ``width/2`` of a
    segment. Work is per line and limited to the line's bounding box (no loop over pixels).
    """
    H, W = _check_hw(H, W)
    if n < 0 or not width > 0:
        raise UserError(f"line mask needs n >= 0 and width > 0, got n={n}, width={width}")
    g = torch.Generator().manual_seed(int(seed))
    pts = torch.rand(int(n), 4, generator=g, dtype=torch.float64) * torch.tensor(
        [H, W, H, W], dtype=torch.float64
    )
    m = torch.ones(1, 1, H, W, dtype=torch.bool)
    r = width / 2
    for y0, x0, y1, x1 in pts.tolist():
        top = max(int(np.floor(min(y0, y1) - r)), 0)
        bot = min(int(np.ceil(max(y0, y1) + r)) + 1, H)
        lef = max(int(np.floor(min(x0, x1) - r)), 0)
        rig = min(int(np.ceil(max(x0, x1) + r)) + 1, W)
        if top >= bot or lef >= rig:
            continue
        yy = torch.arange(top, bot, dtype=torch.float64)[:, None] + 0.5
        xx = torch.arange(lef, rig, dtype=torch.float64)[None, :] + 0.5
        dy, dx = y1 - y0, x1 - x0
        L2 = dy * dy + dx * dx
        t = ((yy - y0) * dy + (xx - x0) * dx) / L2 if L2 > 0 else torch.zeros_like(yy + xx)
        t = t.clamp(0, 1)
        d2 = (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2
        m[0, 0, top:bot, lef:rig] &= d2 > r * r
    return m


def load_mask(path: str | os.PathLike[str], invert: bool = False) -> Tensor:
    """A mask from an image (white = known, black = missing; ``invert`` for hole-is-white masks) or a
    ``.npy`` array (nonzero = known)."""
    known = read_array_file(
        path, "mask", from_npy=lambda a: np.asarray(a) != 0,
        from_image=lambda im: np.asarray(im.convert("L")) > 127,
    )
    m = torch.from_numpy(known)
    if m.dim() == 3 and m.shape[-1] in (3, 4):  # H, W, channels from an npy image
        m = m.all(dim=-1)
    while m.dim() < 4:
        m = m[None]
    return ~m if invert else m
