"""Export a training run's EMA weights as the shippable prior: fp16 safetensors + ``prior.json``.

fp16 halves the package size (the 7.6M-parameter prior is ~15 MB, under the 25 MB budget); the loaders
cast back to the compute dtype, and GroupNorm runs in fp32 anyway. ``prior.json`` carries everything a
loader needs to rebuild the network without guessing (family, official constructor kwargs, diffusion
schedule, patch size) plus the training provenance the model card reports (steps, images, hours and the
hardware of every segment). Writing into the package data folder is deliberately left to a human step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diffrestore.errors import UserError
from diffrestore.io.atomic import atomic_path
from diffrestore.io.checkpoints import save_state_dict
from diffrestore.train.prior import build_model, read_checkpoint

__all__ = ["export_prior", "MAX_BYTES"]

MAX_BYTES = 25 * 1024 * 1024  # package budget for the embedded prior


def export_prior(
    run_dir: str | Path, out_dir: str | Path, name: str = "prior", use_ema: bool = True
) -> list[Path]:
    """Write ``OUT_DIR/<name>.safetensors`` (fp16) and ``OUT_DIR/<name>.json``; returns both paths."""
    model_sd, ema_sd, meta = read_checkpoint(run_dir)
    config: dict[str, Any] = dict(meta["model_config"])
    net = build_model(config)
    ref = net.state_dict()
    src = ema_sd if use_ema else model_sd
    # The EMA covers parameters; buffers (none in ADM today) come from the live model.
    sd = {k: (src[k] if k in src else model_sd[k]) for k in ref}
    net.load_state_dict(sd, strict=True)  # validates shapes against the class before anything is written
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}
    bad = [k for k, v in half.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{run_dir}: weights overflow fp16 or are not finite (e.g. {bad[0]})")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    w_path = save_state_dict(half, out / f"{name}.safetensors")
    size = w_path.stat().st_size
    cfg = dict(meta.get("config", {}))
    steps = int(meta["diffusion"]["steps"])
    info = {
        "name": name,
        "family": "adm_unet",
        "config": config,
        # The brief's three keys plus the registry's explicit ones (same schedule as linear_betas(1000)).
        "diffusion": {
            "schedule": "linear",
            "steps": steps,
            "learn_sigma": False,
            "type": "ddpm",
            "beta_start": 1e-4 * 1000 / steps,
            "beta_end": 0.02 * 1000 / steps,
            "predict": "eps",
        },
        "patch_size": int(meta["patch_size"]),
        "range": [-1, 1],
        "dtype": "float16",
        "weights": "ema" if use_ema else "raw",
        "params": sum(v.numel() for v in half.values()),
        "bytes": size,
        "training": {
            "steps": int(meta["step"]),
            "images_seen": int(meta["images_seen"]),
            "wall_hours": round(float(meta["wall_hours"]), 3),
            "batch": cfg.get("batch"),
            "lr": cfg.get("lr"),
            "ema": cfg.get("ema"),
            "t_low_frac": cfg.get("t_low_frac"),
            "t_low_max": cfg.get("t_low_max"),
            "precision": sorted({s.get("precision", "") for s in meta.get("segments", [])}),
            "data": meta.get("data"),
            "segments": meta.get("segments", []),
        },
    }
    j_path = out / f"{name}.json"
    with atomic_path(j_path) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1) + "\n")
    if size > MAX_BYTES:
        raise UserError(
            f"{w_path} is {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB package budget"
        )
    return [w_path, j_path]
