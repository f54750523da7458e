"""hq_demo's per-tile DDNM+ sampler and the ``ddnm-hq`` method (official Mask-Shift Restoration).

Why a second DDNM: the official Mask-Shift demo (``wyhuai/DDNM`` ``hq_demo``) is not the main DDNM
sampler (refs README "How hq_demo's Mask-Shift Restoration works"); reproducing the ``ddnm_msr_small``
vectors needs its exact arithmetic, which differs in every part:

* respacing ``round(k·999/(T−1))`` (guided-diffusion ``space_timesteps``, t = 999 used) with respaced
  betas ``1 − ā[map_k]/ā[map_{k−1}]``; all schedule arrays float64, gathered and cast to float32;
* ancestral DDPM posterior steps (no η), x0 clipped to [−1, 1] *before* the range-space correction;
* DDNM+ scalars from the posterior: ``σ_t = sqrt(posterior_variance)``, ``a_t = posterior_mean_coef1``;
  ``λ = σ_t/a_t·σ_y`` (the official precedence bug) when ``σ_t < a_t σ_y``; ``γ`` is a VARIANCE
  (``σ_t² − (a_t σ_y)²``); ``σ_y`` is used as given, in model units (not doubled);
* time travel = RePaint "undo": one forward step ``sqrt(1−β'_{k+1}) x + sqrt(β'_{k+1}) z`` from the
  current x (network not called);
* one ``N(0, I)`` draw per transition, after the network call for denoise steps, also at k = 0 where it
  is multiplied by 0.

The mask-shift overwrite is the ``constrain_x0`` hook (called after the correction at every denoise
step, as in hq_demo); tiling, the chained x_T and the canvas live in ``diffrestore.tiling``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.diffusion.samplers import ddpm_posterior_step, hq_demo_scalars, range_null_correct, undo
from diffrestore.diffusion.schedules import jump_schedule, respace_betas, respaced_timesteps
from diffrestore.diffusion.variance import posterior_arrays
from diffrestore.errors import UserError
from diffrestore.methods.base import Method, Observation, Prior, register
from diffrestore.methods.options import ModelOptions, RunOptions, SamplingOptions, TilingOptions, option
from diffrestore.progress import StepCallback
from diffrestore.tiling.plan import TilePlan
from diffrestore.tiling.runner import TileContext

__all__ = ["DDNMHQ", "HQDemoSolver", "HQSchedule", "ddnm_hq"]

Hook = Callable[[torch.Tensor, int], torch.Tensor]


class HQSchedule:
    """hq_demo's respaced chain: kept original timesteps, float64 arrays, and the transition list.

    ``transitions`` are ``(k_from, k_to)`` pairs of respaced indices from RePaint's jump schedule
    (``k_to = -1`` ends); a pair with ``k_to < k_from`` is a denoise step (one network call).
    """

    def __init__(self, betas: np.ndarray, steps: int, travel: tuple[int, int] = (1, 1)) -> None:
        self.kept = respaced_timesteps(len(betas), steps)
        self.arrays = posterior_arrays(respace_betas(np.asarray(betas, dtype=np.float64), self.kept))
        units = jump_schedule(len(self.kept), travel[0], travel[1])
        self.transitions = list(zip(units[:-1], units[1:]))

    @property
    def network_calls(self) -> int:
        """Denoise transitions per tile."""
        return sum(1 for a, b in self.transitions if b < a)

    def f32(self, name: str, k: int) -> torch.Tensor:
        """``arrays[name][k]`` as a float32 0-d tensor (the official ``_extract_into_tensor`` cast)."""
        return torch.tensor(self.arrays[name][k], dtype=torch.float64).float()


def ddnm_hq(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    steps: int = 100,
    travel: tuple[int, int] = (1, 1),
    sigma_y: float = 0.0,
    noise: NoiseSource,
    x_T: torch.Tensor | None = None,
    constrain_x0: Hook | None = None,
    pre_correct: Hook | None = None,
    streams: Sequence[Stream] | None = None,
    schedule: HQSchedule | None = None,
    official_lambda: bool = True,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run hq_demo's sampler on a batch of tiles; returns ``(x0hat_last, x_last)``.

    ``x0hat_last`` is the final corrected (and hook-constrained) estimate — what hq_demo writes to its
    canvas; ``x_last`` is the final sample, which hq_demo carries over as the next tile's x_T.
    ``x_T`` None draws one ``N(0, I)`` (per stream). ``sigma_y`` is in model units, as hq_demo uses it.
    ``official_lambda=False`` uses the paper's ``λ = σ_t/(a_t σ_y)`` instead of the precedence bug.
    ``callback(i, n, x=, x0hat=)`` after every transition (``x0hat`` after the hook, denoise steps only).
    """
    sch = schedule if schedule is not None else HQSchedule(denoiser.betas, steps, travel)
    if x_T is None:
        x = draw_batch(noise, tuple(op.pinv(y).shape), streams, device=y.device)
    else:
        x = x_T.float()

    def draw() -> torch.Tensor:
        return draw_batch(noise, tuple(x.shape), streams, dtype=x.dtype, device=x.device)

    x0hat: torch.Tensor | None = None
    for i, (k, k_to) in enumerate(sch.transitions):
        if k_to > k:  # RePaint undo: one forward step from the current x
            x = undo(x, sch.f32("betas", k_to).to(x.device), draw())
        else:
            t_model = torch.full((x.shape[0],), sch.kept[k], dtype=torch.long, device=x.device)
            eps = denoiser.eps(x, t_model)
            x0 = sch.f32("sqrt_recip_alphas_cumprod", k) * x - sch.f32("sqrt_recipm1_alphas_cumprod", k) * eps
            x0 = x0.clamp(-1, 1)
            if pre_correct is not None:
                x0 = pre_correct(x0, i)
            var = sch.f32("posterior_variance", k)
            a_t = sch.f32("posterior_mean_coef1", k)
            lam, gam = hq_demo_scalars(var.sqrt(), a_t, float(sigma_y), official=official_lambda)
            x0hat = range_null_correct(x0, op, y, lam)
            if constrain_x0 is not None:
                x0hat = constrain_x0(x0hat, i)
            z = draw()
            gam = torch.as_tensor(gam if k != 0 else 0.0, dtype=torch.float32).to(x.device)
            x = ddpm_posterior_step(
                x0hat, x, sch.f32("posterior_mean_coef1", k).to(x.device),
                sch.f32("posterior_mean_coef2", k).to(x.device), gam, z,
            )
            if callback is not None:
                callback(i, len(sch.transitions), x=x, x0hat=x0hat)
                continue
        if callback is not None:
            callback(i, len(sch.transitions), x=x)
    if x0hat is None:
        raise ValueError("the schedule has no denoise step")
    return x0hat, x


