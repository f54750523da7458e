"""Seam score: how much larger the pixel jumps across tile joins are than the jumps everywhere else.

Why: tiled restoration (MSR / HiR / plain tiling) can leave visible lines where tiles meet, and PSNR barely
notices a 1-pixel-wide line. This scale-free ratio does.

Definition. A *vertical seam at x = s* (``0 < s < W``) is the join between columns ``s-1`` and ``s``; a
*horizontal seam at y = s* the join between rows ``s-1`` and ``s``. With ``d_h = |I[:, :, x] - I[:, :, x-1]|``
(horizontal neighbour pairs) and ``d_v = |I[:, y, :] - I[:, y-1, :]|`` (vertical pairs), over all channels:

    seam_score = (sum of d_h on seam columns + sum of d_v on seam rows)
                 / (n_seam_h * mean(d_h off seams) + n_seam_v * mean(d_v off seams))

i.e. the mean absolute difference of the pixel pairs straddling a seam divided by the mean over all other
adjacent pairs -- with each seam pair compared with pairs of *its own orientation*, so an image with, say,
mostly vertical texture is not mistaken for a seamy one (for one orientation, or an isotropic image, this is
exactly "seam mean / other-pairs mean"). ~1 means the joins are as smooth as the image itself; > 1 means
visible seams (a step of a few grey levels on a smooth image gives >> 1); < 1 means the joins are smoother
than average (e.g. blending blur).

Seams are given as x / y positions, or derived from tile boxes ``(top, left, height, width)``: every tile
edge strictly inside the image (``left``, ``left + width``, ``top``, ``top + height``) is a potential seam
(for overlap-free tiles those are exactly the joins; with overlaps they are where hard stitching would cut).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["seam_score", "seams_from_boxes"]


def seams_from_boxes(boxes: Iterable[Sequence[int]], height: int, width: int) -> tuple[list[int], list[int]]:
    """``(xs, ys)``: tile edges strictly inside an ``height x width`` image, sorted and de-duplicated."""
    xs: set[int] = set()
    ys: set[int] = set()
    for top, left, h, w in boxes:
        for x in (left, left + w):
            if 0 < x < width:
                xs.add(int(x))
        for y in (top, top + h):
            if 0 < y < height:
                ys.add(int(y))
    return sorted(xs), sorted(ys)


def _as_chw(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """float64 ``[C, H, W]`` from numpy ``HW``/``HWC`` or torch ``[C,H,W]``/``[1,C,H,W]`` (any range)."""
    if isinstance(img, torch.Tensor):
        t = img.detach().to(torch.float64).cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError("seam_score() scores one image; loop over the batch")
            t = t[0]
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3:
            raise ValueError(f"expected [C, H, W] or [1, C, H, W], got {tuple(img.shape)}")
        return t.numpy()
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3:
        raise ValueError(f"expected an HW or HWC image, got shape {a.shape}")
    return a.transpose(2, 0, 1)


def _seam_mask(n: int, seams: Iterable[int]) -> np.ndarray:
    """Boolean mask over the ``n - 1`` neighbour pairs of an axis: pair ``k`` joins ``k`` and ``k + 1``."""
    mask = np.zeros(max(n - 1, 0), dtype=bool)
    for s in seams:
        if not 0 < s < n:
            raise ValueError(f"seam position {s} is not strictly inside an axis of length {n}")
        mask[s - 1] = True
    return mask


def _mean(a: np.ndarray) -> float:
    """Mean, ``nan`` (no reference pairs: no score) instead of numpy's empty-slice warning."""
    return float(a.mean()) if a.size else math.nan


def seam_score(
    img: np.ndarray | torch.Tensor,
    xs: Iterable[int] = (),
    ys: Iterable[int] = (),
    boxes: Iterable[Sequence[int]] | None = None,
    grid: int = 1,
) -> float:
    """Seam ratio of one image (see module docstring); ``nan`` when there are no seams to score.

    ``grid``: compare the seams only with the other lines of a ``grid``-pixel lattice (e.g. the LR pixel
    grid of SR ×s, which every tile edge lies on: there an output that still shows LR blocks jumps more
    than inside an LR pixel, whatever the tiling). ``grid=1`` compares with every other pixel pair.

    ``xs``/``ys``: seam positions (a seam at ``s`` lies between pixels ``s-1`` and ``s``); or ``boxes``:
    tile boxes ``(top, left, height, width)`` from which the seams are derived (merged with ``xs``/``ys``).
    Returns 1.0 for a constant image (no jump anywhere) and ``inf`` when only the seams jump.
    """
    chw = _as_chw(img)
    _, h, w = chw.shape
    xs, ys = list(xs), list(ys)
    if boxes is not None:
        bx, by = seams_from_boxes(boxes, h, w)
        xs, ys = sorted(set(xs) | set(bx)), sorted(set(ys) | set(by))
    mx, my = _seam_mask(w, xs), _seam_mask(h, ys)
    n_sx = int(mx.sum()) * h * chw.shape[0]
    n_sy = int(my.sum()) * w * chw.shape[0]
    if n_sx + n_sy == 0:
        return math.nan
    dh = np.abs(np.diff(chw, axis=2))  # [C, H, W-1]
    dv = np.abs(np.diff(chw, axis=1))  # [C, H-1, W]
    seam_sum = dh[:, :, mx].sum() + dv[:, my, :].sum()
    # reference pairs: off-seam pairs on the lattice (pair k joins pixels k and k+1; a line at k+1)
    rx = ~mx & (np.arange(1, w) % max(1, grid) == 0)
    ry = ~my & (np.arange(1, h) % max(1, grid) == 0)
    expected = 0.0
    if n_sx:
        rest = dh[:, :, rx]
        # With no off-seam pair of this orientation, fall back to the other orientation's lines.
        ref = rest.mean() if rest.size else _mean(dv[:, ry, :])
        expected += n_sx * ref
    if n_sy:
        rest = dv[:, ry, :]
        ref = rest.mean() if rest.size else _mean(dh[:, :, rx])
        expected += n_sy * ref
    if expected == 0.0:
        return 1.0 if seam_sum == 0.0 else math.inf
    return float(seam_sum / expected)
