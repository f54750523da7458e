"""``make_operator(task, …)``: the one place that turns CLI-level options into an operator.

Why shapes in both directions: ``degrade`` starts from the ground truth x (``image_shape``), ``restore``
from the observation y (``y_shape``; e.g. an LR image of h×w and scale s means x is sh×sw). Options a
task does not use are ignored (the CLI passes one namespace for all tasks); unknown option names raise.

Tasks and options (defaults in brackets):

* ``sr``: ``scale`` [4], ``kernel`` ``avgpool`` | ``bicubic`` [avgpool], ``threshold`` (bicubic A⁺) [3e-2]
* ``inpaint``: ``mask`` (tensor/array, or a path: image white = known, or ``.npy`` nonzero = known;
  ``invert_mask`` flips it) or ``kind`` ``box`` | ``random`` | ``lines`` [box] with ``frac`` [0.5] / ``box``
  (box), ``rate`` = MISSING fraction [0.5] and ``seed`` [0] (random), ``lines`` [8], ``width`` [5], ``seed``
* ``colorize``: ``weights`` [(1/3, 1/3, 1/3)] (or ``"bt601"``)
* ``denoise``: none (the noise level is the method's ``sigma_y``)
* ``deblur``: ``kernel`` ``gaussian`` | ``uniform`` | ``aniso`` | PATH (image / .npy) | ``unknown`` (blind:
  SHRED estimates it) [gaussian],
  ``size`` [2·ceil(3σ)+1; 5 for uniform], ``sigma`` [1.6], ``sigma2`` [sigma/2], ``theta`` (radians) [0],
  ``threshold`` [3e-2]
* ``cs``: ``kind`` ``pixels`` | ``hadamard`` [hadamard], ``rate`` = KEPT fraction [0.25], ``seed`` [0],
  ``block`` [32]
* ``oldphoto``: colourisation ∘ SR: ``scale`` [2], ``kernel`` [avgpool], ``weights``
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError
from diffrestore.operators.base import Operator, shape_chw
from diffrestore.operators.colorize import BT601, Colorize
from diffrestore.operators.compose import Compose
from diffrestore.operators.cs import RandomPixelsCS, WalshHadamardCS
from diffrestore.operators.deblur import (
    Blur,
    UnknownBlur,
    anisotropic_gaussian,
    gaussian_kernel,
    load_kernel,
    uniform_kernel,
)
from diffrestore.operators.denoise import Denoise
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.masks import box_mask, line_mask, load_mask, random_mask
from diffrestore.operators.sr import AvgPoolSR, BicubicSR

__all__ = ["OPTIONS", "TASKS", "make_operator", "x_shape_from_y"]

TASKS: tuple[str, ...] = ("sr", "inpaint", "colorize", "denoise", "deblur", "cs", "oldphoto")

OPTIONS: frozenset[str] = frozenset(
    {
        "scale",
        "kernel",
        "threshold",
        "mask",
        "invert_mask",
        "kind",
        "frac",
        "box",
        "rate",
        "seed",
        "lines",
        "width",
        "weights",
        "size",
        "sigma",
        "sigma2",
        "theta",
        "block",
        "image_hw",
    }
)


def _task(task: str) -> str:
    t = str(task).lower()
    if t not in TASKS:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return t


def _clean(opts: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(k for k in opts if k not in OPTIONS)
    if unknown:
        raise UserError(
            f"unknown operator option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}"
        )
    return {k: v for k, v in opts.items() if v is not None}


def _weights(w: Any) -> Any:
    if w is None:
        return (1 / 3, 1 / 3, 1 / 3)
    if isinstance(w, str):
        key = w.lower().replace("-", "").replace(".", "")
        if key in ("bt601", "rec601", "luma"):
            return BT601
        if key in ("mean", "average", "ddnm"):
            return (1 / 3, 1 / 3, 1 / 3)
        try:
            return tuple(float(v) for v in w.replace(",", " ").split())
        except ValueError as e:
            raise UserError(
                f"colorization weights {w!r}: use 'bt601', 'mean' or numbers like 0.3,0.6,0.1"
            ) from e
    return w


def _sr(o: dict[str, Any], default_scale: int) -> Operator:
    scale = o.get("scale", default_scale)
    if int(scale) != scale or not 2 <= int(scale) <= 32:
        raise UserError(f"SR scale must be an integer in 2..32, got {scale}")
    kind = str(o.get("kernel", "avgpool")).lower()
    if kind in ("avgpool", "avg", "average", "box", "mean"):
        return AvgPoolSR(int(scale))
    if kind in ("bicubic", "cubic", "matlab"):
        return BicubicSR(int(scale), o.get("threshold", 3e-2))
    raise UserError(f"unknown SR kernel {kind!r}: use avgpool or bicubic")


def _shape_of(
    task: str, image_shape: Sequence[int] | None, y_shape: Sequence[int] | None, o: dict[str, Any]
) -> tuple[int, int, int] | None:
    if image_shape is not None:
        s = tuple(int(v) for v in image_shape)
        return (3, *s) if len(s) == 2 else shape_chw(s)
    if y_shape is not None:
        return shape_chw(x_shape_from_y(task, y_shape, **o))
    return None


def make_operator(
    task: str, image_shape: Sequence[int] | None = None, *, y_shape: Sequence[int] | None = None, **opts: Any
) -> Operator:
    """Build the operator for ``task`` (see module docstring) and bind it to the image shape.

    ``image_shape``: x as ``(H, W)`` (3 channels), ``(C, H, W)`` or ``(B, C, H, W)``; or ``y_shape`` of the
    observation (converted with ``x_shape_from_y``). Masks and pixel-CS need one of them. The operator is
    bound to ``op.fit_shape(image_shape)`` (e.g. SR ×4 on 37×41 binds 36×40): crop x to ``op.x_shape``.
    """
    t = _task(task)
    o = _clean(opts)
    xs = _shape_of(t, image_shape, y_shape, o)
    hw = None if xs is None else (xs[1], xs[2])
    op: Operator
    if t == "sr":
        op = _sr(o, 4)
    elif t == "oldphoto":
        op = Compose([Colorize(_weights(o.get("weights"))), _sr(o, 2)], task="oldphoto")
    elif t == "colorize":
        op = Colorize(_weights(o.get("weights")))
    elif t == "denoise":
        op = Denoise()
    elif t == "inpaint":
        op = Inpaint(_mask(o, hw))
    elif t == "deblur" and str(o.get("kernel", "")).lower() in ("unknown", "blind"):
        op = UnknownBlur()  # blind deblurring: the method estimates the kernel (SHRED)
    elif t == "deblur":
        op = Blur(_kernel(o), o.get("threshold", 3e-2), desc=_kernel_desc(o))
    else:  # cs
        kind = str(o.get("kind", "hadamard")).lower()
        rate = float(o.get("rate", 0.25))
        seed = int(o.get("seed", 0))
        if kind in ("pixels", "pixel", "random"):
            size = hw or (tuple(o["image_hw"]) if "image_hw" in o else None)
            if size is None:
                raise UserError("pixel compressed sensing needs the image size")
            op = RandomPixelsCS(rate, seed, size)
        elif kind in ("hadamard", "wht", "walsh"):
            op = WalshHadamardCS(rate, seed, int(o.get("block", 32)))
        else:
            raise UserError(f"unknown compressed-sensing kind {kind!r}: use pixels or hadamard")
    if xs is not None:
        # bind to the largest size the operator accepts (``degrade`` crops the ground truth to
        # ``op.fit_shape`` and re-binds; an observation's x_shape_from_y always fits)
        op.bind(op.fit_shape(xs))
    return op


def _mask(o: dict[str, Any], hw: tuple[int, int] | None) -> torch.Tensor:
    m = o.get("mask")
    if m is not None:
        if isinstance(m, (str, os.PathLike)):
            mask = load_mask(m, invert=bool(o.get("invert_mask", False)))
        else:
            mask = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m)
            if bool(o.get("invert_mask", False)):
                mask = ~mask.bool()
        return mask
    if hw is None:
        raise UserError("inpainting needs a mask or the image size to draw one")
    kind = str(o.get("kind", "box")).lower()
    seed = int(o.get("seed", 0))
    if kind == "box":
        box = o.get("box")
        return box_mask(*hw, frac=float(o.get("frac", 0.5)), box=None if box is None else tuple(box))
    if kind == "random":
        return random_mask(*hw, rate=float(o.get("rate", 0.5)), seed=seed)
    if kind in ("lines", "line", "scratches"):
        return line_mask(*hw, n=int(o.get("lines", 8)), width=float(o.get("width", 5.0)), seed=seed)
    raise UserError(f"unknown mask kind {kind!r}: use box, random or lines (or give a mask file)")


def _kernel(o: dict[str, Any]) -> torch.Tensor:
    k = o.get("kernel", "gaussian")
    if isinstance(k, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(k)
    name = str(k).lower()
    sigma = float(o.get("sigma", 1.6))
    size = o.get("size")
    if name in ("gaussian", "gauss"):
        return gaussian_kernel(size, sigma)
    if name in ("uniform", "box"):
        return uniform_kernel(5 if size is None else size)
    if name in ("aniso", "anisotropic"):
        return anisotropic_gaussian(
            size, sigma, float(o.get("sigma2", sigma / 2)), float(o.get("theta", 0.0))
        )
    if os.path.exists(str(k)):
        return load_kernel(str(k))
    raise UserError(f"unknown blur kernel {k!r}: use gaussian, uniform, aniso or a kernel file path")


def _kernel_desc(o: dict[str, Any]) -> str:
    k = o.get("kernel", "gaussian")
    if isinstance(k, (torch.Tensor, np.ndarray)):
        return "array"
    parts = [f"{n}={o[n]}" for n in ("size", "sigma", "sigma2", "theta") if n in o]
    return f"{k}({', '.join(parts)})"


def x_shape_from_y(task: str, y_shape: Sequence[int], **opts: Any) -> tuple[int, ...]:
    """Shape of x for an observation of ``y_shape`` (keeps a leading batch if given).

    Image-like observations given with 3 channels (grey files are read as RGB) are accepted for the grey
    tasks (colorize, oldphoto): x has ``len(weights)`` channels. Pixel CS needs ``image_hw`` (or the saved
    parameters: ``load_operator``).
    """
    t = _task(task)
    o = _clean(opts)
    ys = tuple(int(v) for v in y_shape)
    if t in ("inpaint", "denoise", "deblur"):
        return ys
    if t == "sr":
        return _sr(o, 4).x_shape_from_y(ys)
    if t == "colorize":
        return Colorize(_weights(o.get("weights"))).x_shape_from_y(ys)
    if t == "oldphoto":
        return Compose([Colorize(_weights(o.get("weights"))), _sr(o, 2)]).x_shape_from_y(ys)
    kind = str(o.get("kind", "hadamard")).lower()
    if kind in ("hadamard", "wht", "walsh"):
        return WalshHadamardCS(
            float(o.get("rate", 0.25)), int(o.get("seed", 0)), int(o.get("block", 32))
        ).x_shape_from_y(ys)
    if "image_hw" in o:
        h, w = (int(v) for v in o["image_hw"])
        return (*ys[:-1], h, w)
    raise UserError("a pixel compressed-sensing observation needs its saved operator parameters (image size)")
