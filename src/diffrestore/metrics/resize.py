"""MATLAB-compatible bicubic ``imresize`` (antialiased), vectorised for numpy and torch.

Why MATLAB's and not PIL's or torch's: every published super-resolution number (the bicubic baselines in
ANCHORS.md, SRCNN, SwinIR, ...) was produced with MATLAB's ``imresize``. Its cubic kernel (a = -0.5), its
antialiasing (the kernel is *stretched* by 1/scale when shrinking), its symmetric border handling and its
output-size rule differ from ``torch.nn.functional.interpolate`` and PIL, and those differences are worth
several tenths of a dB. The same weights are the bicubic SR operator, so the operators use this module too
(``resize_matrix`` gives the dense 1-D matrix an operator needs for its adjoint / pseudo-inverse).

The algorithm follows MATLAB's ``contributions`` (written from its documented behaviour):

* output size ``ceil(scale * in)``; output pixel ``x`` (1-based) maps to input
  ``u = x/scale + (1 - 1/scale)/2``;
* taps ``floor(u - width/2) + 0 .. ceil(width) + 1`` where ``width = 4`` (``4/scale`` when shrinking with
  antialiasing, with the kernel ``scale * cubic(scale * d)``); weights normalised to sum 1;
* out-of-range taps mirror symmetrically (``1..n, n..1`` repeated), tap columns that are zero for every output
  are dropped;
* the dimension with the smaller scale is resized first (height first on ties);
* ``uint8`` input is rounded and saturated back to ``uint8`` *after each dimension*, as MATLAB does (its
  resize kernel returns the class of its input); float input stays float and is not clipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["cubic", "resize_weights", "resize_matrix", "imresize", "output_size"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``); support [-2, 2]."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length rule: ``ceil(scale * in_len)``.

    A tiny tolerance keeps e.g. ``0.1 * 30`` (= 3.0000000000000004) from becoming 4.
    """
    return int(math.ceil(scale * in_len - 1e-9))


def resize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel taps of the 1-D resize along one axis.

    Returns ``(weights, indices)``, both ``[out_len, P]``: output ``i`` is
    ``sum_k weights[i, k] * input[indices[i, k]]`` with 0-based, already mirrored indices. float64 weights,
    because they are the operator's matrix entries and fp32 rounding would show up in PSNR at 0.001 dB.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize lengths must be positive, got in={in_len}, out={out_len}")
    kernel_width = 4.0
    shrink_aa = scale < 1 and antialias
    if shrink_aa:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if shrink_aa else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric mirroring: 1..n, n..1, periodic (MATLAB's aux vector), on 1-based indices.
    period = 2 * in_len
    m = np.mod(idx.astype(np.int64) - 1, period)
    mirrored = np.where(m < in_len, m, period - 1 - m)
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], mirrored[:, keep]


def resize_matrix(
    in_len: int, out_len: int | None = None, scale: float | None = None, antialias: bool = True
) -> np.ndarray:
    """Dense ``[out_len, in_len]`` float64 matrix of the 1-D resize (``y = R @ x`` along one axis).

    The 2-D resize is ``R_h @ X @ R_w.T`` (per channel), which is what a bicubic SR operator needs for
    ``A``, ``A^T`` and an SVD-based pseudo-inverse. Give ``out_len`` or ``scale`` (or both, as MATLAB does
    when the caller knows the exact scale).
    """
    out_len, scale = _resolve(in_len, out_len, scale)
    w, idx = resize_weights(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), w.shape[1])
    np.add.at(mat, (rows, idx.ravel()), w.ravel())
    return mat


def _resolve(in_len: int, out_len: int | None, scale: float | None) -> tuple[int, float]:
    """Fill in whichever of output length / scale is missing, with MATLAB's rules."""
    if scale is None and out_len is None:
        raise ValueError("give a scale or an output size")
    if scale is None:
        assert out_len is not None
        scale = out_len / in_len
    if out_len is None:
        out_len = output_size(in_len, scale)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return out_len, float(scale)


