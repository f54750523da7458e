"""Test helpers: DDNM over the tiling layer with explicit pieces (solver + msr / hir), as the method does.

``sigma_y`` here is in [0, 1] file units for the paper sampler (model units = 2·σ_y, the observation
boundary's rule) and in model units for hq_demo (its own convention, as its vectors record it).
"""

from __future__ import annotations

from typing import Any

import torch

from diffrestore.diffusion.trace import tracer
from diffrestore.methods.ddnm import DDNMSolver
from diffrestore.methods.ddnm_hq import HQDemoSolver
from diffrestore.tiling.hir import hir
from diffrestore.tiling.msr import image_shape, msr
from diffrestore.tiling.plan import hq_demo_plan


def ddnm_msr(denoiser: Any, op: Any, y: torch.Tensor, *, noise: Any, steps: int = 100, eta: float = 0.85,
             sigma_y: float = 0.0, travel: tuple[int, int] = (1, 1), tile: int = 256,
             overlap: int | None = None, batch: int = 1, order: str | None = None, on_plan: Any = None,
             progress: Any = None, compat: str = "paper", trace: dict | None = None,
             start_t: int | None = None) -> torch.Tensor:
    if compat == "official":
        cb = (lambda i: tracer(trace, prefix=f"{i:02d}.")) if trace is not None else None
        solver = HQDemoSolver(denoiser, noise=noise, steps=steps, travel=travel, callback=cb)
        x_shape = image_shape(op, y)
        plan = hq_demo_plan(int(x_shape[2]), int(x_shape[3]), tile, tile // 2)
        out = msr(solver, op, y, sigma=sigma_y, x_shape=x_shape, plan=plan, order="raster", on_plan=on_plan,
                  progress=progress, phase="msr (official)")
        if trace is not None:
            trace.pop("steps", None)
        return out
    solver = DDNMSolver(denoiser, noise=noise, steps=steps, eta=eta, travel=travel, start_t=start_t)
    return msr(solver, op, y, sigma=2 * sigma_y, tile=tile, overlap=overlap, batch=batch, order=order,
               on_plan=on_plan, progress=progress, phase="msr")


def ddnm_hir(denoiser: Any, op: Any, y: torch.Tensor, *, noise: Any, factor: int = 2, steps: int = 100,
             eta: float = 0.85, sigma_y: float = 0.0, tile: int = 256, overlap: int | None = None,
             batch: int = 1, trace: dict | None = None, on_plan: Any = None) -> torch.Tensor:
    solver = DDNMSolver(denoiser, noise=noise, steps=steps, eta=eta)

    def on_low(x_low: torch.Tensor, lowres: Any) -> None:
        if trace is not None:
            trace.update(x_low=x_low, lowres=lowres)

    return hir(solver, op, y, sigma=2 * sigma_y, factor=factor, tile=tile, overlap=overlap, batch=batch,
               on_plan=on_plan, on_low=on_low)
