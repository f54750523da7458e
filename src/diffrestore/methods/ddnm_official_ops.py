"""Operators with the OFFICIAL DDNM SVD-path conventions, only for ``compat="official"`` reproduction.

Why separate from ``diffrestore.operators``: these copy official quirks a user should not get by
default — the colourisation row ``[0.3333, 0.3334, 0.3333]`` with torch's exact SVD basis V (the
official Lambda_noise depends on V, not just on its span), and SRConv's bicubic kernel with
reflective padding. Images are ``[B, C, H, W]``; y is image-shaped (the official flattened y is a
reshape: colourisation ``[B, H*W] -> [B, 1, H, W]``, SRConv channel-major ``-> [B, C, H/f, W/f]``).

SVD view (used by DDNM+'s SVD path): ``Vt(x)`` gives coefficients shaped like x,
``singular_values()`` broadcasts against them (0 on the null space), ``V`` maps back; ``coords(x)``
is the official "P" — the coefficient layout WITHOUT the V^T rotation, which the official
Lambda_noise applies to z and eps.
"""

from __future__ import annotations

import math

import torch

__all__ = ["OfficialColorization", "OfficialSRConv", "official_bicubic_kernel", "official_bicubic_matrix"]

OFFICIAL_GRAY_ROW = (0.3333, 0.3334, 0.3333)


class OfficialColorization:
    """y = 0.3333 r + 0.3334 g + 0.3333 b per pixel; SVD of the 1x3 row as torch computes it."""

    has_svd = True

    def __init__(self, row: tuple[float, float, float] = OFFICIAL_GRAY_ROW) -> None:
        r = torch.tensor([row], dtype=torch.float32)
        u, s, vh = torch.linalg.svd(r, full_matrices=True)
        self.row = r[0]
        self._u = u[0, 0]  # +-1
        self._s = s[0]
        self._v = vh.T.contiguous()  # columns = basis vectors, column 0 = singular direction

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("c,bchw->bhw", self.row.to(x), x)[:, None]

    def At(self, y: torch.Tensor) -> torch.Tensor:
        return self.row.to(y)[None, :, None, None] * y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``V diag(1/s) U^T y`` = row * g / |row|^2 per pixel."""
        return self._v[:, 0].to(y)[None, :, None, None] * (self._u / self._s).to(y) * y

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (x_shape[0], 1, *x_shape[2:])

    def singular_values(self, x_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        return torch.stack([self._s, torch.zeros(()), torch.zeros(())]).reshape(3, 1, 1)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,bdhw->bchw", self._v.to(x), x)

    def V(self, c: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,bchw->bdhw", self._v.to(c), c)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        """Official P: channel c of z/eps is taken as singular component c (no V^T rotation)."""
        return x


def official_bicubic_kernel(factor: int) -> torch.Tensor:
    """DDNM's sr_bicubic kernel: Keys cubic (a = -0.5) at ``(i - 2f + 0.5)/f``, 4f taps, normalised."""

    def cubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    k = torch.tensor([cubic((i - math.floor(4 * factor / 2) + 0.5) / factor) for i in range(4 * factor)],
                     dtype=torch.float64)
    return (k / k.sum()).float()


def official_bicubic_matrix(n: int, factor: int, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """SRConv's 1-D matrix ``[n/f, n]``: row r centred at r f + f//2, reflective padding, taps summed."""
    k = official_bicubic_kernel(factor) if kernel is None else kernel.float()
    L = len(k)
    m = torch.zeros(n // factor, n, dtype=torch.float32)
    for r in range(n // factor):
        i = r * factor + factor // 2
        for j in range(i - L // 2, i + L // 2):
            jj = -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)
            m[r, jj] += k[j - i + L // 2]
    return m


class _Separable1D:
    """Thresholded SVD of one 1-D matrix (singular values < thr zeroed, as SRConv does)."""

    def __init__(self, m: torch.Tensor, thr: float) -> None:
        u, s, vh = torch.linalg.svd(m, full_matrices=True)
        s = torch.where(s < thr, torch.zeros_like(s), s)
        self.m, self.u, self.s, self.v = m, u, s, vh.T.contiguous()
        inv = torch.where(s > 0, 1 / s.clamp_min(1e-30), torch.zeros_like(s))
        self.pinv = self.v[:, : len(s)] @ torch.diag(inv) @ u.T  # [n, n/f]
        self.s_full = torch.cat([s, torch.zeros(m.shape[1] - len(s))])


class OfficialSRConv:
    """Separable bicubic downsampling x f (DDNM SRConv), per channel; A^+ from the thresholded 1-D SVDs."""

    has_svd = True

    def __init__(self, factor: int, size: tuple[int, int], kernel: torch.Tensor | None = None,
                 thr: float = 3e-2) -> None:
        H, W = size
        if H % factor or W % factor:
            raise ValueError(f"image size {H}x{W} is not a multiple of {factor}")
        self.factor = factor
        self.h = _Separable1D(official_bicubic_matrix(H, factor, kernel), thr)
        self.w = _Separable1D(official_bicubic_matrix(W, factor, kernel), thr)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ih,bchw,jw->bcij", self.h.m.to(x), x, self.w.m.to(x))

    def At(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ih,bcij,jw->bchw", self.h.m.to(y), y, self.w.m.to(y))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hi,bcij,wj->bchw", self.h.pinv.to(y), y, self.w.pinv.to(y))

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*x_shape[:2], x_shape[2] // self.factor, x_shape[3] // self.factor)

    def singular_values(self, x_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        return torch.outer(self.h.s_full, self.w.s_full)[None]

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hi,bchw,wj->bcij", self.h.v.to(x), x, self.w.v.to(x))

    def V(self, c: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hi,bcij,wj->bchw", self.h.v.to(c), c, self.w.v.to(c))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ih,bcij,jw->bchw", self.h.u.to(y), y, self.w.u.to(y))

    def U(self, c: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ih,bchw,jw->bcij", self.h.u.to(c), c, self.w.u.to(c))
