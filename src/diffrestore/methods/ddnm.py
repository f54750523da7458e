"""DDNM / DDNM+ (range-null-space zero-shot restoration) on one batch of images or tiles.

Paper formulas by default (METHODS §1.3–1.5); ``compat="official"`` reproduces the official main
sampler (``wyhuai/DDNM`` ``simplified_ddnm_plus`` / ``svd_based_ddnm_plus``) draw for draw, which the
``ddnm_sampler_small`` refs check. Conventions shared by both modes:

* plan: DDNM's respacing (t = unit * (1000 // steps), 950…0 for 20 steps) with RePaint time travel
  ``travel = (L, R)``; the network gets original float timesteps; learned sigma is dropped; no clipping.
* ``eta`` is seed 000's variance-preserving blend: ``sqrt(1-ab)(eta z + sqrt(1-eta^2) eps)``.
* ``sigma`` is the noise std of y in MODEL units ([-1, 1]; the observation boundary,
  ``methods.base.Observation``, converts a user's [0, 1] σ_y once: ``sigma = 2 σ_y``, which is also the
  official "to account for [-1, 1]" doubling).
* Noise: x_T (if not given) then one draw per transition, each from ``noise`` — per batch element
  from ``streams[b]`` when given (tiles keep their numbers whatever the batching), else one ``[B, …]``
  draw. Official mode also draws at the last step (coefficient 0), paper mode skips unused draws.

Paper mode, per denoise step t -> n (ab = abar_n, sig = sqrt(1-ab), c = sqrt(ab), s_y = sigma):
  scalar rule (``svd`` off): lam = min(1, sig/(c s_y)), gam = sqrt(sig^2 - (lam c s_y)^2);
  x0hat = x0 - lam A^+(A x0 - y); x_n = c x0hat + gam (eta z + sqrt(1-eta^2) eps).
  SVD rule (``svd`` on, needs the operator's SVD view): per singular value s_i, l_i = min(1, sig s_i/(c s_y)),
  phi_i = sqrt(sig^2 - (c l_i s_y / s_i)^2) (s_i = 0: l_i = 1, phi_i = sig), applied as V diag(.) V^T to
  the correction and to (eta z + sqrt(1-eta^2) eps). We take the whole noise of x_n (fresh and
  predicted) as the budget sigma_t, so the SVD rule reduces to the scalar one for s_i = 1.
  Time travel re-noises the current sample by the forward process q(x_to | x_from) (RePaint, DDNM
  paper); ``travel_from="x0"`` uses the official rule instead (fresh sample from the last raw x0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.diffusion.samplers import ddnm_official_step, ddnm_scalars, forward_jump, renoise
from diffrestore.diffusion.schedules import ddnm_transitions
from diffrestore.errors import UserError
from diffrestore.methods.base import Method, Observation, Prior, register
from diffrestore.methods.options import (
    ModelOptions,
    RunOptions,
    SamplingOptions,
    TilingOptions,
    WarmStartOptions,
    option,
)
from diffrestore.progress import StepCallback
from diffrestore.tiling.runner import TileContext

__all__ = ["DDNM", "DDNMOptions", "DDNMSolver", "ddnm"]

Hook = Callable[[torch.Tensor, int], torch.Tensor]


def _has_svd(op: Any) -> bool:
    """``op.has_svd`` (diffrestore.operators) or, for duck-typed operators, the three methods."""
    flag = getattr(op, "has_svd", None)
    if flag is not None:
        return bool(flag)
    return all(hasattr(op, n) for n in ("singular_values", "Vt", "V"))


def _singular_values(op: Any, like: torch.Tensor) -> torch.Tensor:
    """Singular values broadcastable against ``op.Vt(like)`` (operators need the image shape for them)."""
    return op.singular_values(tuple(like.shape)).to(like)


def _svd_paper(op, x0, y, eps, z, ab, s_y, eta):
    """Paper DDNM+ SVD rule: returns (x0hat, noise part of x_n, per-component lambda)."""
    s = _singular_values(op, x0)
    sig, c = (1 - ab).sqrt(), ab.sqrt()
    pos = s > 0
    s_safe = torch.where(pos, s, torch.ones_like(s))
    l = torch.where(pos, (sig * s_safe / (c * s_y)).clamp(max=1), torch.ones_like(s))
    phi = torch.where(pos, (sig**2 - (c * l * s_y / s_safe) ** 2).clamp_min(0).sqrt(), sig.expand_as(l))
    x0hat = x0 - op.V(l * op.Vt(op.pinv(op.A(x0) - y)))
    w = (1 - eta**2) ** 0.5 * eps if z is None else eta * z + (1 - eta**2) ** 0.5 * eps
    return x0hat, op.V(phi * op.Vt(w)), l


def _svd_official(op, x0, y, eps, z, ab, s_y, eta):
    """Official ``ddnm_plus_diffusion`` Lambda / Lambda_noise (extra sqrt(1-eta^2); z, eps not rotated).

    ``op.coords`` is the official P (layout without V^T); operators without it use ``Vt`` (right
    for permutation V, e.g. inpainting).
    """
    s = _singular_values(op, x0)
    a, sig = ab.sqrt(), (1 - ab).sqrt()
    pos = s > 0
    s_safe = torch.where(pos, s, torch.ones_like(s))
    thr = a * s_y / s_safe
    small = pos & (sig < thr)
    large = pos & (sig > thr)
    one = torch.ones_like(s * sig)
    l = torch.where(small, s_safe * sig * (1 - eta**2) ** 0.5 / a / s_y, one)
    d1 = torch.where(large, (sig**2 - thr**2).clamp_min(0).sqrt(), sig * eta * one)
    d2 = torch.where(small | large, 0 * one, sig * (1 - eta**2) ** 0.5 * one)
    P = getattr(op, "coords", op.Vt)
    x0hat = x0 - op.V(l * op.Vt(op.pinv(op.A(x0) - y)))
    return x0hat, op.V(d1 * P(z) + d2 * P(eps)), l


def ddnm(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    steps: int = 100,
    eta: float = 0.85,
    sigma: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    noise: NoiseSource,
    x_T: torch.Tensor | None = None,
    constrain_x0: Hook | None = None,
    pre_correct: Hook | None = None,
    compat: Literal["paper", "official"] = "paper",
    svd: bool | Literal["auto"] = "auto",
    travel_from: Literal["x", "x0"] | None = None,
    start_t: int | None = None,
    streams: Sequence[Stream] | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Restore a batch ``[B, C, H, W]`` (model range [-1, 1]) from ``y = A x (+ noise)``; returns x0.

    ``op`` provides ``A``, ``pinv`` (and ``singular_values``/``Vt``/``V`` for the SVD rule); ``y`` is
    batch-first. Hooks get ``(x0, k)`` with k the transition index: ``pre_correct`` before the
    range-space correction (e.g. HiR's low-frequency constraint), ``constrain_x0`` after it (MSR's
    mask shift). ``svd="auto"`` uses the SVD rule when sigma > 0 and the operator has an SVD view.
    ``callback(k, n, x=, x0=, x0hat=, info=)`` is called once with ``k = -1`` (``x`` = x_T) and after every
    transition (``x0``/``x0hat`` on denoise steps; ``info``: per-step sigma/lambda/gamma);
    ``diffusion.trace.tracer`` records it under the refs' ``trace.*`` names.
    ``start_t`` (warm start, not in the DDNM paper; SDEdit/CCDF-style): the chain starts at the first
    step at or below ``start_t`` from ``A⁺y`` noised to that level, ``x_T`` being the noise; fewer network
    calls and, for a weak prior, better fidelity. hq_demo's Mask-Shift sampler is ``methods.ddnm_hq``.
    """
    if compat not in ("paper", "official"):
        raise UserError(f"unknown compat {compat!r}: use 'paper' or 'official'")
    if not 0 <= eta <= 1:
        raise UserError(f"eta must be in [0, 1], got {eta}")
    if x_T is None:
        x_T = draw_batch(noise, tuple(op.pinv(y).shape), streams, device=y.device)
    official = compat == "official"
    s_y = float(sigma)
    use_svd = (s_y > 0 and _has_svd(op)) if svd == "auto" else bool(svd)
    if use_svd and s_y > 0 and not _has_svd(op):
        raise UserError("svd=True needs an operator with an SVD view (singular_values, Vt, V)")
    from_x0 = (travel_from or ("x0" if official else "x")) == "x0"

    plan = ddnm_transitions(steps, travel[0], travel[1], denoiser.num_timesteps, start=start_t)
    x = x_T.float()
    if start_t is not None:  # warm start: A⁺y noised to the first kept level, x_T being the noise
        ab0 = denoiser.abar(plan[0].t_from, like=x)
        x = ab0.sqrt() * op.pinv(y).to(x) + (1 - ab0).sqrt() * x
    dt, dev = x.dtype, x.device

    def draw() -> torch.Tensor:
        return draw_batch(noise, tuple(x.shape), streams, dtype=dt, device=dev)

    if callback is not None:
        callback(-1, len(plan), x=x)
    x0_last: torch.Tensor | None = None
    for k, (t_from, t_to, kind) in enumerate(plan):
        ab = denoiser.abar(t_to, like=x)
        info: dict[str, Any] = {"k": k, "t_from": t_from, "t_to": t_to, "kind": kind}
        if kind == "travel":
            z = draw()
            if from_x0:
                if x0_last is None:
                    raise RuntimeError("time travel before any denoise step")
                x = renoise(x0_last, ab, z)
            else:
                x = forward_jump(x, denoiser.abar(t_from, like=x), ab, z)
        else:
            eps, x0 = denoiser.eps_x0(x, t_from)
            x0_last = x0
            x0c = pre_correct(x0, k) if pre_correct is not None else x0
            last = t_to < 0
            if use_svd and s_y > 0:
                z = draw() if (official or (eta > 0 and not last)) else None
                fn = _svd_official if official else _svd_paper
                x0hat, noise_part, l = fn(op, x0c, y, eps, z, ab, s_y, eta)
                info.update(sigma_t=float((1 - ab).sqrt().reshape(-1)[0]), lambda_min=float(l.min()))
                if constrain_x0 is not None:
                    x0hat = constrain_x0(x0hat, k)
                x = ab.sqrt() * x0hat + noise_part
            else:
                sig, lam, gam = ddnm_scalars(ab, s_y, official)
                x0hat = x0c - lam * op.pinv(op.A(x0c) - y)
                info.update(sigma_t=float(sig.reshape(-1)[0]), lambda_t=float(lam.reshape(-1)[0]),
                            gamma_t=float(gam.reshape(-1)[0]))
                if constrain_x0 is not None:
                    x0hat = constrain_x0(x0hat, k)
                if official and use_svd:  # ddnm_diffusion (SVD path, sigma_y = 0): plain DDIM blend
                    z = draw()
                    c1 = (1 - ab).sqrt() * eta
                    c2 = (1 - ab).sqrt() * ((1 - eta**2) ** 0.5)
                    x = ab.sqrt() * x0hat + c1 * z + c2 * eps
                elif official:
                    x = ddnm_official_step(x0hat, eps, ab, eta, gam, draw())
                elif last:
                    x = x0hat
                else:
                    z = draw() if eta > 0 else torch.zeros_like(x)
                    x = ab.sqrt() * x0hat + gam * (eta * z + (1 - eta**2) ** 0.5 * eps)
            if callback is not None:
                callback(k, len(plan), x=x, x0=x0, x0hat=x0hat, info=info)
                continue
        if callback is not None:
            callback(k, len(plan), x=x, info=info)
    return x



