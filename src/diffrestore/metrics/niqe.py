"""NIQE (Mittal et al., "Making a 'Completely Blind' Image Quality Analyzer", 2013), BasicSR's variant.

Why NIQE: diffusion restorers trade fidelity (PSNR) for realism; a no-reference score is the standard second
axis in those papers, and BasicSR's ``calculate_niqe`` (which reproduces the official MATLAB release to 4
decimals) is the implementation they quote. This is an independent numpy/scipy implementation of the same
algorithm; only the pristine-model parameters are BasicSR's data file (Apache-2.0, see ``data/NOTICE``).

Algorithm (lower = more natural):

1. Y channel (BT.601, 16-235) on 0-255, border crop, **rounded** to integers (MATLAB reads integer images);
   cropped to whole 96x96 blocks.
2. At two scales (full, then MATLAB-bicubic half size of ``img/255`` times 255, unrounded): MSCN coefficients
   ``(I - mu) / (sigma + 1)`` with the 7x7 Gaussian window and replicate borders.
3. Per block (96x96 at scale 1, 48x48 at scale 2; no overlap): 18 features -- an AGGD fit of the MSCN
   values (shape, mean of the two scales) and AGGD fits (shape, mean, left and right scale) of the products
   of each coefficient with its neighbour shifted by (0,1), (1,0), (1,1), (1,-1), the shift wrapping inside
   the block (MATLAB ``circshift``).
4. Fit a Gaussian to the 36-d block features (NaN-aware mean; covariance of the NaN-free rows) and return
   ``sqrt((mu_p - mu)^T pinv((S_p + S)/2) (mu_p - mu))`` against the pristine model.

The AGGD shape is a grid search over 0.2:0.001:10 (argmin, first on ties, as the reference), vectorised over
all blocks at once.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from scipy.ndimage import convolve
from scipy.special import gamma

from ._common import rgb_to_y
from .resize import imresize

__all__ = ["niqe", "niqe_features", "load_pristine_params"]

_BLOCK = 96
_FLAT_TOL = 1e-6
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def load_pristine_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu_pris [36], cov_pris [36, 36], gaussian_window [7, 7])`` from the shipped BasicSR data file."""
    ref = resources.files("diffrestore.metrics").joinpath("data/niqe_pris_params.npz")
    with resources.as_file(ref) as path, np.load(path) as data:
        mu = np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
        win = np.asarray(data["gaussian_window"], dtype=np.float64)
    return mu, cov, win


@lru_cache(maxsize=1)
def _gamma_grid() -> tuple[np.ndarray, np.ndarray]:
    """Shape grid 0.2:0.001:10 and the AGGD moment ratio r(g) = G(2/g)^2 / (G(1/g) G(3/g)) on it."""
    g = np.arange(0.2, 10.001, 0.001)
    r = gamma(2.0 / g) ** 2 / (gamma(1.0 / g) * gamma(3.0 / g))
    return g, r


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD ``(alpha, beta_left, beta_right)`` of each row of ``x`` ``[N, M]`` (moment matching).

    Degenerate rows (no negative or no positive values) propagate NaN the way the reference does (its
    argmin over an all-NaN error picks the first grid value, so alpha = 0.2 with NaN betas); NaN rows are
    later dropped from the covariance and ignored by the NaN-aware mean.
    """
    neg = x < 0
    pos = x > 0
    sq = x * x
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gammahat = left_std / right_std
        rhat = np.abs(x).mean(axis=1) ** 2 / sq.mean(axis=1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    grid, r = _gamma_grid()
    pos_idx = np.zeros(x.shape[0], dtype=np.int64)
    ok = np.isfinite(rhatnorm)
    chunk = 512  # bounds the [chunk, 9801] error matrix to ~40 MB
    valid_rows = np.flatnonzero(ok)
    for start in range(0, valid_rows.size, chunk):
        rows = valid_rows[start : start + chunk]
        pos_idx[rows] = np.argmin((r[None, :] - rhatnorm[rows, None]) ** 2, axis=1)
    alpha = grid[pos_idx]
    ratio = np.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """18 NIQE features for each non-overlapping ``block``-square tile of ``mscn`` -> ``[n_blocks, 18]``."""
    nh, nw = mscn.shape[0] // block, mscn.shape[1] // block
    blocks = (
        mscn[: nh * block, : nw * block]
        .reshape(nh, block, nw, block)
        .transpose(0, 2, 1, 3)
        .reshape(-1, block, block)
    )
    n = blocks.shape[0]
    feats = []
    alpha, bl, br = _aggd_fit(blocks.reshape(n, -1))
    feats += [alpha, (bl + br) / 2.0]
    for shift in _SHIFTS:
        prod = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd_fit(prod.reshape(n, -1))
        mean = (br - bl) * gamma(2.0 / alpha) / gamma(1.0 / alpha)
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (replicate borders, +1 stabiliser as in the paper).

    In a flat neighbourhood ``img - mu`` is exactly 0 mathematically, but float64 round-off leaves +-1e-14
    whose *sign* decides whether the AGGD fit counts the pixel as left or right (zeros count as neither).
    That coin flip moved baboon's score by 4e-4; MATLAB's and BasicSR's float32 arithmetic land on exact
    zeros, so we snap |img - mu| < 1e-6 (0-255 scale; genuine deviations of integer pixels are ~1e-5 or more)
    to 0 and reproduce their 5.72957.
    """
    mu = convolve(img, window, mode="nearest")
    var = convolve(img * img, window, mode="nearest") - mu * mu
    centred = img - mu
    centred[np.abs(centred) < _FLAT_TOL] = 0.0
    return centred / (np.sqrt(np.abs(var)) + 1.0)


