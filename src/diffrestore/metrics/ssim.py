"""SSIM with BasicSR's conventions (``calculate_ssim``), i.e. Wang et al.'s reference SSIM.

Why exactly these choices: published SSIM numbers depend on every one of them. 11x11 Gaussian window with
sigma 1.5 (normalised to sum 1), 'valid' filtering (the 5-pixel frame the window cannot cover is dropped
rather than padded), constants C1 = (0.01*255)^2 and C2 = (0.03*255)^2 on the 0-255 scale, float64, the SSIM
map averaged per channel and then over channels. No downsampling (the "automatic scaling" of Wang's MATLAB
script is not used by BasicSR). The Gaussian is separable, so we filter rows then columns.

Entry points mirror :mod:`.psnr`: :func:`ssim` (one pair, numpy 0-255 or torch [0, 1]) -> float,
:func:`ssim_batch` (``[B, C, H, W]`` in [0, 1]) -> float64 ``[B]``, :func:`ssim_y` (Y channel).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._common import score_batch, score_one

__all__ = ["ssim", "ssim_y", "ssim_batch", "gaussian_window_1d"]

_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian (OpenCV ``getGaussianKernel`` for an explicit sigma), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``[N, 1, H, W]`` float64 images."""
    k = g.numel()
    out = F.conv2d(img, g.view(1, 1, k, 1))
    return F.conv2d(out, g.view(1, 1, 1, k))


def _ssim_from_batches(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of float64 ``[B, C, H, W]`` tensors on 0-255 (mean over channels of mean maps)."""
    bsz, ch, h, w = a.shape
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {h}x{w}")
    g = gaussian_window_1d().to(a.device)
    # All five filtered quantities in one conv call: stack them along the batch axis.
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=0).reshape(5 * bsz * ch, 1, h, w)
    mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(stack, g).reshape(5, bsz, ch, h - 10, w - 10)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    s_aa, s_bb, s_ab = e_aa - mu_aa, e_bb - mu_bb, e_ab - mu_ab
    ssim_map = ((2 * mu_ab + _C1) * (2 * s_ab + _C2)) / ((mu_aa + mu_bb + _C1) * (s_aa + s_bb + _C2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def ssim_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = False,
) -> torch.Tensor:
    """Per-image SSIM of ``[B, C, H, W]`` tensors in [0, 1]; returns float64 ``[B]``."""
    return score_batch("ssim", _ssim_from_batches, x, y, crop_border, test_y_channel, quantize)


def ssim(
    img1: np.ndarray | torch.Tensor,
    img2: np.ndarray | torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = True,
) -> float:
    """SSIM of one image pair, BasicSR ``calculate_ssim`` semantics (see module docstring)."""
    return score_one("ssim", _ssim_from_batches, img1, img2, crop_border, test_y_channel, quantize)


def ssim_y(
    img1: np.ndarray | torch.Tensor,
    img2: np.ndarray | torch.Tensor,
    crop_border: int = 0,
    quantize: bool = True,
) -> float:
    """SSIM on the BT.601 Y channel (the SR convention; use ``crop_border=scale``)."""
    return ssim(img1, img2, crop_border=crop_border, test_y_channel=True, quantize=quantize)
