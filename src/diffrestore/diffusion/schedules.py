"""Noise schedules and timestep plans, with the exact arithmetic of the official samplers.

The schedules are float64 numpy (as guided-diffusion builds them); DDNM's main sampler instead takes
cumulative products in float32 torch (``ddnm_alphas_cumprod``), which the refs need to the last ulp.
Two respacing rules exist and they differ (refs README, deviation 7): DDNM's main sampler walks
``t = unit * (1000 // T)`` (``ddnm_transitions``) while guided-diffusion / hq_demo keep
``round(k * 999 / (n - 1))`` (``respaced_timesteps`` + ``respace_betas``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from diffrestore.errors import UserError

__all__ = [
    "Transition",
    "alphas_cumprod",
    "cosine_betas",
    "ddnm_alphas_cumprod",
    "ddnm_timesteps",
    "ddnm_transitions",
    "jump_schedule",
    "linear_betas",
    "respace_betas",
    "respaced_steps",
    "respaced_timesteps",
]


def linear_betas(T: int) -> np.ndarray:
    """guided-diffusion linear schedule scaled to ``T`` steps: 1e-4..0.02 at T = 1000, float64."""
    scale = 1000 / T
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)


def cosine_betas(T: int, max_beta: float = 0.999) -> np.ndarray:
    """Improved-DDPM cosine schedule (s = 0.008, betas capped at ``max_beta``), float64."""

    def abar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)], dtype=np.float64)


def betas_for(diffusion: dict[str, Any] | None) -> np.ndarray:
    """The β schedule a registry/config ``diffusion`` entry describes (linear 1000 steps by default)."""
    d = diffusion or {}
    steps = int(d.get("steps", 1000))
    schedule = d.get("schedule", "linear")
    if schedule == "linear":
        start, end = d.get("beta_start"), d.get("beta_end")
        if start is None or end is None:
            return linear_betas(steps)
        return np.linspace(float(start), float(end), steps, dtype=np.float64)
    if schedule == "cosine":
        return cosine_betas(steps)
    raise UserError(f"unsupported noise schedule {schedule!r} in the model config (linear or cosine)")


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """Cumulative product of ``1 - betas`` in float64."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64), axis=0)


def ddnm_alphas_cumprod(betas: np.ndarray | torch.Tensor) -> torch.Tensor:
    """DDNM's ``compute_alpha`` table: float32 ``cumprod(1 - [0, betas])``, length T + 1.

    Entry ``t + 1`` is abar(t), so entry 0 is abar(-1) = 1 (the "end" of the chain). The official
    code casts betas to float32 *before* the cumulative product; doing it in float64 moves abar by a
    few ulp, which the x0 traces (scaled by 1/sqrt(abar) ~ 100) would show.
    """
    b = torch.as_tensor(np.asarray(betas, dtype=np.float64)).float()
    return (1 - torch.cat([torch.zeros(1), b])).cumprod(dim=0)


def jump_schedule(T: int, travel_length: int = 1, travel_repeat: int = 1) -> list[int]:
    """RePaint's time-travel schedule over unit times: T-1, …, 0, then -1.

    Every unit time j in {0, L, 2L, …} with j < T - L is revisited ``travel_repeat - 1`` extra times:
    walking down, on reaching such j the walk goes back up L units and descends again.
    """
    if T < 1 or travel_length < 1 or travel_repeat < 1:
        raise ValueError("T, travel_length and travel_repeat must be >= 1")
    jumps = {j: travel_repeat - 1 for j in range(0, T - travel_length, travel_length)}
    t, ts = T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(travel_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


class Transition(NamedTuple):
    """One move of a sampler: ``denoise`` (t_to < t_from, calls the net) or ``travel`` (re-noise)."""

    t_from: int
    t_to: int
    kind: Literal["denoise", "travel"]


def ddnm_transitions(
    T_sampling: int, travel_length: int = 1, travel_repeat: int = 1, num_train: int = 1000,
    start: int | None = None,
) -> list[Transition]:
    """DDNM main sampler's plan in ORIGINAL timesteps: unit u -> u * (num_train // T), end = -1.

    For T = 20: 950, 900, …, 0, -1 (t = 999 is never visited). Travel transitions go upwards.
    ``start`` (a warm start): keep only the transitions at or below timestep ``start``.
    """
    skip = num_train // T_sampling
    units = jump_schedule(T_sampling, travel_length, travel_repeat)
    out = []
    for i, j in zip(units[:-1], units[1:]):
        t_from, t_to = i * skip, (j * skip if j >= 0 else -1)
        out.append(Transition(t_from, t_to, "denoise" if j < i else "travel"))
    if start is not None:
        out = [tr for tr in out if max(tr.t_from, tr.t_to) <= start]
        if not out:
            raise UserError(f"warm start at t={start} leaves no sampling step (steps are {skip} apart)")
    return out


def ddnm_timesteps(T: int, travel_length: int = 1, travel_repeat: int = 1) -> list[tuple[int, int]]:
    """``(t_from, t_to)`` pairs of ``ddnm_transitions`` (CONTRACTS name; -1 = end)."""
    return [(a, b) for a, b, _ in ddnm_transitions(T, travel_length, travel_repeat)]


def respaced_timesteps(num_train: int, n: int) -> list[int]:
    """guided-diffusion's ``space_timesteps(num_train, [n])``: kept original steps, ascending.

    Accumulates the float stride and rounds with Python's ``round`` exactly like the official code,
    so ties fall the same way (e.g. n = 10 -> 0, 111, …, 999; t = num_train - 1 is always kept).
    """
    if n < 1 or n > num_train:
        raise ValueError(f"cannot keep {n} of {num_train} steps")
    if n == 1:
        return [0]
    stride = (num_train - 1) / (n - 1)
    cur, kept = 0.0, []
    for _ in range(n):
        kept.append(round(cur))
        cur += stride
    return sorted(set(kept))


respaced_steps = respaced_timesteps


def respace_betas(betas: np.ndarray, kept: list[int]) -> np.ndarray:
    """Betas of the respaced chain: ``1 - abar[k_i] / abar[k_{i-1}]`` (float64, abar[-1] := 1)."""
    abar = alphas_cumprod(betas)
    out, last = [], 1.0
    for k in sorted(kept):
        out.append(1.0 - abar[k] / last)
        last = abar[k]
    return np.array(out, dtype=np.float64)