def niqe_features(y: np.ndarray) -> np.ndarray:
    """Per-block 36-d NIQE features ``[n_blocks, 36]`` of a rounded luminance image on 0-255 (float64)."""
    _, _, window = load_pristine_params()
    h, w = y.shape
    nh, nw = h // _BLOCK, w // _BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs at least a {_BLOCK}x{_BLOCK} image, got {h}x{w}")
    img = y[: nh * _BLOCK, : nw * _BLOCK].astype(np.float64)
    f1 = _block_features(_mscn(img, window), _BLOCK)
    half = np.asarray(imresize(img / 255.0, scale=0.5, antialias=True)) * 255.0
    f2 = _block_features(_mscn(half, window), _BLOCK // 2)
    return np.concatenate([f1, f2], axis=1)


def _to_luma(img: np.ndarray | torch.Tensor, convert_to: str) -> np.ndarray:
    """Grey/Y image on 0-255 from numpy HW/HWC (0-255, RGB) or a torch [C,H,W]/[1,C,H,W] tensor in [0, 1]."""
    if isinstance(img, torch.Tensor):
        t = img.detach().to(torch.float64)
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError("niqe() scores one image; loop over the batch")
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"expected [C, H, W] or [1, C, H, W], got {tuple(img.shape)}")
        # 8-bit quantisation first, as the reference scores image files.
        a = torch.round(t.clamp(0, 1) * 255.0).permute(1, 2, 0).cpu().numpy()
    else:
        a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HW or HWC (3-channel) image, got shape {a.shape}")
    if convert_to == "y":
        return np.asarray(rgb_to_y(a))
    if convert_to == "gray":
        return a @ np.array([0.299, 0.587, 0.114])  # OpenCV/ITU-R 601 grey, no offset
    raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")


def niqe(img: np.ndarray | torch.Tensor, crop_border: int = 0, convert_to: str = "y") -> float:
    """NIQE score of one image (lower is better), BasicSR ``calculate_niqe`` semantics.

    ``img``: numpy ``HW``/``HWC`` on 0-255 in **RGB** order (BasicSR takes BGR; we convert accordingly),
    or a torch ``[C, H, W]`` / ``[1, C, H, W]`` tensor in [0, 1]. ``convert_to``: ``'y'`` (BT.601 Y, the
    default, as BasicSR) or ``'gray'``. Needs at least 96x96 pixels after cropping.
    """
    y = _to_luma(img, convert_to)
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    # Round as the reference does: MATLAB computes the score on integer-valued luminance.
    y = np.round(y)
    feats = niqe_features(y)
    mu_p, cov_p, _ = load_pristine_params()
    mu_d = np.nanmean(feats, axis=0)
    clean = feats[~np.isnan(feats).any(axis=1)]
    cov_d = np.cov(clean, rowvar=False)
    diff = mu_p - mu_d
    quality = diff @ np.linalg.pinv((cov_p + cov_d) / 2.0) @ diff
    return float(np.sqrt(quality))