# ---------------------------------------------------------------------- the method (contract)
@dataclass
class DDNMOptions:
    """DDNM's own options (steps come from the shared ``SamplingOptions``)."""

    eta: float | None = option(None, "DDIM eta (default: the model card's, else 0.85)", minimum=0, maximum=1)
    travel: tuple[int, int] = option((1, 1), "time travel: length L, repeat R (1,1 = none)", metavar="L,R",
                                     minimum=1)


class DDNMSolver:
    """``TileSolver`` running :func:`ddnm` (paper formulas) on a batch of tiles.

    Fresh ``N(0, I)`` per tile from the tile's own stream, the MSR constraint by projection
    (``ctx.pin`` after the y correction), HiR's low-frequency correction before it.
    """

    sequential = False

    def __init__(self, denoiser: Denoiser, *, noise: NoiseSource, steps: int = 100, eta: float = 0.85,
                 travel: tuple[int, int] = (1, 1), start_t: int | None = None, **ddnm_kwargs: Any) -> None:
        self.denoiser, self.noise = denoiser, noise
        self.kwargs = dict(steps=steps, eta=eta, travel=tuple(travel), start_t=start_t, **ddnm_kwargs)
        plan = ddnm_transitions(steps, travel[0], travel[1], denoiser.num_timesteps, start=start_t)
        self.calls_per_tile = sum(1 for tr in plan if tr.kind == "denoise")

    def __call__(self, ctx: TileContext) -> torch.Tensor:
        x_T = draw_batch(self.noise, ctx.shape, ctx.streams, device=ctx.y.device)
        return ddnm(self.denoiser, ctx.op, ctx.y, sigma=ctx.sigma, noise=self.noise, x_T=x_T,
                    constrain_x0=ctx.pin, pre_correct=ctx.low, streams=ctx.streams, **self.kwargs)

    def report(self) -> dict[str, Any]:
        return {"steps": self.kwargs["steps"], "eta": self.kwargs["eta"]}


