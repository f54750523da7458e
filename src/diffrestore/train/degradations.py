"""Low-quality images made on the fly from HR crops, for training ResShift-style SR models.

* ``bicubic``: MATLAB ``imresize`` (antialiased bicubic, via :func:`diffrestore.metrics.imresize`) rounded
  to 8 bits, exactly how the evaluation protocols (and ResShift's bicubic test set) make their LR images, so
  the model sees at training time what it is scored on.
* ``realistic``: a second-order pipeline in the spirit of Real-ESRGAN (blur -> resize -> noise -> JPEG,
  twice, then a final resize to the LR size), so a model can be trained for real photos without a
  paired data set. Simplified on purpose (Gaussian kernels only, no sinc/ring filters, no Poisson noise):
  cheap enough for CPU training, wide enough to cover blur, noise and compression.

All random choices come from the caller's ``torch.Generator`` (exact resume of a training run) and a whole
batch is processed at once (per-sample blur kernels as one grouped convolution, per-sample noise levels);
only JPEG goes through PIL one image at a time. Inputs and outputs are ``[B, 3, H, W]`` in [0, 1].
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffrestore.errors import UserError
from diffrestore.metrics import imresize

__all__ = [
    "DEGRADATIONS",
    "RealisticConfig",
    "add_noise",
    "bicubic_lr",
    "blur",
    "jpeg",
    "make_lr",
    "random_gaussian_kernels",
    "realistic_lr",
]

DEGRADATIONS = ("bicubic", "realistic")


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """``n`` uniform float64 draws in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def bicubic_lr(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """MATLAB-bicubic downscale by ``scale`` (clamped to [0, 1] and rounded to 8 bits when ``quantize``)."""
    if hr.shape[-1] % scale or hr.shape[-2] % scale:
        raise UserError(f"HR size {tuple(hr.shape[-2:])} is not a multiple of the scale {scale}")
    lr = imresize(hr.float(), scale=1.0 / scale)
    assert isinstance(lr, torch.Tensor)
    lr = lr.clamp(0.0, 1.0)
    return (lr * 255.0).round() / 255.0 if quantize else lr


def random_gaussian_kernels(
    n: int, size: int, sigma: tuple[float, float], gen: torch.Generator, p_aniso: float = 0.5
) -> torch.Tensor:
    """``[n, size, size]`` normalised Gaussian kernels: isotropic, or anisotropic with a random rotation.

    sigma_x, sigma_y are drawn in ``sigma`` (equal for the isotropic ones), the angle in [0, pi).
    """
    sx = _u(gen, n, *sigma)
    sy = _u(gen, n, *sigma)
    theta = _u(gen, n, 0.0, math.pi)
    aniso = torch.rand(n, generator=gen, dtype=torch.float64) < p_aniso
    sy = torch.where(aniso, sy, sx)
    theta = torch.where(aniso, theta, torch.zeros_like(theta))
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    u = c * xx + s * yy  # rotate coordinates into the kernel's principal axes
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2))
    return (k / k.sum(dim=(1, 2), keepdim=True)).float()


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own kernel (reflect padding): one grouped conv for the whole batch."""
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode).reshape(1, b * c, h + 2 * pad, w + 2 * pad)
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)[:, None]
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


def add_noise(
    x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Add Gaussian noise of per-image std ``sigma`` ([B], [0, 1] units); grey (one for RGB) if ``gray``."""
    b = x.shape[0]
    colour = torch.randn(x.shape, generator=gen)
    mono = torch.randn((b, 1, *x.shape[2:]), generator=gen).expand_as(x)
    n = torch.where(gray.view(b, 1, 1, 1), mono, colour)
    return x + sigma.view(b, 1, 1, 1).to(x.dtype) * n


