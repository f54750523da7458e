"""PSNR with BasicSR's conventions (``calculate_psnr``): 0-255 scale, float64, optional border crop and Y.

Why these conventions: they are the ones behind every published SR/denoising table we compare with
(ANCHORS.md). PSNR = 10 log10(255^2 / MSE) over all cropped pixels and channels; identical images give
``inf`` (BasicSR's numpy path; its torch path adds 1e-8 to the MSE instead -- we do not, so both of our
entry points agree exactly).

Entry points:

* :func:`psnr` -- one image pair: numpy ``HW``/``HWC`` on 0-255 (any dtype), or torch ``[C,H,W]`` /
  ``[1,C,H,W]`` in [0, 1] (quantised to 8 bits first by default, like BasicSR's ``tensor2img`` before
  scoring). -> float
* :func:`psnr_batch` -- library tensors ``[B, C, H, W]`` in [0, 1] -> float64 tensor ``[B]``.
* :func:`psnr_y` -- :func:`psnr` on BT.601 Y (16-235), the SR convention.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import score_batch, score_one

__all__ = ["psnr", "psnr_y", "psnr_batch"]


def _psnr_from_batches(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR of float64 ``[B, C, H, W]`` tensors on 0-255 (inf where the MSE is exactly 0)."""
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # 1/0 -> inf in torch, as wanted


def psnr_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = False,
) -> torch.Tensor:
    """Per-image PSNR (dB) of ``[B, C, H, W]`` tensors in [0, 1]; returns float64 ``[B]``.

    ``quantize=False`` by default here: in-library tensors are continuous (e.g. operator outputs); pass
    ``quantize=True`` to score them as the 8-bit files they will become.
    """
    return score_batch("psnr", _psnr_from_batches, x, y, crop_border, test_y_channel, quantize)


def psnr(
    img1: np.ndarray | torch.Tensor,
    img2: np.ndarray | torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = True,
) -> float:
    """PSNR (dB) of one image pair, BasicSR ``calculate_psnr`` semantics (see module docstring).

    ``quantize`` only affects torch inputs ([0, 1] -> rounded 0-255); numpy inputs are used as given.
    """
    return score_one("psnr", _psnr_from_batches, img1, img2, crop_border, test_y_channel, quantize)


def psnr_y(
    img1: np.ndarray | torch.Tensor,
    img2: np.ndarray | torch.Tensor,
    crop_border: int = 0,
    quantize: bool = True,
) -> float:
    """PSNR on the BT.601 Y channel (the SR convention; use ``crop_border=scale``)."""
    return psnr(img1, img2, crop_border=crop_border, test_y_channel=True, quantize=quantize)
