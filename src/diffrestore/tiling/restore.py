"""One entry point for restoring an image of any size with tiles (what ``diffrestore restore`` calls).

Why here: the CLI and ``diffrestore.restore`` should not know which tiling strategy or which official
variant exists; they pass the user's options and get an image back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, SeededNoise
from diffrestore.diffusion.samplers import range_null_correct
from diffrestore.errors import UserError
from diffrestore.tiling.hir import ddnm_hir
from diffrestore.tiling.msr import ddnm_msr
from diffrestore.tiling.runner import PlanSummary, Progress

__all__ = ["restore_tiled"]


def restore_tiled(
    denoiser: Denoiser,
    op: Any,
    y: torch.Tensor,
    *,
    method: str = "ddnm",
    seed: int = 0,
    noise: NoiseSource | None = None,
    steps: int = 100,
    eta: float = 0.85,
    sigma_y: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    start_t: int | None = None,
    tile: int = 256,
    overlap: int | None = None,
    batch: int = 1,
    hierarchical: bool = False,
    factor: int = 2,
    compat: Literal["paper", "official"] = "paper",
    final_projection: bool = False,
    on_plan: Callable[[PlanSummary], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> torch.Tensor:
    """Restore ``y = A x (+ noise)`` for an image of any size; returns x ``[1, C, H, W]`` in [-1, 1] range.

    ``y`` is batch 1 in the operator's layout, model range (files ``2·v − 1``), on the network's device
    (the canvas lives there too). Tiles are ``tile``×``tile`` (the network's native size), ``overlap``
    defaults to ``tile/2``; ``batch`` tiles of a wave share a network call. ``hierarchical`` adds HiR
    with reduction ``factor``. ``noise`` defaults to ``SeededNoise(seed)`` (one stream per tile).
    ``sigma_y``: noise std of y in [0, 1] file units (``compat="official"``: hq_demo's own convention,
    model units). ``on_plan`` gets each phase's plan summary before any work (print
    ``summary.describe()``); ``progress`` gets a ``Progress`` after every tile batch
    (``runner.tqdm_progress()`` draws a bar with an ETA after the first wave).

    ``final_projection`` applies one whole-image range–null-space correction ``x − A⁺(A x − y)`` at the
    end. Why optional: MSR keeps finished pixels fixed, so for operators whose footprint is wider than a
    pixel block (bicubic SR, blur) the y rows that straddle a finished/unfinished boundary stay slightly
    inconsistent; the projection restores ``A x = y`` (exactly for bicubic SR's Moore–Penrose A⁺, up to
    the thresholded inverse for blur, where it can also amplify that residual). For block-local operators
    (average-pooling SR, inpainting, colourisation, denoising, CS) the tiles are already exactly consistent
    and the projection changes nothing beyond float rounding.
    """
    if method != "ddnm":
        raise UserError(f"tiled restoration supports method 'ddnm', got {method!r}")
    if batch < 1:
        raise UserError(f"--batch must be >= 1, got {batch}")
    noise = SeededNoise(seed) if noise is None else noise
    common: dict[str, Any] = dict(noise=noise, steps=steps, eta=eta, sigma_y=sigma_y, travel=tuple(travel),
                                  start_t=start_t,
                                  tile=tile, overlap=overlap, batch=batch, on_plan=on_plan, progress=progress)
    with torch.no_grad():
        if hierarchical:
            if compat != "paper":
                raise UserError("--hierarchical has no official reference code: use --compat paper")
            out = ddnm_hir(denoiser, op, y, factor=factor, **common)
        else:
            out = ddnm_msr(denoiser, op, y, compat=compat, **common)
        if final_projection:
            out = range_null_correct(out, op, y.to(out))
    return out
