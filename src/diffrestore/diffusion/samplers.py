"""Pure single-step update rules (no loops, no randomness, no networks).

Why pure functions: DDNM, MSR/HiR, SHRED (differentiable DDIM chains) and ADIR (guided sampling) all
combine the same few updates differently; each takes the tensors it needs — including the noise ``z``
drawn by the caller — and returns the next state, so callers own the loop, the noise streams and
autograd. ``abar`` arguments are tensors broadcastable to the images (e.g. ``[B, 1, 1, 1]`` float32,
as ``Denoiser.abar(t, like=x)`` returns) or Python floats.
"""

from __future__ import annotations

import torch

__all__ = [
    "ddim_eta_step",
    "ddim_sigma",
    "ddim_step",
    "ddnm_official_step",
    "ddnm_scalars",
    "ddpm_posterior_step",
    "eps_from_x0",
    "forward_jump",
    "hq_demo_scalars",
    "range_null_correct",
    "renoise",
    "undo",
    "x0_from_eps",
]

Scalar = torch.Tensor | float


def _sqrt(a: Scalar) -> Scalar:
    return a.sqrt() if isinstance(a, torch.Tensor) else a**0.5


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, abar_t: Scalar) -> torch.Tensor:
    """Tweedie / DDIM clean estimate ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` (DDNM's op order)."""
    return (x_t - eps * _sqrt(1 - abar_t)) / _sqrt(abar_t)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, abar_t: Scalar) -> torch.Tensor:
    """The noise that maps ``x0`` to ``x_t`` (re-derived eps after x0 was modified)."""
    return (x_t - _sqrt(abar_t) * x0) / _sqrt(1 - abar_t)


def ddim_step(
    x0: torch.Tensor, eps: torch.Tensor, abar_next: Scalar, eta: float, z: torch.Tensor | None = None
) -> torch.Tensor:
    """DDNM / seed-000 convention: ``sqrt(ab) x0 + sqrt(1-ab) (eta z + sqrt(1-eta^2) eps)``.

    A variance-preserving blend of fresh noise and the predicted noise; ``eta = 0`` is deterministic
    DDIM (``z`` may then be None), and needs only the target abar. Differs from Song et al.'s eta,
    see ``ddim_eta_step``.
    """
    s = _sqrt(1 - abar_next)
    out = _sqrt(abar_next) * x0 + s * ((1 - eta**2) ** 0.5) * eps
    if eta != 0:
        if z is None:
            raise ValueError("eta > 0 needs noise z")
        out = out + s * eta * z
    return out


def ddim_sigma(abar_t: Scalar, abar_next: Scalar, eta: float) -> Scalar:
    """Song et al.'s DDIM sigma: ``eta sqrt((1-ab_s)/(1-ab_t)) sqrt(1 - ab_t/ab_s)``."""
    return eta * _sqrt((1 - abar_next) / (1 - abar_t)) * _sqrt(1 - abar_t / abar_next)


