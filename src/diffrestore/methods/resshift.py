"""The ResShift method (seed 001, METHODS §6): 4-step SR by shifting the residual, any size, seamless.

Why tiles are blended here, not pinned: ResShift is not a projection method — each chop is an independent
short chain from its own LQ crop — so the MSR "first finished wins" rule has nothing to pin. The tiling
layer's ``blend`` rule averages overlapping HR tiles with raised-cosine weights; the official code's plain
averaging of overlapping chops switches weight abruptly at chop edges and shows seams wherever two chops
disagree (``chop="official"`` keeps it, for reproducing the official results). Latent models encode and
decode per tile (the VQ decoder's mid attention is what makes the official 256→1024 run need > 34 GB), so
memory is bounded by the tile batch.

The sampler pieces (schedule, reverse chain, official chopping) are ``methods.resshift_sampler`` and
``diffusion.resshift_schedule``; this module is the contract glue: options, model loading, the tile solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffrestore.diffusion.noise import NoiseSource, SeededNoise
from diffrestore.diffusion.resshift_schedule import schedule_from_spec
from diffrestore.errors import UserError
from diffrestore.methods.base import Method, MethodRun, Observation, Prior, register
from diffrestore.methods.options import ModelOptions, RunOptions, TilingOptions, option
from diffrestore.methods.resshift_sampler import resshift_chopped, resshift_sample
from diffrestore.progress import Ticker

__all__ = ["DEFAULT_MODEL", "ResShift", "ResShiftOptions", "ResShiftSolver"]

#: The model shipped in the package (pixel space, ×4, bicubic degradation, 4 steps).
DEFAULT_MODEL = "resshift-x4-small"


@dataclass
class ResShiftOptions:
    """ResShift's own options (METHODS §6)"""

    chop: str = option("blend", "large images: blend (tiling layer, raised-cosine weights; seamless) or "
                       "official (the official code's plain averaging of overlapping chops)",
                       choices=("blend", "official"))


