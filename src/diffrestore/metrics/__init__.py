"""Image-quality metrics with the conventions of the published tables (BasicSR / MATLAB).

Full-reference: :func:`psnr`, :func:`ssim` (and ``*_y`` on BT.601 Y, ``*_batch`` for ``[B, C, H, W]``
tensors); no-reference: :func:`niqe`; restoration-specific: :func:`consistency` (``A x - y``) and
:func:`seam_score` (tile joins); :func:`imresize` is MATLAB's bicubic resize (the SR baseline and operator);
:func:`measure` times a block (wall, CPU, peak RSS).
"""

from ._common import rgb_to_y
from .consistency import ConsistencyStats, consistency, consistency_max_abs, consistency_stats
from .niqe import niqe
from .psnr import psnr, psnr_batch, psnr_y
from .resize import imresize, resize_matrix, resize_weights
from .seam import seam_score, seams_from_boxes
from .ssim import ssim, ssim_batch, ssim_y
from .timing import Timing, measure

__all__ = [
    "ConsistencyStats",
    "Timing",
    "consistency",
    "consistency_max_abs",
    "consistency_stats",
    "imresize",
    "measure",
    "niqe",
    "psnr",
    "psnr_batch",
    "psnr_y",
    "resize_matrix",
    "resize_weights",
    "rgb_to_y",
    "seam_score",
    "seams_from_boxes",
    "ssim",
    "ssim_batch",
    "ssim_y",
]
