"""Loading a diffusion prior (registry name or checkpoint + config) as a cached ``Denoiser``.

Why cached: evaluating a data set image by image must load the network once; the cache is keyed by the
arguments and the file's mtime. Why this is safe: methods never mutate a loaded network — adaptation
(ADIR) wraps a copy (``Denoiser`` docs) — so the next image always sees the plain prior.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from diffrestore.errors import UserError
from diffrestore.methods.base import Prior

__all__ = ["load_denoiser", "load_prior"]


def load_denoiser(model: str | Path | None = None, config: str | Path | dict | None = None,
                  models_dir: str | Path | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Registry model (or user checkpoint + config) as a ``Denoiser``; returns ``(denoiser, spec)``."""
    if isinstance(config, dict):
        return _load_denoiser(model, config, models_dir, device, dtype)
    key = (str(model) if model is not None else None, str(config) if config is not None else None,
           str(models_dir) if models_dir is not None else None, str(device), dtype, _mtime(model))
    return _cached_denoiser(key)


def load_prior(model: str | None, config: str | None, models_dir: str | None, device: str,
               dtype: torch.dtype, patch: int | None = None) -> Prior:
    """A :class:`Prior` around the denoiser, with the model card's sampling defaults."""
    denoiser, spec = load_denoiser(model, config, models_dir, device, dtype)
    size = patch or spec.image_size or (spec.config or {}).get("image_size")
    if not size:
        raise UserError(f"model {spec.name!r} has no native patch size; pass --tile")
    return Prior(spec=spec, patch=int(size), denoiser=denoiser, defaults=dict(spec.diffusion or {}),
                 multiple=int(getattr(denoiser.net, "size_multiple", 1)))


def _mtime(model: str | Path | None) -> float | None:
    p = Path(str(model)) if model is not None else None
    return p.stat().st_mtime if p is not None and p.is_file() else None


@functools.lru_cache(maxsize=2)
def _cached_denoiser(key: tuple) -> tuple[Any, Any]:
    model, config, models_dir, device, dtype, _ = key
    return _load_denoiser(model, config, models_dir, device, dtype)


def _load_denoiser(model: str | Path | None, config: str | Path | dict | None, models_dir: str | Path | None,
                   device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from diffrestore.diffusion.denoiser import Denoiser
    from diffrestore.diffusion.schedules import betas_for
    from diffrestore.io.registry import DEFAULT_NAME, load_model

    net, spec = load_model(str(model) if model is not None else DEFAULT_NAME, config, models_dir,
                           device=device, dtype=dtype)
    if spec.role != "denoiser" or spec.family not in ("adm_unet", "ddpm_unet"):
        raise UserError(f"model {spec.name!r} ({spec.family}) is not a diffusion denoiser usable here")
    diffusion = spec.diffusion or {}
    learned = bool(diffusion.get("learn_sigma", (spec.config or {}).get("out_channels", 3) == 6))
    return Denoiser(net, betas_for(diffusion), learned_sigma=learned), spec