# ---------------------------------------------------------------------- the method (contract)
@dataclass
class DDNMHQOptions:
    """hq_demo's options: its respacing and RePaint jumps (no η: ancestral DDPM steps)."""

    travel: tuple[int, int] = option((1, 1), "time travel: length L, repeat R (1,1 = none)", metavar="L,R",
                                     minimum=1)


class HQDemoSolver:
    """``TileSolver`` with hq_demo's sampler and its chained x_T (so ``sequential``: raster order only).

    The first tile draws x_T; every later tile starts from the previous tile's last sample (in the
    previous window's coordinates, as hq_demo does). All draws come from one stream (0), like the
    official global RNG. ``callback(tile)`` may return a step callback for that tile (tracing).
    """

    sequential = True

    def __init__(self, denoiser: Denoiser, *, noise: NoiseSource, steps: int = 100,
                 travel: tuple[int, int] = (1, 1), official_lambda: bool = True,
                 callback: Callable[[int], StepCallback | None] | None = None) -> None:
        self.denoiser, self.noise = denoiser, noise
        self.schedule = HQSchedule(denoiser.betas, steps, tuple(travel))
        self.calls_per_tile = self.schedule.network_calls
        self.official_lambda = official_lambda
        self.callback = callback
        self._x: torch.Tensor | None = None
        self._tile = 0

    def __call__(self, ctx: TileContext) -> torch.Tensor:
        if ctx.shape[0] != 1:
            raise ValueError("hq_demo's chained sampler runs one tile at a time")
        x_T = draw_batch(self.noise, ctx.shape, [0], device=ctx.y.device) if self._x is None else self._x
        cb = self.callback(self._tile) if self.callback is not None else None
        if cb is not None:
            cb(-1, len(self.schedule.transitions), x=x_T)
        x0hat, self._x = ddnm_hq(
            self.denoiser, ctx.op, ctx.y, sigma_y=ctx.sigma, noise=self.noise, x_T=x_T, streams=[0],
            constrain_x0=ctx.pin, pre_correct=ctx.low, schedule=self.schedule,
            official_lambda=self.official_lambda, callback=cb,
        )
        self._tile += 1
        return x0hat


@register
class DDNMHQ(Method):
    """hq_demo's official Mask-Shift Restoration (``wyhuai/DDNM`` hq_demo): its plan, sampler and chained
    x_T, tiles in raster order. Reproduces ``refs/ddnm_msr_small``; σ_y means what it means everywhere
    (the observation boundary converts it to model units, hq_demo's own unit)."""

    name = "ddnm-hq"
    label = "DDNM (hq_demo)"
    description = "hq_demo's official Mask-Shift Restoration (reproduction of the official code)"
    groups = (ModelOptions, SamplingOptions, TilingOptions, RunOptions)
    Options = DDNMHQOptions

    def check(self, obs: Observation) -> None:
        t = self.tiling
        if t.hierarchical:
            raise UserError("hierarchical restoration has no official reference code: use method ddnm")
        if t.overlap is not None and t.tile is not None and t.overlap != t.tile // 2:
            raise UserError("ddnm-hq uses hq_demo's fixed 50% overlap (overlap = tile/2)")
        if t.tile is not None and t.tile % 2:
            raise UserError("ddnm-hq needs an even tile size (hq_demo's 50% overlap)")

    def load(self) -> Prior:
        from diffrestore.methods.prior import load_prior

        m = self.model
        return load_prior(m.model, m.config, m.models_dir, self.device, self.dtype)

    def solver(self, prior: Prior, obs: Observation) -> HQDemoSolver:
        from diffrestore.diffusion.noise import SeededNoise

        steps = int(self.group(SamplingOptions).steps or prior.defaults.get("sampling_steps", 50))
        if steps > prior.denoiser.num_timesteps:
            raise UserError(f"steps {steps} exceeds the model's {prior.denoiser.num_timesteps} timesteps")
        return HQDemoSolver(prior.denoiser, noise=SeededNoise(self.seed()), steps=steps,
                            travel=tuple(self.group(DDNMHQOptions).travel))

    def plan(self, prior: Prior, obs: Observation, tile: int) -> TilePlan:
        from diffrestore.tiling.plan import hq_demo_plan

        if tile % 2:
            raise UserError("ddnm-hq needs an even tile size (hq_demo's 50% overlap)")
        return hq_demo_plan(int(obs.x_shape[2]), int(obs.x_shape[3]), tile, tile // 2)