class ResShiftSolver:
    """``TileSolver``: the ResShift chain on a batch of HR tiles, each from its own LQ crop.

    The LQ crop is the tile's box divided by the scale, read with clamped indices where the canvas runs past
    the image (replicate padding), so every tile of a batch has the same size. ``ctx.op`` / ``ctx.y`` are not
    used: ResShift conditions on the LQ image itself, not on an operator.
    """

    sequential = False

    def __init__(self, prior: Prior, lq: torch.Tensor, *, noise: NoiseSource, progress: Any = None) -> None:
        self.net, self.vq = prior.parts["net"], prior.parts.get("vq")
        self.schedule, self.scale = prior.parts["schedule"], int(prior.parts["scale"])
        self.lq, self.noise, self.progress = lq, noise, progress
        self.calls_per_tile = self.schedule.steps

    def _crop(self, box: Any, size: int) -> torch.Tensor:
        s, (_, _, h, w) = self.scale, self.lq.shape
        rows = torch.arange(box[0] // s, box[0] // s + size, device=self.lq.device).clamp(0, h - 1)
        cols = torch.arange(box[1] // s, box[1] // s + size, device=self.lq.device).clamp(0, w - 1)
        return self.lq[:, :, rows][:, :, :, cols]

    def __call__(self, ctx: Any) -> torch.Tensor:
        P = ctx.shape[-1]
        if P % self.scale:
            raise UserError(f"tile {P} must be a multiple of the SR scale {self.scale}")
        lq = torch.cat([self._crop(b, P // self.scale) for b in ctx.boxes])
        return resshift_sample(self.net, lq, self.schedule, noise=self.noise, streams=ctx.streams, vq=self.vq,
                               scale=self.scale)


@register
class ResShift(Method):
    """ResShift SR: the shipped small pixel-space ×4 model by default, or the official checkpoints
    (``resshift-realsr-v3|-v2|-v1``, ``resshift-bicsr``, with ``vq-f4``)."""

    name = "resshift"
    label = "ResShift"
    description = "ResShift: 4-step SR by residual shifting (shipped x4 model or the official checkpoints)"
    groups = (ModelOptions, TilingOptions, RunOptions)
    Options = ResShiftOptions
    rule = "blend"
    overlap_fraction = 0.25
    default_model = DEFAULT_MODEL

    def load(self) -> Prior:
        from diffrestore.io.registry import load_model

        m = self.model
        net, spec = load_model(m.model or DEFAULT_MODEL, m.config, m.models_dir, device=self.device,
                               dtype=self.dtype)
        if spec.family != "resshift_swinunet":
            raise UserError(f"model {spec.name!r} ({spec.family}) is not a ResShift network")
        diffusion = dict(spec.diffusion or {})
        schedule = schedule_from_spec(diffusion)
        scale = int(diffusion.get("sf", getattr(spec, "scale", None) or 4))
        parts: dict[str, Any] = {"net": net, "schedule": schedule, "scale": scale}
        size = int(spec.image_size or (spec.config or {}).get("image_size") or 64)
        if diffusion.get("latent", False):
            vq_name = (getattr(spec, "requires", None) or ["vq-f4"])[0]
            vq, _ = load_model(vq_name, None, m.models_dir, device=self.device, dtype=self.dtype)
            parts["vq"] = vq
            patch = size * scale  # the network's latent size is the LQ size; HR tile = LQ × scale
        else:
            patch = size  # pixel space: the network runs at HR resolution
        return Prior(spec=spec, patch=patch, parts=parts, multiple=scale)

    def check(self, obs: Observation) -> None:
        if getattr(obs.op, "task", None) != "sr":
            raise UserError(f"ResShift restores super-resolution only (task sr), not {obs.op.task!r}")
        if self.tiling.hierarchical:
            raise UserError("ResShift has no hierarchical mode (its chains are independent per tile)")
        if obs.sigma > 0:
            raise UserError("ResShift models a fixed degradation; --sigma-y does not apply (use its realsr "
                            "models for noisy photos)")

    def _lq(self, prior: Prior, obs: Observation) -> torch.Tensor:
        scale = int(prior.parts["scale"])
        if getattr(obs.op, "scale", scale) != scale:
            raise UserError(f"model {prior.spec.name!r} is x{scale}, the task asks for x{obs.op.scale}")
        lq = obs.y
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise UserError(f"ResShift needs an RGB low-resolution image, got shape {tuple(lq.shape)}")
        return lq

    def solver(self, prior: Prior, obs: Observation) -> ResShiftSolver:
        return ResShiftSolver(prior, self._lq(prior, obs), noise=SeededNoise(self.seed()),
                              progress=self._progress)

    def run(self, obs: Observation, *, prior: Prior | None = None, on_plan: Any = None,
            progress: Any = None) -> MethodRun:
        if self.group(ResShiftOptions).chop != "official":
            return super().run(obs, prior=prior, on_plan=on_plan, progress=progress)
        self.check(obs)
        prior = self.load() if prior is None else prior
        lq = self._lq(prior, obs)
        sched = prior.parts["schedule"]
        chop = (self.tiling.tile or prior.patch) // int(prior.parts["scale"])
        stride = chop - (self.tiling.overlap // int(prior.parts["scale"])) if self.tiling.overlap else None
        ticker = Ticker(progress, "resshift (official chopping)", 1, unit="chain")
        with torch.no_grad():
            x = resshift_chopped(prior.parts["net"], lq, sched, noise=SeededNoise(self.seed()),
                                 vq=prior.parts.get("vq"), chop_size=chop, chop_stride=stride,
                                 scale=int(prior.parts["scale"]), batch=int(self.tiling.batch),
                                 callback=lambda step, total, **kw: None)
        ticker.tick(1)
        return MethodRun(x, [], {"model": prior.spec.name, "chop": "official", "patch": chop}, obs.op)
