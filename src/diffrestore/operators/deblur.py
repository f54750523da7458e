"""Deblurring: circular convolution with a kernel, computed with FFTs; kernel constructors.

Boundary choice: **circular** (periodic). Why: it makes ``A``, ``Aᵀ`` and ``A⁺`` exact and diagonal in
Fourier, ``A = F⁻¹ diag(K) F``, ``A⁺ = F⁻¹ diag(K⁺) F`` with ``K⁺ = conj(K)/|K|²`` where ``|K| > τ`` and 0
elsewhere (METHODS §1.6), for any image size, in O(N log N). The price: y pixels within half a kernel of
the border mix in the opposite border (a synthetic ``degrade`` makes exactly such y; for real photos the
border band is slightly mis-modelled).

Convention: true convolution ``y[i, j] = Σ_ab k[a, b] · x[i − a + ci, j − b + cj]`` (indices mod H, W)
with the kernel centre ``(ci, cj) = (kh // 2, kw // 2)``; odd sizes keep the image unshifted.

SVD view (for DDNM+): singular values ``|K|`` per frequency. To keep coefficients *real*, V is the 2-D
discrete Hartley transform (orthonormal, symmetric, its own inverse: ``H x = Re F x − Im F x`` with the
orthonormal FFT); a real blur acts on the Hartley pair {k, −k} as ``|K|`` times a rotation, so
``U = R ∘ H`` with ``R = F⁻¹ diag(K/|K|) F`` (a real orthogonal "phase" filter). Then
``A = U diag(|K|) Vᵀ`` exactly and ``A⁺ = V diag(|K|⁺) Uᵀ`` (same threshold).

Tiling (``restrict``): a tile uses circular convolution *on the tile* but observes only the y pixels
whose whole kernel footprint lies inside the tile (``y`` elsewhere in the tile is masked to 0): then the
tile operator is exact, ``A_tile(x_tile) == restrict_y(A x)`` (masked crop), for every tile. Along an
axis where the tile spans the whole image the circular wrap is the image's own, so nothing is masked.
The tile's ``A⁺`` is the Tikhonov-regularised (δ = max(τ, 1e-2)²) minimum-norm inverse of ``M C``, solved by
preconditioned conjugate gradients (``TileBlur``); ``A A⁺ A ≈ A`` to the same level as the whole-image
thresholded inverse. The masked band is filled by the prior and observed by the overlapping neighbours.
No SVD view on tiles (a tile covering the whole image gets the exact ``Blur``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    Box,
    Operator,
    SameShape,
    SVDView,
    check_boxes,
    crop_stack,
    read_array_file,
    register_operator,
)
from diffrestore.operators.denoise import Identity

__all__ = [
    "Blur",
    "TileBlur",
    "UnknownBlur",
    "anisotropic_gaussian",
    "gaussian_kernel",
    "load_kernel",
    "normalize_kernel",
    "uniform_kernel",
]


def normalize_kernel(k: Tensor | np.ndarray) -> Tensor:
    """2-D float64 kernel with sum 1 (a blur keeps the mean brightness)."""
    t = torch.as_tensor(np.asarray(k) if not isinstance(k, Tensor) else k).detach().cpu().to(torch.float64)
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2 or t.numel() == 0:
        raise UserError(f"a blur kernel must be a 2-D array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise UserError("the blur kernel contains NaN or infinite values")
    total = float(t.sum())
    if not total > 1e-12:
        raise UserError("the blur kernel must have a positive sum")
    return t / total


def gaussian_kernel(size: int | None = None, sigma: float = 1.6) -> Tensor:
    """Isotropic Gaussian ``[size, size]`` (default size ``2·ceil(3σ) + 1``), normalised to sum 1."""
    if not sigma > 0:
        raise UserError(f"gaussian sigma must be > 0, got {sigma}")
    size = _size(size, sigma)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return normalize_kernel(g[:, None] * g[None, :])


def uniform_kernel(size: int = 5) -> Tensor:
    """Box blur ``[size, size]`` with equal weights (sum 1)."""
    size = _size(size, 1.0)
    return torch.full((size, size), 1.0 / size**2, dtype=torch.float64)


def anisotropic_gaussian(
    size: int | None = None, sigma1: float = 2.0, sigma2: float = 0.8, theta: float = 0.0
) -> Tensor:
    """Anisotropic Gaussian: std ``sigma1`` along the direction at angle ``theta`` (radians, from the
    x axis towards +rows), ``sigma2`` across it; BasicSR's ``bivariate_Gaussian`` parametrisation."""
    if not (sigma1 > 0 and sigma2 > 0):
        raise UserError(f"anisotropic gaussian sigmas must be > 0, got {sigma1}, {sigma2}")
    size = _size(size, max(sigma1, sigma2))
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma1**2, sigma2**2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(cov)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    pts = torch.stack([xx, yy], dim=-1)  # (x, y) = (column, row)
    q = torch.einsum("...i,ij,...j->...", pts, inv, pts)
    return normalize_kernel(torch.exp(-0.5 * q))


