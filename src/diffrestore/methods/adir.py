"""ADIR — Adaptive Diffusion for Image Reconstruction (Abu-Hussein, Tirer, Giryes; METHODS §5).

Two parts, both usable alone:

* ``adir_sample``: DDPM ancestral sampling (guided-diffusion respacing to ``steps``) guided like classifier
  guidance, ``x_{t-1} ~ N(mu_theta + s Sigma_t g_t, Sigma_t)``, with ``g_t`` ≈ ∇_{x_t} log p(y | x_t):
  - ``guidance="adir"`` — ADIR's noisy-measurement surrogate. Diffusing y with the predicted noise,
    ``y_t = sqrt(ab) y + sqrt(1-ab) A eps``, gives ``|y - A x0hat|^2 = |y_t - A x_t|^2 / ab`` exactly;
    differentiating with y_t held fixed yields ``g_t = A^T (y - A x0hat) / (sigma^2 sqrt(ab_t))``. One network
    call per step and NO network derivative; ``A^T`` comes from autograd through ``op.A`` alone, so any
    differentiable linear operator works without an explicit adjoint.
  - ``guidance="dps"`` — DPS (Chung et al.): the gradient goes through the network (a VJP per step) and, as
    in DPS's code, the square is dropped: ``x_{t-1} <- x_{t-1} - s ∇_{x_t} |y - A x0hat(x_t)|``, i.e. the
    step ``s / |y - A x0hat|`` on the squared residual. The step is NOT weighted by Sigma_t (DPS Alg. 1),
    so ``scale`` is DPS's zeta (≈ 0.3–1) there.
  - ``guidance="none"`` (or ``scale=0``): plain DDPM ancestral sampling.
  Optional ADM classifier guidance adds ``classifier_scale ∇_{x_t} log p(c | x_t)`` the same way
  (``mean += Sigma_t * grad``, guided-diffusion's ``condition_mean``).
* ``adapt``: test-time fine-tuning of the denoiser with its own diffusion loss on a source set S (IA:
  ``self_crops`` of the degraded image; ADIR: K nearest neighbours from a retrieval index, ``knn_source``),
  Adam + EMA of the trained weights, one shared t per batch (paper). Always on a COPY of the network
  (``Denoiser.copy_for_adaptation``): the cached registry model is never modified. ``rank=None`` tunes
  all of θ as the paper does; a rank gives LoRA (a diffrestore option, not in the paper).

Choices the paper leaves open (METHODS §5 ⚠), documented here: eq. (17)'s constant is unknown, so the
guidance is ``scale * A^T r / (sigma_y^2 sqrt(ab))`` with ``sigma_y`` in MODEL units ([-1, 1], i.e. twice the
file-unit std) and ``sigma_y=None``/0 meaning "unknown: scale absorbs 1/sigma^2"; the paper's scales (10 for
SR x4 / deblurring, 20 for SR x8) were tuned for its setup. Fixed (non-learned) variances default to the
posterior variance (``fixed_small``), which behaves better than beta_t at the few steps we run on CPU.

Hook: ``constrain_x0(x0hat, step) -> x0hat`` (MSR pins finished pixels) is applied to x̂0 every step;
the posterior mean and the guidance residual are both computed from the constrained x̂0, so the chain
stays consistent with it. Units: everything in the model range [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.diffusion.schedules import respace_betas, respaced_timesteps
from diffrestore.diffusion.variance import p_mean_variance, posterior_arrays
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
from diffrestore.progress import Ticker

__all__ = [
    "ADIR",
    "ADIROptions",
    "ADIRSolver",
    "adapt",
    "adir_guidance",
    "adir_sample",
    "knn_source",
    "self_crops",
]

Hook = Callable[[torch.Tensor, int], torch.Tensor]
Guidance = Literal["adir", "dps", "none"]


# ------------------------------------------------------------------------------------------------ sampling


def _gather(arr: np.ndarray, idx: int, like: torch.Tensor) -> torch.Tensor:
    """``arr[idx]`` float64 -> float32 scalar tensor (guided-diffusion's _extract_into_tensor arithmetic)."""
    return torch.tensor(float(arr[idx]), dtype=torch.float64).float().to(like.device)


def _residual_sq(op: Any, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``|y - A x0|^2``."""
    return (y - op.A(x0)).pow(2).flatten(1).sum(dim=1)


def adir_guidance(op: Any, x0hat: torch.Tensor, y: torch.Tensor, abar_t: torch.Tensor | float,
                  sigma_y: float | None) -> torch.Tensor:
    """ADIR's surrogate ``g_t = A^T (y - A x0hat) / (sigma^2 sqrt(abar_t))`` with A^T from autograd through
    ``op.A`` only (x0hat is treated as a constant: no network derivative). ``sigma_y`` None/0: 1/sigma^2 is
    left to the guidance scale. ``abar_t``: scalar or broadcastable ``[B, 1, 1, 1]``."""
    with torch.enable_grad():
        x = x0hat.detach().requires_grad_(True)
        half = 0.5 * (y.detach() - op.A(x)).pow(2).sum()
        (grad,) = torch.autograd.grad(half, x)  # = -A^T (y - A x0hat)
    inv_var = 1.0 / float(sigma_y) ** 2 if sigma_y else 1.0
    ab = abar_t if isinstance(abar_t, torch.Tensor) else torch.tensor(float(abar_t))
    return -grad * inv_var / ab.to(grad).sqrt()


def adir_sample(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    noise: NoiseSource,
    streams: Sequence[Stream] | None = None,
    steps: int = 100,
    sigma_y: float | None = None,
    guidance: Guidance = "adir",
    scale: float = 10.0,
    classifier: nn.Module | None = None,
    class_label: int | torch.Tensor | None = None,
    classifier_scale: float = 1.0,
    constrain_x0: Hook | None = None,
    callback: Callable[..., None] | None = None,
    clip_denoised: bool = True,
    variance: Literal["auto", "learned_range", "fixed_small", "fixed_large"] = "auto",
    x_T: torch.Tensor | None = None,
    start_t: int | None = None,
) -> torch.Tensor:
    """Restore a batch ``[B, C, H, W]`` (model range [-1, 1]) from ``y = A x + e``; returns x0.

    ``steps`` respaces the DDPM chain (guided-diffusion's rule: kept t = round(k (T-1)/(steps-1)));
    the network is called with ORIGINAL timesteps. Noise: x_T (unless given) and one draw per step
    except the last, per batch element from ``streams[b]`` when given. ``start_t`` (not in the paper,
    SDEdit-style warm start as in our DDNM): begin at the last kept t <= start_t from A⁺y noised there,
    x_T being the noise. ``callback(step, total, t=, x0=, x=, residual=)`` once per step (residual =
    per-sample |y - A x0hat|). ``class_label`` is only for ``classifier`` (our priors are unconditional).
    """
    if guidance not in ("adir", "dps", "none"):
        raise UserError(f"unknown guidance {guidance!r}: use 'adir', 'dps' or 'none'")
    if steps < 1 or steps > denoiser.num_timesteps:
        raise UserError(f"steps must be in 1..{denoiser.num_timesteps}, got {steps}")
    if classifier is not None and class_label is None:
        raise UserError("classifier guidance needs class_label")
    kept = respaced_timesteps(denoiser.num_timesteps, steps)
    rbetas = respace_betas(denoiser.betas, kept)
    arrs = posterior_arrays(rbetas)
    if variance == "auto":
        variance = "learned_range" if denoiser.learned_sigma else "fixed_small"
    var_type: str = variance
    idxs = list(range(len(kept)))[::-1]
    if start_t is not None:
        idxs = [i for i in idxs if kept[i] <= start_t] or [0]

    guided = guidance != "none" and scale != 0
    y = y.float()
    shape = tuple(op.pinv(y).shape)
    if x_T is None:
        x_T = draw_batch(noise, shape, streams, device=y.device)
    x = x_T.float().to(y.device)
    if start_t is not None:
        ab0 = float(np.cumprod(1 - rbetas)[idxs[0]])
        x = math.sqrt(ab0) * op.pinv(y).float() + math.sqrt(1 - ab0) * x
    labels = None
    if classifier is not None:
        labels = torch.as_tensor(class_label, device=y.device).reshape(-1).long()
        labels = labels.expand(shape[0]) if labels.numel() == 1 else labels

    total = len(idxs)
    for step, i in enumerate(idxs):
        t_orig = torch.full((shape[0],), kept[i], device=y.device, dtype=torch.long)
        need_net_grad = guided and guidance == "dps"
        x_in = x.detach().requires_grad_(need_net_grad)
        with torch.set_grad_enabled(need_net_grad):
            out = denoiser.model_output(x_in, t_orig)
            if var_type != "learned_range":
                out = out[:, : shape[1]]
            pmv = p_mean_variance(out, x_in, torch.full_like(t_orig, i), rbetas, clip_denoised, var_type)
            x0 = pmv["pred_xstart"]
            if constrain_x0 is not None:
                x0 = constrain_x0(x0, step)
            c1, c2 = _gather(arrs["posterior_mean_coef1"], i, x), _gather(arrs["posterior_mean_coef2"], i, x)
            mean = c1 * x0 + c2 * x_in
            res = _residual_sq(op, x0, y)
        var = pmv["variance"].detach()
        mean = mean.detach()
        if guided and guidance == "adir":
            ab_t = denoiser.abar(kept[i], like=x)
            mean = mean + scale * var * adir_guidance(op, x0.detach(), y, ab_t, sigma_y)
        if classifier is not None:
            with torch.enable_grad():
                xc = x.detach().requires_grad_(True)
                logits = classifier(xc, t_orig.float())
                logp = F.log_softmax(logits.float(), dim=-1)[torch.arange(shape[0], device=x.device), labels]
                (cgrad,) = torch.autograd.grad(logp.sum(), xc)
            mean = mean + classifier_scale * var * cgrad
        x_new = mean
        if i > 0:
            z = draw_batch(noise, shape, streams, dtype=x.dtype, device=x.device)
            x_new = mean + var.sqrt() * z
        if guided and guidance == "dps":
            norm = res.clamp_min(1e-20).sqrt()  # DPS: gradient of |r|, not |r|^2
            (g,) = torch.autograd.grad(norm.sum(), x_in)
            x_new = x_new - scale * g
        x = x_new.detach()
        if callback is not None:
            callback(step, total, t=kept[i], x0=x0.detach(), x=x, residual=res.detach().sqrt())
    return x


# ---------------------------------------------------------------------------------------------- adaptation


def _as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Images as ``[C, H, W]`` float tensors (a ``[N, C, H, W]`` batch or a list of ``[1|·, C, H, W]``)."""
    if isinstance(images, torch.Tensor):
        images = list(images) if images.dim() == 4 else [images]
    out = []
    for im in images:
        im = im[0] if im.dim() == 4 else im
        if im.dim() != 3:
            raise UserError(f"adaptation images must be [C, H, W] or [1, C, H, W], got {tuple(im.shape)}")
        out.append(im.float())
    if not out:
        raise UserError("adaptation needs at least one image")
    return out


def _fit(im: torch.Tensor, crop: int) -> torch.Tensor:
    """Upscale (bicubic) an image whose short side is below ``crop`` so a crop fits."""
    h, w = im.shape[-2:]
    if min(h, w) >= crop:
        return im
    s = crop / min(h, w)
    size = (max(crop, round(h * s)), max(crop, round(w * s)))
    return F.interpolate(im[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def _random_crops(images: list[torch.Tensor], n: int, crop: int, gen: torch.Generator,
                  flip: bool = True) -> torch.Tensor:
    """``n`` random crops ``[n, C, crop, crop]`` (random image, position and horizontal flip)."""
    which = torch.randint(0, len(images), (n,), generator=gen).tolist()
    u = torch.rand(n, 3, generator=gen)
    out = []
    for k, j in enumerate(which):
        im = images[j]
        h, w = im.shape[-2:]
        top, left = int(u[k, 0] * (h - crop + 1)), int(u[k, 1] * (w - crop + 1))
        c = im[:, top:top + crop, left:left + crop]
        if flip and u[k, 2] < 0.5:
            c = c.flip(-1)
        out.append(c)
    return torch.stack(out)


def self_crops(
    y_image: torch.Tensor,
    n: int = 64,
    crop: int = 64,
    *,
    scales: Sequence[float] = (1.0, 0.8, 0.6),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IA source set: ``n`` random crops ``[n, C, crop, crop]`` of the degraded image (model range) and of
    downscaled copies of it — the cross-scale recurrence the IA idea relies on (patches of a smaller
    copy look like sharper versions of the image's own patches). An image smaller than ``crop`` is
    upscaled first (e.g. a small LR input)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    im = _as_list(y_image)[0]
    pyramid = []
    for s in scales:
        h, w = im.shape[-2:]
        if s != 1.0 and min(h, w) * s >= crop:
            size = (round(h * s), round(w * s))
            pyramid.append(F.interpolate(im[None], size=size, mode="bilinear", antialias=True,
                                         align_corners=False)[0])
        elif s == 1.0:
            pyramid.append(_fit(im, crop))
    return _random_crops(pyramid, n, crop, gen)


def knn_source(index: Any, image01: torch.Tensor, k: int = 20, *, embed: Any = None) -> list[torch.Tensor]:
    """ADIR source set: the ``k`` nearest images of ``image01`` ([1, 3, H, W] in [0, 1], e.g. A⁺y as a
    picture) in a retrieval index (``diffrestore.io.index``), read and returned in model range [-1, 1]."""
    from diffrestore.io.images import read_image
    from diffrestore.io.index import load_index, query

    idx = load_index(index) if isinstance(index, str | Path) else index
    hits = query(idx, image01, k=k, embed=embed)
    return [read_image(p)[0] * 2 - 1 for p, _ in hits]


def adapt(
    denoiser: Denoiser,
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    steps: int = 400,
    batch: int = 6,
    lr: float = 1e-4,
    ema: float = 0.95,
    rank: int | None = 4,
    alpha: float | None = None,
    targets: Sequence[str] | None = None,
    crop: int | None = None,
    noise: NoiseSource | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    weight_decay: float = 0.0,
    callback: Callable[..., None] | None = None,
) -> tuple[Denoiser, dict[str, torch.Tensor]]:
    """Fine-tune a COPY of ``denoiser`` on random crops of ``images`` (model range); returns
    ``(adapted Denoiser, adapter state)``.

    Each step: ``batch`` random crops (size ``crop``, default the network's ``image_size``) with
    random horizontal flips, ONE shared t ~ U{0..T-1} (paper), eps, and ``Denoiser.training_loss``;
    Adam (``lr``), then an EMA (``ema`` decay; 0 = last weights) of the trained weights, which the
    returned Denoiser carries. ``rank=None``: all weights train (the paper); otherwise LoRA of that rank
    on ``targets`` (globs, default every Linear/Conv) — the state is then ``lora_state_dict`` (save it
    with ``nets.lora.save_lora``), else the full EMA state dict. Crops, flips and t come from
    ``generator`` (default seeded by ``seed``); eps from ``noise`` (stream ``(-1, step)``, apart from
    any tile stream) when given, else from the generator. ``callback(step, total, loss=)`` per step.
    """
    from diffrestore.nets.lora import DEFAULT_TARGETS, inject_lora, lora_parameters, lora_state_dict

    if steps < 0 or batch < 1:
        raise UserError("adaptation needs steps >= 0 and batch >= 1")
    if not 0 <= ema < 1:
        raise UserError(f"ema must be in [0, 1), got {ema}")
    imgs = _as_list(images)
    crop = int(crop or getattr(denoiser.net, "image_size", 64))
    imgs = [_fit(im, crop) for im in imgs]
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)

    den = denoiser.copy_for_adaptation()
    net = den.net
    if rank is None:
        net.requires_grad_(True)
        params = [p for p in net.parameters() if p.is_floating_point()]
    else:
        inject_lora(net, rank, alpha, targets or DEFAULT_TARGETS, generator=gen)
        params = lora_parameters(net)
        for p in params:
            p.requires_grad_(True)
    if any(p.dtype != torch.float32 for p in params):
        raise UserError("adaptation needs a float32 network (load the model with dtype float32)")
    device = params[0].device
    shadow = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    was_training = net.training
    net.train()
    for step in range(steps):
        x0 = _random_crops(imgs, batch, crop, gen).to(device)
        t = int(torch.randint(0, den.num_timesteps, (1,), generator=gen))
        if noise is not None:
            eps = noise.draw(tuple(x0.shape), (-1, step), device=device)
        else:
            eps = torch.randn(x0.shape, generator=gen).to(device)
        loss = den.training_loss(x0, t, noise=eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(shadow, [p.detach() for p in params], 1.0 - ema)
        if callback is not None:
            callback(step, steps, loss=float(loss.detach()), t=t)
    with torch.no_grad():
        for p, s in zip(params, shadow):
            p.copy_(s)
    net.train(was_training)
    net.requires_grad_(False)
    if rank is None:
        state = {k: v.detach().float().cpu().clone() for k, v in net.state_dict().items()}
    else:
        state = lora_state_dict(net)
    return den, state


# ---------------------------------------------------------------------- the method (contract)
@dataclass
class ADIROptions:
    """ADIR's own options (METHODS §5)"""

    guidance: str = option("adir", "likelihood surrogate: adir (noisy measurement, no network gradient), dps "
                           "(gradient through the network) or none", choices=("adir", "dps", "none"))
    guidance_scale: float = option(10.0, "guidance scale s (ADIR: 10 for SR x4 / deblurring, 20 for x8; "
                                   "DPS: zeta)", minimum=0)
    project: bool = option(True, "noise-free y: finish with one projection onto A x = y (not in the paper)")
    adapt: str = option("none", "test-time adaptation of the prior: none, self (crops of the degraded "
                        "image) or knn (nearest neighbours from --neighbours)",
                        choices=("none", "self", "knn"))
    neighbours: str | None = option(None, "knn: a folder of photos or an index built by `diffrestore index "
                                    "build`", metavar="DIR|INDEX")
    k: int = option(20, "knn: number of neighbours", minimum=1)
    adapt_steps: int = option(100, "adaptation steps (paper: 400; IA: 100)", minimum=0)
    adapt_batch: int = option(6, "crops per adaptation step (paper: 6)", minimum=1)
    adapt_lr: float = option(1e-4, "adaptation learning rate", minimum=0)
    adapt_ema: float = option(0.95, "EMA decay of the adapted weights (0 = last weights)", minimum=0,
                              maximum=0.999)
    rank: int = option(4, "LoRA rank of the adapters (0 = fine-tune every weight, as the paper)", minimum=0)
    lora_alpha: float | None = option(None, "LoRA alpha (default: the rank)", minimum=0)
    lora_targets: str | None = option(None, "comma-separated name globs of the adapted layers (default all)")
    adapter: str | None = option(None, "load saved adapters instead of adapting", metavar="FILE")
    save_adapter: str | None = option(None, "save the adapters of this run", metavar="FILE")


class ADIRSolver:
    """``TileSolver``: guided ancestral sampling per tile, the MSR constraint by projection on x̂0."""

    sequential = False

    def __init__(self, denoiser: Denoiser, opts: ADIROptions, *, noise: NoiseSource, steps: int,
                 start_t: int | None) -> None:
        self.denoiser, self.o, self.noise, self.steps, self.start_t = denoiser, opts, noise, steps, start_t
        kept = respaced_timesteps(denoiser.num_timesteps, steps)
        self.calls_per_tile = len([t for t in kept if start_t is None or t <= start_t]) or 1

    def __call__(self, ctx: Any) -> torch.Tensor:
        o = self.o

        def constrain(x0: torch.Tensor, step: int) -> torch.Tensor:
            return ctx.pin(ctx.low_correct(x0, step), step)

        return adir_sample(self.denoiser, ctx.op, ctx.y, noise=self.noise, streams=ctx.streams,
                           steps=self.steps, sigma_y=ctx.sigma or None, guidance=o.guidance,  # type: ignore[arg-type]
                           scale=o.guidance_scale, constrain_x0=constrain, start_t=self.start_t).detach()

    def report(self) -> dict[str, Any]:
        return {"steps": self.steps, "guidance": self.o.guidance, "adapt": self.o.adapt}


@register
class ADIR(Method):
    """ADIR: likelihood-guided sampling, optionally with the prior adapted (LoRA on a copy) to the image
    itself or to its nearest neighbours; one adapter per image, shared by all tiles."""

    name = "adir"
    label = "ADIR"
    description = "ADIR: guided diffusion with test-time adaptation (self / nearest neighbours)"
    groups = (ModelOptions, SamplingOptions, WarmStartOptions, TilingOptions, RunOptions)
    Options = ADIROptions
    needs_grad = True

    def validate(self) -> None:
        o = self.group(ADIROptions)
        if o.adapt == "knn" and not o.neighbours:
            raise UserError("--adapt knn needs --neighbours DIR (a folder of photos) or an index file")
        if o.adapt != "none" and o.adapter:
            raise UserError("give either --adapter FILE (reuse) or --adapt self|knn (new adapters), not both")

    def load(self) -> Prior:
        from diffrestore.methods.prior import load_prior

        m = self.model
        return load_prior(m.model, m.config, m.models_dir, self.device, self.dtype)

    def prepare(self, prior: Prior, obs: Observation, progress: Any = None) -> Prior:
        """Adapt a COPY of the prior (the cached one stays untouched for the next image)."""
        o = self.group(ADIROptions)
        den = prior.denoiser
        if o.adapter:
            from diffrestore.nets.lora import load_lora_file

            den = den.copy_for_adaptation()
            load_lora_file(den.net, o.adapter, base_name=getattr(prior.spec, "name", None))
            return dataclasses.replace(prior, denoiser=den)
        if o.adapt == "none":
            return prior
        with torch.no_grad():
            guess01 = Observation.to_file_units(obs.op.pinv(obs.y)).clamp(0, 1)
        if o.adapt == "self":
            y_img = obs.y01 if obs.y01.dim() == 4 and obs.y01.shape[1] in (1, 3) else guess01
            images: Any = self_crops(y_img.expand(-1, 3, -1, -1) * 2 - 1, n=64, crop=prior.patch,
                                     generator=torch.Generator().manual_seed(self.seed()))
        else:
            images = knn_source(_neighbour_index(o.neighbours or "", progress), guess01.cpu(), k=o.k)
        ticker = Ticker(progress, f"adapt ({o.adapt})", o.adapt_steps, unit="step")
        targets = [t.strip() for t in o.lora_targets.split(",")] if o.lora_targets else None
        with torch.enable_grad():
            den, _ = adapt(den, images, steps=o.adapt_steps, batch=o.adapt_batch, lr=o.adapt_lr,
                           ema=o.adapt_ema, rank=o.rank or None, alpha=o.lora_alpha, targets=targets,
                           crop=prior.patch, seed=self.seed(),
                           callback=lambda step, total, **kw: ticker.tick(1, loss=float(kw.get("loss", 0))))
        if o.save_adapter:
            if not o.rank:
                raise UserError("--save-adapter needs LoRA adapters (--rank > 0)")
            from diffrestore.nets.lora import save_lora

            save_lora(den.net, o.save_adapter, base_name=getattr(prior.spec, "name", None), targets=targets)
        return dataclasses.replace(prior, denoiser=den)

    def solver(self, prior: Prior, obs: Observation) -> ADIRSolver:
        from diffrestore.diffusion.noise import SeededNoise

        o = self.group(ADIROptions)
        steps = int(self.group(SamplingOptions).steps or prior.defaults.get("sampling_steps", 50))
        if steps > prior.denoiser.num_timesteps:
            raise UserError(f"steps {steps} exceeds the model's {prior.denoiser.num_timesteps} timesteps")
        start_t = self.group(WarmStartOptions).resolve(prior, obs)
        return ADIRSolver(prior.denoiser, o, noise=SeededNoise(self.seed()), steps=steps, start_t=start_t)

    def final_projection(self, obs: Observation) -> bool:
        return obs.sigma == 0 and self.group(ADIROptions).project


def _neighbour_index(path: str, progress: Any = None) -> Any:
    """An index file as given, or a folder indexed once into the user cache (incremental afterwards)."""
    import hashlib

    from diffrestore.io.index import build_index, load_index

    p = Path(path).expanduser()
    if p.is_file():
        return load_index(p)
    if not p.is_dir():
        raise UserError(f"--neighbours {path}: no such folder or index file")
    from platformdirs import user_cache_dir

    key = hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:16]
    out = Path(user_cache_dir("diffrestore")) / "index" / f"{key}.index"
    out.parent.mkdir(parents=True, exist_ok=True)
    return build_index(p, out)