@register
class DDNM(Method):
    """DDNM / DDNM+ with Mask-Shift tiling (and HiR on request): the zero-shot headline method."""

    name = "ddnm"
    label = "DDNM"
    description = "DDNM / DDNM+ (range-null-space) with Mask-Shift and Hierarchical Restoration"
    groups = (ModelOptions, SamplingOptions, WarmStartOptions, TilingOptions, RunOptions)
    Options = DDNMOptions

    def load(self) -> Prior:
        from diffrestore.methods.prior import load_prior

        m = self.model
        return load_prior(m.model, m.config, m.models_dir, self.device, self.dtype)

    def sampling(self, prior: Prior, obs: Observation) -> dict[str, Any]:
        """Steps / eta / warm start: the user's, else the model card's, else 50 / 0.85 / none."""
        o: DDNMOptions = self.group(DDNMOptions)
        card = prior.defaults
        steps = int(self.group(SamplingOptions).steps or card.get("sampling_steps", 50))
        if steps > prior.denoiser.num_timesteps:
            raise UserError(f"steps {steps} exceeds the model's {prior.denoiser.num_timesteps} timesteps")
        eta = float(card.get("sampling_eta", 0.85) if o.eta is None else o.eta)
        start_t = self.group(WarmStartOptions).resolve(prior, obs)
        return {"steps": steps, "eta": eta, "travel": tuple(o.travel), "start_t": start_t}

    def solver(self, prior: Prior, obs: Observation) -> DDNMSolver:
        from diffrestore.diffusion.noise import SeededNoise

        return DDNMSolver(prior.denoiser, noise=SeededNoise(self.seed()), **self.sampling(prior, obs))

    def final_projection(self, obs: Observation) -> bool:
        # noise-free data: a whole-image projection onto A x = y, which MSR alone cannot give for
        # operators wider than a pixel block (bicubic SR, blur); a no-op up to rounding for the others
        return obs.sigma == 0
