"""Export a training run's EMA weights as a shippable model: fp16 safetensors + JSON (``prior.json`` for the
default prior, ``resshift.json`` for a ResShift SR model).

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

__all__ = ["export_prior", "export_resshift", "export_run", "MAX_BYTES"]

MAX_BYTES = 25 * 1024 * 1024  # package budget for the embedded prior


def _write_fp16(
    run_dir: str | Path, out_dir: str | Path, name: str, build: Any, use_ema: bool
) -> tuple[Path, int, dict[str, torch.Tensor], dict[str, Any]]:
    """Validate a run's (EMA) weights against the network class and write them as fp16 safetensors.

    Returns ``(path, bytes, fp16 state_dict, train.json)``. The EMA covers parameters; buffers (the
    Swin-UNet's attention index/mask) come from the live model.
    """
    model_sd, ema_sd, meta = read_checkpoint(run_dir)
    config: dict[str, Any] = dict(meta["model_config"])
    net = build(config)
    ref = net.state_dict()
    src = ema_sd if use_ema else model_sd
    sd = {k: (src[k] if k in src else model_sd[k]) for k in ref}
    net.load_state_dict(sd, strict=True)  # validates shapes against the class before anything is written
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}
    bad = [k for k, v in half.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{run_dir}: weights overflow fp16 or are not finite (e.g. {bad[0]})")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    w_path = save_state_dict(half, out / f"{name}.safetensors")
    return w_path, w_path.stat().st_size, half, meta


def _training_info(meta: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    cfg = dict(meta.get("config", {}))
    return {
        "steps": int(meta["step"]),
        "images_seen": int(meta["images_seen"]),
        "wall_hours": round(float(meta["wall_hours"]), 3),
        **{k: cfg.get(k) for k in keys},
        "precision": sorted({s.get("precision", "") for s in meta.get("segments", [])}),
        "data": meta.get("data"),
        "segments": meta.get("segments", []),
    }


def _finish(info: dict[str, Any], out_dir: str | Path, name: str, w_path: Path, size: int) -> list[Path]:
    j_path = Path(out_dir).expanduser() / f"{name}.json"
    with atomic_path(j_path) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1) + "\n")
    if size > MAX_BYTES:
        raise UserError(
            f"{w_path} is {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB package budget"
        )
    return [w_path, j_path]


def export_prior(
    run_dir: str | Path, out_dir: str | Path, name: str = "prior", use_ema: bool = True
) -> list[Path]:
    """Write ``OUT_DIR/<name>.safetensors`` (fp16) and ``OUT_DIR/<name>.json``; returns both paths."""
    w_path, size, half, meta = _write_fp16(run_dir, out_dir, name, build_model, use_ema)
    config: dict[str, Any] = dict(meta["model_config"])
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
        "training": _training_info(meta, ("batch", "lr", "ema", "t_low_frac", "t_low_max")),
    }
    return _finish(info, out_dir, name, w_path, size)


def export_resshift(
    run_dir: str | Path, out_dir: str | Path, name: str = "resshift", use_ema: bool = True
) -> list[Path]:
    """Write ``OUT_DIR/<name>.safetensors`` (fp16) and ``<name>.json`` in the registry's user-model format
    (family, config, ResShift ``diffusion`` block, scale, ``requires: [vq-f4]`` for latent models), so
    ``load_model(path)`` and the sampler take it like a released checkpoint."""
    from diffrestore.train.resshift import build_model as build_swin

    w_path, size, half, meta = _write_fp16(run_dir, out_dir, name, build_swin, use_ema)
    config: dict[str, Any] = dict(meta["model_config"])
    latent = bool(meta.get("latent", False))
    info = {
        "name": name,
        "family": "resshift_swinunet",
        "config": config,
        "diffusion": dict(meta["diffusion"]),
        "role": "denoiser",
        "tasks": ["sr"],
        "methods": ["resshift"],
        "scale": int(meta["scale"]),
        "degradation": meta.get("degradation"),
        "image_size": int(config["image_size"]),
        "requires": ["vq-f4"] if latent else [],
        "patch_size": int(meta["patch_size"]),
        "range": [-1, 1],
        "dtype": "float16",
        "weights": "ema" if use_ema else "raw",
        "params": sum(v.numel() for k, v in half.items() if v.is_floating_point() and "attn_mask" not in k),
        "bytes": size,
        "training": _training_info(meta, ("batch", "lr", "ema", "size", "degradation", "kappa", "power")),
    }
    return _finish(info, out_dir, name, w_path, size)


def export_run(
    run_dir: str | Path, out_dir: str | Path, name: str | None = None, use_ema: bool = True
) -> list[Path]:
    """Export any run folder, dispatching on the ``family`` its ``train.json`` records."""
    _, _, meta = read_checkpoint(run_dir)
    if meta.get("family") == "resshift_swinunet":
        return export_resshift(run_dir, out_dir, name or "resshift", use_ema)
    return export_prior(run_dir, out_dir, name or "prior", use_ema)
