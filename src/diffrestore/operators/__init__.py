"""Degradation operators ``y = A x`` (A, Aᵀ, A⁺, SVD view, tiles); see ``base`` for the conventions."""

from diffrestore.operators.base import Box, Operator, SVDView, crop_stack, load_operator, shape_chw
from diffrestore.operators.colorize import BT601, Colorize
from diffrestore.operators.compose import ColorizeCompose, Compose
from diffrestore.operators.cs import RandomPixelsCS, WalshHadamardCS, fwht
from diffrestore.operators.deblur import (
    Blur,
    TileBlur,
    anisotropic_gaussian,
    gaussian_kernel,
    load_kernel,
    uniform_kernel,
)
from diffrestore.operators.denoise import Denoise, Identity
from diffrestore.operators.factory import TASKS, make_operator, x_shape_from_y
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.masks import box_mask, line_mask, load_mask, random_mask
from diffrestore.operators.sr import AvgPoolSR, BicubicSR, SeparableTiles

__all__ = [
    "BT601",
    "TASKS",
    "AvgPoolSR",
    "BicubicSR",
    "Blur",
    "Box",
    "ColorizeCompose",
    "Colorize",
    "Compose",
    "Denoise",
    "Identity",
    "Inpaint",
    "Operator",
    "RandomPixelsCS",
    "SVDView",
    "SeparableTiles",
    "TileBlur",
    "WalshHadamardCS",
    "anisotropic_gaussian",
    "box_mask",
    "crop_stack",
    "fwht",
    "gaussian_kernel",
    "line_mask",
    "load_kernel",
    "load_mask",
    "load_operator",
    "make_operator",
    "random_mask",
    "shape_chw",
    "uniform_kernel",
    "x_shape_from_y",
]