def _scales_and_sizes(
    hw: tuple[int, int], scale: float | Sequence[float] | None, size: Sequence[int] | None
) -> tuple[list[int], list[float]]:
    """Per-axis output sizes and scales (MATLAB: scale given -> ceil(scale*in); size given -> out/in)."""
    if scale is not None and size is not None:
        raise ValueError("give either scale or output_shape, not both")
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"output_shape must be (height, width), got {size}")
        outs = [int(size[0]), int(size[1])]
        return outs, [outs[0] / hw[0], outs[1] / hw[1]]
    if scale is None:
        raise ValueError("give a scale or an output_shape")
    if isinstance(scale, (int, float, np.integer, np.floating)):
        scales = [float(scale), float(scale)]
    else:
        scales = [float(s) for s in scale]
        if len(scales) != 2:
            raise ValueError(f"scale must be one number or (sh, sw), got {scale}")
    return [output_size(hw[0], scales[0]), output_size(hw[1], scales[1])], scales


def _resize_axis_np(a: np.ndarray, axis: int, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Apply 1-D taps along ``axis`` of a float64 array (loop over the few taps, not over pixels)."""
    a = np.moveaxis(a, axis, 0)
    out = np.zeros((w.shape[0],) + a.shape[1:], dtype=np.float64)
    bshape = (w.shape[0],) + (1,) * (a.ndim - 1)
    for k in range(w.shape[1]):
        out += w[:, k].reshape(bshape) * a[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def _resize_axis_torch(t: torch.Tensor, axis: int, w: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """Torch version of :func:`_resize_axis_np`; differentiable (gather + weighted sum)."""
    wt = torch.as_tensor(w, dtype=t.dtype, device=t.device)
    it = torch.as_tensor(idx, dtype=torch.long, device=t.device)
    n_out, taps = w.shape
    gathered = torch.index_select(t, axis, it.reshape(-1))  # [..., n_out*taps, ...] along axis
    shape = list(t.shape)
    shape[axis : axis + 1] = [n_out, taps]
    gathered = gathered.reshape(shape)
    wshape = [1] * len(shape)
    wshape[axis], wshape[axis + 1] = n_out, taps
    return (gathered * wt.reshape(wshape)).sum(dim=axis + 1)


def imresize(
    img: np.ndarray | torch.Tensor,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
    antialias: bool = True,
) -> np.ndarray | torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiasing on by default, as in MATLAB).

    Accepts a numpy image ``HW`` / ``HWC`` (``uint8``: MATLAB's per-pass round-and-saturate, result
    ``uint8``; float: result float64, unclipped) or a float torch tensor ``[..., H, W]``
    (e.g. ``[B, C, H, W]`` in [0, 1]; result in the input dtype, unclipped, differentiable). ``scale`` may
    be one number or ``(sh, sw)``; alternatively ``output_shape=(H_out, W_out)``.
    """
    is_torch = isinstance(img, torch.Tensor)
    if is_torch:
        if img.ndim < 2:
            raise ValueError(f"expected a [..., H, W] tensor, got shape {tuple(img.shape)}")
        if not torch.is_floating_point(img):
            raise TypeError("torch input to imresize must be floating point (e.g. [0, 1] images)")
        h_axis, w_axis = img.ndim - 2, img.ndim - 1
    else:
        img = np.asarray(img)
        if img.ndim not in (2, 3):
            raise ValueError(f"expected an HW or HWC array, got shape {img.shape}")
        h_axis, w_axis = 0, 1
    hw = (int(img.shape[h_axis]), int(img.shape[w_axis]))
    outs, scales = _scales_and_sizes(hw, scale, output_shape)
    # MATLAB resizes the most-shrunk dimension first (stable sort: height first on ties).
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    axes = (h_axis, w_axis)

    if is_torch:
        out_t = img
        for d in order:
            w, idx = resize_weights(hw[d], outs[d], scales[d], antialias)
            out_t = _resize_axis_torch(out_t, axes[d], w, idx)
        return out_t

    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    for d in order:
        w, idx = resize_weights(hw[d], outs[d], scales[d], antialias)
        out = _resize_axis_np(out, axes[d], w, idx)
        if is_uint8:
            # MATLAB rounds half away from zero; values are clipped to >= 0 so floor(x + 0.5) is that.
            out = np.clip(np.floor(out + 0.5), 0, 255)
    return out.astype(np.uint8) if is_uint8 else out