def ddim_eta_step(
    x0: torch.Tensor,
    eps: torch.Tensor,
    abar_t: Scalar,
    abar_next: Scalar,
    eta: float,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """Song et al.'s DDIM(eta): ``sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps + sigma z`` (eta=1 ~ DDPM)."""
    sig = ddim_sigma(abar_t, abar_next, eta)
    out = _sqrt(abar_next) * x0 + _sqrt(1 - abar_next - sig**2) * eps
    if eta != 0:
        if z is None:
            raise ValueError("eta > 0 needs noise z")
        out = out + sig * z
    return out


def range_null_correct(x0: torch.Tensor, op, y: torch.Tensor, lam: Scalar = 1.0) -> torch.Tensor:
    """``x0 - lam A^+(A x0 - y)``: the range part from y (lam = 1: exact), the null part from x0."""
    return x0 - lam * op.pinv(op.A(x0) - y)


def ddnm_scalars(abar_next: torch.Tensor, sigma_y: float, official: bool) -> tuple[torch.Tensor, ...]:
    """DDNM+ scalar rule ``(sigma_t, lambda_t, gamma_t)`` (std's) for a DDIM-like step to ``abar_next``.

    ``sigma_y`` is in the model's [-1, 1] range. Paper: sigma_t = sqrt(1 - ab), c = sqrt(ab);
    official main sampler: sigma_t = sqrt(1 - ab^2), c = ab (refs README deviation 1).
    lambda = 1, gamma = sqrt(sigma_t^2 - (c sigma_y)^2) if sigma_t >= c sigma_y, else
    lambda = sigma_t / (c sigma_y), gamma = 0. Elementwise float32 like the official code.
    """
    if official:
        sig, c = (1 - abar_next**2).sqrt(), abar_next
    else:
        sig, c = (1 - abar_next).sqrt(), abar_next.sqrt()
    if sigma_y == 0:
        return sig, torch.ones_like(sig), (sig**2 - (c * sigma_y) ** 2).sqrt()
    ok = sig >= c * sigma_y
    lam = torch.where(ok, torch.ones_like(sig), sig / (c * sigma_y))
    gam = torch.where(ok, (sig**2 - (c * sigma_y) ** 2).clamp_min(0).sqrt(), torch.zeros_like(sig))
    return sig, lam, gam


def ddnm_official_step(
    x0hat: torch.Tensor,
    eps: torch.Tensor,
    abar_next: torch.Tensor,
    eta: float,
    gamma: torch.Tensor,
    z: torch.Tensor,
) -> torch.Tensor:
    """Official simplified DDNM+: ``sqrt(ab) x0hat + gamma (c1 z + c2 eps)``, c1/c2 already sqrt(1-ab)-scaled.

    The double scaling (gamma ~ sqrt(1-ab^2) times sqrt(1-ab)) is the official behaviour, kept only
    for ``compat="official"``.
    """
    c1 = (1 - abar_next).sqrt() * eta
    c2 = (1 - abar_next).sqrt() * ((1 - eta**2) ** 0.5)
    return abar_next.sqrt() * x0hat + gamma * (c1 * z + c2 * eps)


def renoise(x0: torch.Tensor, abar_to: Scalar, z: torch.Tensor) -> torch.Tensor:
    """Fresh forward sample ``sqrt(ab) x0 + sqrt(1 - ab) z`` (DDNM's official time travel, from raw x0)."""
    return _sqrt(abar_to) * x0 + z * _sqrt(1 - abar_to)


def forward_jump(x: torch.Tensor, abar_from: Scalar, abar_to: Scalar, z: torch.Tensor) -> torch.Tensor:
    """q(x_to | x_from) for abar_to < abar_from: ``sqrt(ab_to/ab_from) x + sqrt(1 - ab_to/ab_from) z``."""
    r = abar_to / abar_from
    return _sqrt(r) * x + _sqrt(1 - r) * z


def undo(x: torch.Tensor, beta_next: Scalar, z: torch.Tensor) -> torch.Tensor:
    """RePaint's one-step forward "undo": ``sqrt(1 - beta) x + sqrt(beta) z`` (hq_demo time travel)."""
    return _sqrt(1 - beta_next) * x + _sqrt(beta_next) * z


def ddpm_posterior_step(
    x0: torch.Tensor,
    x_t: torch.Tensor,
    coef1: Scalar,
    coef2: Scalar,
    var: Scalar,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ancestral DDPM: ``coef1 x0 + coef2 x_t + sqrt(var) z`` (var is a VARIANCE; z None -> mean)."""
    mean = coef1 * x0 + coef2 * x_t
    return mean if z is None else mean + _sqrt(var) * z


def hq_demo_scalars(sig: float, a: float, sigma_y: float, official: bool = True) -> tuple[float, float]:
    """DDNM+ ``(lambda, gamma_variance)`` for a DDPM posterior step with std ``sig`` and x0-coef ``a``.

    Paper: lambda = sig / (a sigma_y) when sig < a sigma_y. hq_demo (``official``) evaluates
    ``sig / a * sigma_y`` instead (precedence bug, refs README deviation 4). gamma is the VARIANCE
    ``sig^2 - (a sigma_y)^2`` (or 0).
    """
    if sig >= a * sigma_y:
        return 1.0, sig**2 - (a * sigma_y) ** 2
    lam = sig / a * sigma_y if official else sig / (a * sigma_y)
    return lam, 0.0
