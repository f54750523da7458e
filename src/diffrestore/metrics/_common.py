"""Shared plumbing for the full-reference metrics: input normalisation, Y channel, border crop.

Why one place: PSNR, SSIM and NIQE must agree exactly on what "the Y channel of this image with a border of
4 cropped" means, for numpy images (HWC, 0-255, as BasicSR's ``calculate_*``) and for library tensors
(``[B, C, H, W]`` in [0, 1]). Both entry points are normalised here to a float64 torch tensor
``[B, C, H, W]`` on the 0-255 scale, so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

# ITU-R BT.601 "studio swing" luma as in MATLAB's rgb2ycbcr / BasicSR's rgb2ycbcr(y_only=True):
# Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1]  (Y on the 0-255 scale, range 16-235).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


def rgb_to_y(img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """BT.601 luma with the 16-235 offset, **RGB** channel order, same value scale as the input's.

    * numpy ``HWC`` (last axis = 3) on the 0-255 scale -> ``HW`` float64 on the 0-255 scale;
    * torch ``[..., 3, H, W]`` in [0, 1] -> ``[..., 1, H, W]`` in [0, 1] (same dtype).

    Unlike BasicSR's ``to_y_channel`` the result is never rounded (neither is BasicSR's for PSNR/SSIM);
    NIQE rounds explicitly, as BasicSR does.
    """
    if isinstance(img, torch.Tensor):
        if img.ndim < 3 or img.shape[-3] != 3:
            raise ValueError(f"expected [..., 3, H, W], got {tuple(img.shape)}")
        w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1) / 255.0
        return (img * w).sum(dim=-3, keepdim=True) + _Y_OFFSET / 255.0
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an HWC image with 3 channels, got shape {a.shape}")
    return _Y_OFFSET + (a @ np.asarray(_Y_WEIGHTS)) / 255.0


def to_batch255(img: np.ndarray | torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Normalise one input to a float64 ``[B, C, H, W]`` tensor on the 0-255 scale.

    numpy ``HW`` / ``HWC`` arrays are taken to be on the 0-255 scale already (any dtype), as BasicSR's
    ``calculate_psnr`` expects. Torch tensors ``[C, H, W]`` / ``[B, C, H, W]`` are library images in [0, 1];
    with ``quantize`` they are clamped, scaled and rounded to integers first (BasicSR's ``tensor2img``), which
    is how restored outputs are scored once written to 8-bit files.
    """
    if isinstance(img, torch.Tensor):
        t = img.detach()
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4:
            raise ValueError(f"expected a [B, C, H, W] or [C, H, W] tensor, got {tuple(img.shape)}")
        t = t.to(torch.float64)
        if quantize:
            return torch.round(t.clamp(0.0, 1.0) * 255.0)
        return t * 255.0
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an HW or HWC image, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.float64).transpose(2, 0, 1))).unsqueeze(0)


def prepare_pair(
    img1: np.ndarray | torch.Tensor,
    img2: np.ndarray | torch.Tensor,
    crop_border: int,
    test_y_channel: bool,
    quantize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 ``[B, C, H, W]`` on 0-255, border-cropped and (optionally) reduced to Y.

    Order matches BasicSR: crop first, then Y (the two commute; Y is per pixel). Y is taken only for
    3-channel images -- grey images are scored on their raw values, as BasicSR (and the papers) do.
    """
    a = to_batch255(img1, quantize)
    b = to_batch255(img2, quantize)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border > 0:
        if 2 * crop_border >= min(a.shape[-2:]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {tuple(a.shape[-2:])} image")
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and a.shape[1] == 3:
        a = rgb_to_y(a / 255.0) * 255.0  # type: ignore[operator]
        b = rgb_to_y(b / 255.0) * 255.0  # type: ignore[operator]
    return a, b


PerImage = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def score_batch(
    name: str, per_image: PerImage, x: torch.Tensor, y: torch.Tensor, crop_border: int, test_y_channel: bool,
    quantize: bool,
) -> torch.Tensor:
    """``<name>_batch``: ``per_image`` on library tensors ``[B, C, H, W]`` in [0, 1] -> float64 ``[B]``."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError(f"{name}_batch takes torch tensors; use {name}() for numpy images")
    return per_image(*prepare_pair(x, y, crop_border, test_y_channel, quantize))


def score_one(
    name: str, per_image: PerImage, img1: np.ndarray | torch.Tensor, img2: np.ndarray | torch.Tensor,
    crop_border: int, test_y_channel: bool, quantize: bool,
) -> float:
    """``<name>``: ``per_image`` on one image pair (numpy 0-255 or torch [0, 1]) -> float."""
    a, b = prepare_pair(img1, img2, crop_border, test_y_channel, quantize)
    if a.shape[0] != 1:
        raise ValueError(f"{name}() scores one image; got a batch of {a.shape[0]} -- use {name}_batch()")
    return float(per_image(a, b)[0])