def jpeg(x: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """JPEG-compress each image at its quality (PIL, 4:2:0 as common encoders do); returns [0, 1] floats."""
    out = []
    arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for a, q in zip(arr, quality):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float().div(255.0).to(x.device)


@dataclass(frozen=True)
class RealisticConfig:
    """Ranges of the two-stage pipeline (Real-ESRGAN-like defaults, milder in stage 2)."""

    kernel_size: int = 21
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    p_blur2: float = 0.8
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    p_up_down_keep: tuple[float, float, float] = (0.2, 0.7, 0.1)
    noise_sigma: tuple[float, float] = (1.0 / 255, 30.0 / 255)
    noise_sigma2: tuple[float, float] = (1.0 / 255, 25.0 / 255)
    p_gray_noise: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 95)
    jpeg_quality2: tuple[int, int] = (30, 95)


_MODES = ("area", "bilinear", "bicubic")


def _random_resize(x: torch.Tensor, rng: tuple[float, float], probs: tuple[float, float, float],
                   gen: torch.Generator) -> torch.Tensor:
    """Resize the whole batch by one random factor (up / down / keep) with a random interpolation mode."""
    u = float(torch.rand(1, generator=gen, dtype=torch.float64))
    if u < probs[0]:
        f = float(_u(gen, 1, 1.0, rng[1]))
    elif u < probs[0] + probs[1]:
        f = float(_u(gen, 1, rng[0], 1.0))
    else:
        f = 1.0
    mode = _MODES[int(torch.randint(0, 3, (1,), generator=gen))]
    h, w = x.shape[-2:]
    size = (max(4, round(h * f)), max(4, round(w * f)))
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def _stage(
    x: torch.Tensor, gen: torch.Generator, c: RealisticConfig, second: bool
) -> tuple[torch.Tensor, list[int]]:
    """Blur, resize and noise of one stage; returns the image and the JPEG qualities to apply later."""
    b = x.shape[0]
    do_blur = (not second) or float(torch.rand(1, generator=gen)) < c.p_blur2
    if do_blur:
        sig = c.blur_sigma2 if second else c.blur_sigma
        x = blur(x, random_gaussian_kernels(b, c.kernel_size, sig, gen))
    x = _random_resize(x, c.resize_range2 if second else c.resize_range, c.p_up_down_keep, gen)
    lo, hi = c.noise_sigma2 if second else c.noise_sigma
    sigma = _u(gen, b, lo, hi).float()
    gray = torch.rand(b, generator=gen) < c.p_gray_noise
    x = add_noise(x, sigma, gray, gen).clamp(0, 1)
    qlo, qhi = c.jpeg_quality2 if second else c.jpeg_quality
    quality = torch.randint(qlo, qhi + 1, (b,), generator=gen).tolist()
    return x, quality


def realistic_lr(
    hr: torch.Tensor, scale: int, gen: torch.Generator, config: RealisticConfig | None = None
) -> torch.Tensor:
    """Second-order degradation of ``hr`` ([B, 3, H, W] in [0, 1]) to ``[B, 3, H/scale, W/scale]``, 8-bit.

    Stage 1: blur, random resize, noise, JPEG. Stage 2: (probably) blur, random resize, noise, then a
    resize to the final LR size with a random mode, and JPEG last (as real pipelines end with compression).
    """
    c = config or RealisticConfig()
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise UserError(f"HR size {(h, w)} is not a multiple of the scale {scale}")
    x, q1 = _stage(hr.float(), gen, c, second=False)
    x = jpeg(x, q1)
    x, q2 = _stage(x, gen, c, second=True)
    mode = _MODES[int(torch.randint(0, 3, (1,), generator=gen))]
    x = F.interpolate(x, size=(h // scale, w // scale), mode=mode,
                      **({} if mode == "area" else {"align_corners": False}))
    return jpeg(x, q2)


def make_lr(hr: torch.Tensor, scale: int, degradation: str, gen: torch.Generator) -> torch.Tensor:
    """Dispatch on the ``--degradation`` name; ``hr`` and the result are [0, 1]."""
    if degradation == "bicubic":
        return bicubic_lr(hr, scale)
    if degradation == "realistic":
        return realistic_lr(hr, scale, gen)
    raise UserError(f"--degradation must be one of {', '.join(DEGRADATIONS)}, got {degradation!r}")