def load_kernel(path: str | os.PathLike[str]) -> Tensor:
    """A user kernel from ``.npy`` or an image file (grey levels), normalised to sum 1."""
    p = Path(path)

    def from_image(im: Any) -> np.ndarray:
        grey = im.convert("F") if im.mode in ("I;16", "I", "F") else im.convert("L")
        return np.asarray(grey, dtype=np.float64)

    a = np.asarray(read_array_file(p, "kernel", lambda a: a, from_image), dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=-1)
    if (a < 0).any():
        raise UserError(f"kernel {p} has negative entries")
    return normalize_kernel(a)


def _size(size: int | None, sigma: float) -> int:
    if size is None:
        return 2 * math.ceil(3 * sigma) + 1
    if int(size) != size or size < 1:
        raise UserError(f"kernel size must be a positive integer, got {size}")
    return int(size)


def _dht(x: Tensor) -> Tensor:
    """Orthonormal 2-D discrete Hartley transform over the last two axes (involutory)."""
    f = torch.fft.fft2(x, norm="ortho")
    return f.real - f.imag


class _Circular(SameShape, Operator):
    """Circular convolution machinery shared by ``Blur`` (whole image) and ``TileBlur`` (tiles)."""

    task = "deblur"
    channelwise = True

    def __init__(
        self,
        kernel: Tensor | np.ndarray,
        threshold: float = 3e-2,
        normalize: bool = True,
        desc: str | None = None,
    ) -> None:
        super().__init__()
        k = torch.as_tensor(kernel).detach().cpu().to(torch.float64)
        self.kernel = normalize_kernel(k) if normalize else k.reshape(k.shape[-2:])
        if not threshold >= 0:
            raise UserError(f"deblur threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.desc = desc

    def _spectrum(self, H: int, W: int, like: Tensor) -> tuple[Tensor, ...]:
        """(K_r, K⁺_r, P_r, |K| [1, H, W]) with ``_r`` = the rfft half-plane ``[H, W//2 + 1]``."""

        def build() -> tuple[Tensor, ...]:
            k = self.kernel.detach().cpu().to(torch.float64)
            kh, kw = k.shape
            rows = (torch.arange(kh) - kh // 2) % H
            cols = (torch.arange(kw) - kw // 2) % W
            pad = torch.zeros(H, W, dtype=torch.float64)
            pad.index_put_((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), k, accumulate=True)
            K = torch.fft.fft2(pad)
            mag = K.abs()
            floor = 1e-10 * float(mag.max())
            keep = mag > max(self.threshold, floor)
            kinv = torch.where(keep, K.conj() / mag.clamp_min(1e-300) ** 2, torch.zeros_like(K))
            phase = torch.where(mag > floor, K / mag.clamp_min(1e-300), torch.ones_like(K))
            half = W // 2 + 1
            return K[:, :half], kinv[:, :half], phase[:, :half], mag[None]

        return self._cached(("spec", H, W), like, build)

    def _filter(self, x: Tensor, h: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * h, s=(H, W))

    def _blur(self, x: Tensor) -> Tensor:
        return self._filter(x, self._spectrum(x.shape[-2], x.shape[-1], x)[0])

    def _blur_t(self, y: Tensor) -> Tensor:
        return self._filter(y, self._spectrum(y.shape[-2], y.shape[-1], y)[0].conj())

    def _blur_pinv(self, y: Tensor) -> Tensor:
        return self._filter(y, self._spectrum(y.shape[-2], y.shape[-1], y)[1])

    def A(self, x: Tensor) -> Tensor:
        return self._blur(x)

    def At(self, y: Tensor) -> Tensor:
        return self._blur_t(y)

    def pinv(self, y: Tensor) -> Tensor:
        return self._blur_pinv(y)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        return {"threshold": self.threshold, "normalize": False, "desc": self.desc}, {"kernel": self.kernel}


@register_operator
class Blur(SVDView, _Circular):
    """Circular convolution with ``kernel`` via FFT (see module docstring); ``threshold`` = τ on ``|K|``.

    ``A⁺`` keeps frequencies with ``|K| > τ`` (default 3e-2, DDNM's threshold; the kernel sums to 1 so
    ``|K| ≤ 1``). ``A A⁺ A = A`` holds exactly when no ``|K|`` lies in (0, τ]; otherwise it holds up to
    ``τ·‖x‖`` (the cut frequencies count as null space). ``normalize`` rescales the kernel to sum 1.
    """

    block_local = False  # a blurred pixel sees its neighbours: the footprint crosses tile edges

    # SVD view (Hartley basis, see module docstring)
    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        H, W = self._svd_hw(x_shape)
        return self._spectrum(H, W, torch.zeros((), dtype=torch.float64))[3]

    def Vt(self, x: Tensor) -> Tensor:
        return _dht(x)

    def V(self, c: Tensor) -> Tensor:
        return _dht(c)

    def Ut(self, y: Tensor) -> Tensor:
        phase = self._spectrum(y.shape[-2], y.shape[-1], y)[2]
        return _dht(self._filter(y, phase.conj()))

    def U(self, c: Tensor) -> Tensor:
        phase = self._spectrum(c.shape[-2], c.shape[-1], c)[2]
        return self._filter(_dht(c), phase)

    # tiling
    def _axis_mask(self, size: int, full: int, k: int) -> Tensor:
        """Observed positions along one axis of a tile of ``size`` in an image of ``full``."""
        m = torch.zeros(size, dtype=torch.bool)
        if size == full:
            m[:] = True
        else:
            c = k // 2
            m[max(k - 1 - c, 0) : max(size - c, 0)] = True
        return m

    def tile_mask(self, tile_hw: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
        """``[1, 1, h, w]`` bool: the tile's y pixels whose kernel footprint lies inside the tile."""
        kh, kw = self.kernel.shape
        mh = self._axis_mask(tile_hw[0], image_hw[0], kh)
        mw = self._axis_mask(tile_hw[1], image_hw[1], kw)
        m = (mh[:, None] & mw[None, :])[None, None]
        if not m.any():
            raise UserError(
                f"tiles of {tile_hw[0]}x{tile_hw[1]} are too small for the {kh}x{kw} blur kernel; "
                "use larger tiles"
            )
        return m

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        H, W = self._hw(image_shape)
        bx = check_boxes(boxes, (H, W))
        mask = self.tile_mask((bx[0][2], bx[0][3]), (H, W))
        op: Operator
        if bool(mask.all()):  # the tile is the whole image: keep the exact operator and its SVD view
            op = Blur(self.kernel, self.threshold, normalize=False, desc=self.desc)
        else:
            op = TileBlur(self.kernel, mask, self.threshold, desc=self.desc)
        return self._tiled(op, bx)

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        bx = check_boxes(boxes, (y.shape[-2], y.shape[-1]))
        m = self.tile_mask((bx[0][2], bx[0][3]), (y.shape[-2], y.shape[-1]))
        return crop_stack(y, bx) * m.to(device=y.device, dtype=y.dtype)


@register_operator
class TileBlur(_Circular):
    """Blur on a tile stack: circular blur on the tile, observed only where ``mask`` (see module doc).

    ``A = M C``, ``Aᵀ = Cᵀ M``; y lives in tile shape with zeros outside the mask. ``A⁺`` is the
    Tikhonov-regularised minimum-norm inverse ``Cᵀ M (M C Cᵀ M + δ I)⁻¹ M`` with ``δ = max(τ, 1e-2)²``,
    solved by conjugate gradients preconditioned with ``M (C Cᵀ + δ)⁻¹ M`` (diagonal in Fourier), at most
    ``max_iter`` iterations (2 FFT pairs each), per tile until ``‖residual‖ ≤ tol·‖M y‖``.

    Why not ``C⁺ M`` (one FFT pair): zero-filling y outside the mask puts an edge into the residual, and
    with frequencies cut by τ that edge leaks through ``C C⁺`` into the observed region (~10 % residual
    near the band, measured with a 11×11 Gaussian on 64² tiles); the regularised solve brings the
    consistency back to the whole-image level. CG iterates per tile (tiles that converge stop updating),
    so a tile's result does not depend on which tiles share its batch.
    """

    def __init__(
        self,
        kernel: Tensor | np.ndarray,
        mask: Tensor | np.ndarray,
        threshold: float = 3e-2,
        normalize: bool = False,
        desc: str | None = None,
        max_iter: int = 40,
        tol: float = 1e-3,
    ) -> None:
        super().__init__(kernel, threshold, normalize=normalize, desc=desc)
        m = torch.as_tensor(mask).detach().cpu().bool()
        while m.dim() < 4:
            m = m[None]
        self.mask = m
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    @property
    def delta(self) -> float:
        """Tikhonov weight δ = max(τ, 1e-2)² (below 1e-2 the solve would need far more iterations)."""
        return max(self.threshold, 1e-2) ** 2

    def _m(self, like: Tensor) -> Tensor:
        if tuple(like.shape[-2:]) != tuple(self.mask.shape[-2:]):
            raise ValueError(
                f"tile operator is for {tuple(self.mask.shape[-2:])} tiles, got {tuple(like.shape[-2:])}"
            )
        return self._cached("mask", like, lambda: self.mask.to(torch.float64))

    def _gram(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Fourier multipliers of ``C Cᵀ`` and ``(C Cᵀ + δ)⁻¹`` on the rfft half-plane."""
        H, W = like.shape[-2:]

        def build() -> tuple[Tensor, Tensor]:
            K = self._spectrum(H, W, torch.zeros((), dtype=torch.float64))[0]
            g = K.abs() ** 2
            return g.to(torch.complex128), (1.0 / (g + self.delta)).to(torch.complex128)

        return self._cached(("gram", H, W), like, build)

    def A(self, x: Tensor) -> Tensor:
        return self._m(x) * self._blur(x)

    def At(self, y: Tensor) -> Tensor:
        return self._blur_t(self._m(y) * y)

    def pinv(self, y: Tensor) -> Tensor:
        m = self._m(y)
        gram, prec = self._gram(y)
        delta = self.delta

        def dot(a: Tensor, b: Tensor) -> Tensor:
            return (a * b).sum(dim=(-3, -2, -1), keepdim=True)

        r = m * y
        z = torch.zeros_like(r)
        best, best_rr = z, dot(r, r)  # CG's residual is not monotone: keep each tile's best iterate
        res = r
        pz = m * self._filter(res, prec)
        p = pz
        rz = dot(res, pz)
        stop = self.tol**2 * dot(r, r)
        active = best_rr > stop
        one = torch.ones_like(rz)
        for _ in range(self.max_iter):
            if not bool(active.any()):
                break
            ap = m * self._filter(p, gram) + delta * p
            pap = dot(p, ap)
            ok = active & (pap > 0)
            alpha = torch.where(ok, rz / torch.where(ok, pap, one), torch.zeros_like(pap))
            z = z + alpha * p
            res = res - alpha * ap
            rr = dot(res, res)
            better = ok & (rr < best_rr)
            best = torch.where(better, z, best)
            best_rr = torch.where(better, rr, best_rr)
            active = ok & (rr > stop)
            pz = m * self._filter(res, prec)
            rz_new = dot(res, pz)
            beta = torch.where(active, rz_new / torch.where(rz != 0, rz, one), torch.zeros_like(rz))
            p = pz + beta * p
            rz = rz_new
        return self._blur_t(best)

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        raise UserError("a tile operator cannot be restricted again")

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        raise UserError("a tile operator cannot be restricted again")

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        cfg = {"threshold": self.threshold, "normalize": False, "desc": self.desc}
        return {**cfg, "max_iter": self.max_iter, "tol": self.tol}, {"kernel": self.kernel, "mask": self.mask}


@register_operator
class UnknownBlur(Identity):
    """Blind deblurring: a blur whose kernel is unknown (``--kernel unknown``).

    Why an operator: the observation still has a task, a shape and a tiling story; only a method that
    estimates the kernel (SHRED) can use it — it replaces this placeholder with ``Blur(estimated kernel)``
    before any tile runs. Every other method refuses it (``blind`` flag). ``A`` is the identity meanwhile
    (the blurred photo is its own best guess, ``Identity``'s algebra), which keeps reports defined.
    """

    task = "deblur"
    blind = True
