"""``diffrestore.restore``: one call from an observation to a restored image, any size.

The CLI ``restore`` command is a thin shell around this function, so Python users, the evaluation harness
and the CLI run exactly the same pipeline: operator from the task options → model from the registry →
DDNM solver → Mask-Shift tiling (optionally Hierarchical) → image in [0, 1] plus a report of what ran.

Units: files and ``y`` are in [0, 1]; networks work in [-1, 1]. For a linear operator
``A(2x − 1) = 2A(x) − A(1)``, so the model-range observation is ``2y − A(1)`` (``A(1)`` is 1 for SR and
colourisation, the mask for inpainting, …); ``sigma_y`` is given in [0, 1] units, as users measure noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError

METHODS = ("ddnm",)


@dataclass
class RestoreResult:
    """The restored image and what it took.

    ``image``: ``[1, C, H, W]`` in [0, 1] (clamped); ``x``: the unclamped float result in [0, 1] units
    (what ``--float`` writes, for exact consistency checks); ``info``: plan, timings, consistency, seams.
    """

    image: torch.Tensor
    x: torch.Tensor
    op: Any
    y: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def betas_for(diffusion: dict[str, Any] | None) -> np.ndarray:
    """The β schedule a registry/config ``diffusion`` entry describes (linear 1000 steps by default)."""
    from diffrestore.diffusion.schedules import cosine_betas, linear_betas

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


def load_denoiser(model: str | Path | None = None, config: str | Path | dict | None = None,
                  models_dir: str | Path | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32):
    """Registry model (or user checkpoint + config) as a ``Denoiser``; returns ``(denoiser, spec)``."""
    from diffrestore.diffusion.denoiser import Denoiser
    from diffrestore.io.registry import DEFAULT_NAME, load_model

    net, spec = load_model(str(model) if model is not None else DEFAULT_NAME, config, models_dir,
                           device=device, dtype=dtype)
    if spec.role != "denoiser" or spec.family not in ("adm_unet", "ddpm_unet"):
        raise UserError(f"model {spec.name!r} ({spec.family}) is not a diffusion denoiser usable by DDNM")
    diffusion = spec.diffusion or {}
    learned = bool(diffusion.get("learn_sigma", (spec.config or {}).get("out_channels", 3) == 6))
    return Denoiser(net, betas_for(diffusion), learned_sigma=learned), spec


def _patch_size(spec: Any, tile: int | None) -> int:
    if tile is not None:
        return int(tile)
    size = spec.image_size or (spec.config or {}).get("image_size")
    if not size:
        raise UserError(f"model {spec.name!r} has no native patch size; pass --tile")
    return int(size)


def restore(
    y: torch.Tensor | str | Path,
    task: str | None = None,
    *,
    op: Any = None,
    method: str = "ddnm",
    model: str | Path | None = None,
    config: str | Path | dict | None = None,
    models_dir: str | Path | None = None,
    steps: int | None = None,
    eta: float = 0.85,
    sigma_y: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    tile: int | None = None,
    overlap: int | None = None,
    hierarchical: bool = False,
    seed: int = 0,
    batch: int = 8,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    compat: str = "paper",
    progress: bool | Callable = False,
    on_plan: Callable[[Any], None] | None = None,
    **task_opts: Any,
) -> RestoreResult:
    """Restore an observation ``y`` (``[1, C, h, w]`` in [0, 1], or an image path) of any size.

    Give either ``task`` (+ task options, e.g. ``scale=4``, ``mask=...``) or a ready ``op``. Returns a
    ``RestoreResult``; ``info`` holds the plan, network calls, seconds, ``consistency`` (RMS of A x − y in
    [0, 1] units, before clamping) and the tiles' ``seam_score``.
    """
    from diffrestore.diffusion.noise import SeededNoise
    from diffrestore.io.images import read_image
    from diffrestore.operators.factory import make_operator
    from diffrestore.tiling.runner import tqdm_progress

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if isinstance(y, (str, Path)):
        y = read_image(y)
    y = torch.as_tensor(y, dtype=torch.float32)
    if op is None:
        if task is None:
            raise UserError("give a task (e.g. task='sr', scale=4) or an operator")
        op = make_operator(task, y_shape=tuple(y.shape), **task_opts)
        y = op.y_from_image(y)
    else:
        if task_opts:
            raise UserError(f"task options {sorted(task_opts)} given together with a ready operator")
        if y.dim() == 4 and y.shape[1] == 3:
            y = op.y_from_image(y)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        dtype, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise UserError(f"unknown dtype {dtype!r}: float32, bfloat16 or float16")

    t0 = time.perf_counter()
    denoiser, spec = load_denoiser(model, config, models_dir, device, torch_dtype)
    P = _patch_size(spec, tile)
    steps = int(steps or 50)
    y = y.to(device)
    op = op.to(device=device) if hasattr(op, "to") else op
    x_shape = _x_shape(op, y)
    ones = torch.ones(x_shape, device=device)
    y_model = 2 * y - op.A(ones)

    plans: list[Any] = []

    def _on_plan(summary: Any) -> None:
        plans.append(summary)
        if on_plan is not None:
            on_plan(summary)

    prog = tqdm_progress() if progress is True else (progress or None)
    noise = SeededNoise(seed)
    kwargs = dict(noise=noise, steps=steps, eta=eta, sigma_y=sigma_y, travel=tuple(travel), tile=P,
                  overlap=overlap, batch=batch, on_plan=_on_plan, progress=prog)
    t_load = time.perf_counter() - t0
    with torch.no_grad():
        if hierarchical:
            from diffrestore.tiling.hir import ddnm_hir

            x = ddnm_hir(denoiser, op, y_model, **kwargs)
        else:
            from diffrestore.tiling.msr import ddnm_msr

            x = ddnm_msr(denoiser, op, y_model, compat=compat, **kwargs)
    x01 = (x.float() + 1) / 2
    seconds = time.perf_counter() - t0
    info = _report(op, x01, y, plans, spec, seconds, t_load, steps, P, seed)
    return RestoreResult(image=x01.clamp(0, 1), x=x01, op=op, y=y, info=info)


def _x_shape(op: Any, y: torch.Tensor) -> tuple[int, ...]:
    from diffrestore.tiling.msr import image_shape

    return tuple(int(v) for v in image_shape(op, y))


def _report(op: Any, x01: torch.Tensor, y: torch.Tensor, plans: list[Any], spec: Any, seconds: float,
            t_load: float, steps: int, P: int, seed: int) -> dict[str, Any]:
    from diffrestore.metrics import consistency, seam_score

    info: dict[str, Any] = {
        "model": spec.name,
        "patch": P,
        "steps": steps,
        "seed": seed,
        "seconds": round(seconds, 3),
        "load_seconds": round(t_load, 3),
        "consistency_rms": float(consistency(op, x01, y)),
        "consistency_rms_clamped": float(consistency(op, x01.clamp(0, 1), y)),
        "phases": [],
    }
    for s in plans:
        info["phases"].append({"phase": s.phase, "tiles": s.plan.n_tiles, "waves": s.n_waves,
                               "network_calls": s.network_calls, "tile_evaluations": s.tile_evaluations})
    if plans:  # seams can only appear where a tile's new pixels meet an earlier tile's: its edges
        plan = plans[-1].plan
        boxes = [tuple(b) for b in plan.boxes]
        score = float(seam_score(x01.clamp(0, 1), boxes=boxes))
        info["seam_score"] = None if np.isnan(score) else score
    info["network_calls"] = sum(p["network_calls"] for p in info["phases"])
    return info
