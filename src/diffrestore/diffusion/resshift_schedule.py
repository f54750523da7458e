"""ResShift's residual-shifting schedule (METHODS §6) as plain float64 arrays.

Why a separate module: the schedule is shared by the sampler, the trainer and the tests against
``refs/resshift_schedule.json``; it follows the official code (``get_named_eta_schedule('exponential')``),
not the paper, where they differ: ``sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level)`` and
``etas_end`` is ``sqrt(eta_T)`` (so eta_T = 0.9801 for 0.99). Arrays are indexed by t = 0..T-1, where
t = 0 is the LAST reverse step (closest to x0) and t is also the integer the network receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError

__all__ = ["ResShiftSchedule", "exponential_sqrt_etas", "resshift_schedule", "schedule_from_spec"]


def exponential_sqrt_etas(steps: int, kappa: float, min_noise_level: float, etas_end: float,
                          power: float) -> np.ndarray:
    """``sqrt(eta_t)`` for t = 0..T-1, bit-exact with the official numpy expression.

    ``power`` < 1 shifts the residual early (large eta already at small t); the official code's
    ``b ** (linspace(0, 1, T) ** power * (T - 1))`` form is kept (the closed form differs by ~2e-16).
    """
    if steps < 2:
        raise UserError(f"ResShift needs at least 2 steps, got {steps}")
    if kappa <= 0 or min_noise_level <= 0 or not 0 < etas_end < 1.0 + 1e-12 or power <= 0:
        raise UserError("ResShift schedule: kappa, min_noise_level, power must be > 0 and etas_end in (0, 1]")
    etas_start = min(min_noise_level / kappa, min_noise_level)
    if etas_start >= etas_end:
        raise UserError(f"ResShift schedule: sqrt(eta_1) = {etas_start} must be below etas_end = {etas_end}")
    increaser = np.exp(1.0 / (steps - 1) * np.log(etas_end / etas_start))
    base = np.ones([steps]) * increaser
    power_timestep = np.linspace(0, 1, steps, endpoint=True) ** power * (steps - 1)
    return np.power(base, power_timestep) * etas_start


@dataclass(frozen=True)
class ResShiftSchedule:
    """All per-step coefficients (float64 ``[T]`` arrays) plus the parameters that produced them.

    ``posterior_log_variance_clipped[0]`` repeats entry 1 (the official clip; the t = 0 step adds no
    noise anyway). ``coef1``/``coef2`` give the posterior mean ``coef1[t] * x_t + coef2[t] * x0``.
    """

    steps: int
    kappa: float
    min_noise_level: float
    etas_end: float
    power: float
    sqrt_etas: np.ndarray = field(repr=False)
    etas: np.ndarray = field(repr=False)
    etas_prev: np.ndarray = field(repr=False)
    alpha: np.ndarray = field(repr=False)
    posterior_variance: np.ndarray = field(repr=False)
    posterior_log_variance_clipped: np.ndarray = field(repr=False)
    coef1: np.ndarray = field(repr=False)
    coef2: np.ndarray = field(repr=False)
    input_scale: np.ndarray = field(repr=False)

    @property
    def prior_std(self) -> float:
        """Std of x_T around y0: ``kappa * sqrt(eta_T)``."""
        return float(self.kappa * self.sqrt_etas[-1])

    @property
    def posterior_std(self) -> np.ndarray:
        """``exp(0.5 * log_var_clipped)``; the sampler multiplies it by 0 at t = 0."""
        return np.exp(0.5 * self.posterior_log_variance_clipped)

    def tensor(self, name: str, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One array as a tensor (float32 by default, as the official ``_extract_into_tensor`` does)."""
        return torch.as_tensor(np.asarray(getattr(self, name)), dtype=dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        """The defining parameters (what a model config / ``train.json`` stores)."""
        return {
            "type": "resshift",
            "schedule": "exponential",
            "steps": self.steps,
            "kappa": self.kappa,
            "min_noise_level": self.min_noise_level,
            "etas_end": self.etas_end,
            "power": self.power,
        }


def resshift_schedule(steps: int = 4, kappa: float = 2.0, min_noise_level: float = 0.2,
                      etas_end: float = 0.99, power: float = 0.3) -> ResShiftSchedule:
    """Build the exponential schedule; defaults are the journal (v3 / bicsr, 4-step) models'."""
    sqrt_etas = exponential_sqrt_etas(int(steps), float(kappa), float(min_noise_level), float(etas_end),
                                      float(power))
    etas = sqrt_etas**2
    etas_prev = np.append(0.0, etas[:-1])
    alpha = etas - etas_prev
    post_var = kappa**2 * etas_prev / etas * alpha
    post_var_clipped = np.append(post_var[1], post_var[1:])
    return ResShiftSchedule(
        steps=int(steps),
        kappa=float(kappa),
        min_noise_level=float(min_noise_level),
        etas_end=float(etas_end),
        power=float(power),
        sqrt_etas=sqrt_etas,
        etas=etas,
        etas_prev=etas_prev,
        alpha=alpha,
        posterior_variance=post_var,
        posterior_log_variance_clipped=np.log(post_var_clipped),
        coef1=etas_prev / etas,
        coef2=alpha / etas,
        input_scale=1.0 / np.sqrt(etas * kappa**2 + 1.0),
    )


def schedule_from_spec(diffusion: dict[str, Any]) -> ResShiftSchedule:
    """From a registry / exported-model ``diffusion`` block (``models.json``, ``resshift.json``)."""
    if diffusion.get("type", "resshift") != "resshift":
        raise UserError(f"not a ResShift diffusion block (type {diffusion.get('type')!r})")
    name = diffusion.get("schedule", diffusion.get("schedule_name", "exponential"))
    if name != "exponential":
        raise UserError(f"ResShift schedule {name!r} is not supported (only 'exponential')")
    power = diffusion.get("power", (diffusion.get("schedule_kwargs") or {}).get("power", 0.3))
    return resshift_schedule(
        steps=int(diffusion.get("steps", 4)),
        kappa=float(diffusion.get("kappa", 2.0)),
        min_noise_level=float(diffusion.get("min_noise_level", 0.2)),
        etas_end=float(diffusion.get("etas_end", 0.99)),
        power=float(power),
    )
