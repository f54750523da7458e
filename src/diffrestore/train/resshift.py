"""Train a ResShift SR model (METHODS §6): the official Swin-UNet with the loss ‖f_θ(x_t, y0, t) − x0‖².

Design choices, and why:

* **Pixel space by default** (``latent=False``): x0 is the HR crop, y0 its LR bicubic-upsampled to HR size
  (exactly what :func:`diffrestore.methods.resshift_sampler.resshift_sample` feeds at test time), and the
  network's ``lq`` input is y0 itself (same resolution as x). No 55M-parameter VQ in the loop, which a CPU
  cannot afford; ``latent=True`` with a VQ-f4 checkpoint trains the official latent variant (x0 = E(HR),
  y0 = E(up(LR)), lq = LR).
* **The official schedule and network conventions** (input scaled by 1/sqrt(κ²η_t + 1), integer t,
  x0-prediction), so an exported model runs through the same sampler as the released checkpoints.
* **LR made on the fly** (:mod:`diffrestore.train.degradations`): MATLAB bicubic rounded to 8 bits (what the
  evaluation protocols score) or the second-order realistic pipeline.
* **Exact resume, bf16 autocast, EMA, atomic checkpoints, provenance**: the helpers of
  :mod:`diffrestore.train.common`, shared with the default prior's trainer; every random draw (crops,
  degradations, t, noise) comes from one checkpointed ``torch.Generator``.
"""

from __future__ import annotations

import csv
import json
import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffrestore.diffusion.noise import SeededNoise
from diffrestore.diffusion.resshift_schedule import ResShiftSchedule, resshift_schedule
from diffrestore.errors import UserError
from diffrestore.io.checkpoints import load_into
from diffrestore.methods.resshift_sampler import resshift_chopped, upsample_lq
from diffrestore.nets import build_network
from diffrestore.train.common import (
    CKPT_NAME,
    LOG_NAME,
    StopOnSignal,
    autocast,
    ema_update,
    hardware_string,
    init_weights,
    load_run,
    resolve_precision,
    run_meta_for,
    save_run,
    set_lr,
)
from diffrestore.train.data import CropSampler, find_images, load_images
from diffrestore.train.degradations import DEGRADATIONS, make_lr

__all__ = [
    "ARCH_PRESETS",
    "ResShiftTrainConfig",
    "arch_config",
    "diffusion_block",
    "evaluate_sr",
    "train_resshift",
]

FAMILY = "resshift_swinunet"
DEFAULT_LR = 2e-4

# Fixed UNetModelSwin arguments (LQ-conditioned, 3 channels, the official swin settings).
_SWIN_BASE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "dropout": 0,
    "conv_resample": True,
    "dims": 2,
    "use_fp16": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "swin_depth": 2,
    "cond_lq": True,
}

# Presets give Swin levels (0 = full resolution) instead of attention_resolutions, because the latter are
# feature sizes relative to ``image_size`` (= the crop size here). Measured on 2 EPYC cores (bf16, 64 px
# crops, batch 16, idle machine): "small" 7.3M params (14.7 MB fp16) ~12 crops/s; a 64-channel first level
# ran at 7.5 crops/s with 14M params (over the 25 MB budget). "light" (3.4M) is about twice as fast as
# "small" and is what the shipped pixel-space model was trained with on the shared (busy) 2-core machine.
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "light": {
        "model_channels": 32,
        "channel_mult": [1, 2, 2, 4],
        "num_res_blocks": [1, 1, 1, 1],
        "swin_levels": [2, 3],
        "swin_embed_dim": 64,
        "num_head_channels": 32,
        "window_size": 8,
        "mlp_ratio": 2,
    },
    "small": {
        "model_channels": 32,
        "channel_mult": [1, 2, 4, 4],
        "num_res_blocks": [1, 2, 2, 2],
        "swin_levels": [1, 2, 3],
        "swin_embed_dim": 96,
        "num_head_channels": 32,
        "window_size": 8,
        "mlp_ratio": 2,
    },
    "tiny": {  # tests and smoke runs only
        "model_channels": 32,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "swin_levels": [1],
        "swin_embed_dim": 32,
        "num_head_channels": 16,
        "window_size": 4,
        "mlp_ratio": 2,
    },
}


def arch_config(arch: str | dict[str, Any], image_size: int) -> dict[str, Any]:
    """Full ``UNetModelSwin`` kwargs from a preset name, a JSON object/file, or a dict (``swin_levels`` is
    turned into ``attention_resolutions`` for ``image_size``)."""
    if isinstance(arch, dict):
        over = dict(arch)
    elif arch in ARCH_PRESETS:
        over = dict(ARCH_PRESETS[arch])
    else:
        text = arch
        p = Path(arch).expanduser()
        if not arch.lstrip().startswith("{") and p.is_file():
            text = p.read_text()
        try:
            over = json.loads(text)
        except ValueError:
            raise UserError(
                f"--arch must be one of {', '.join(ARCH_PRESETS)}, a JSON object or a JSON file; got {arch!r}"
            ) from None
        if not isinstance(over, dict):
            raise UserError("--arch JSON must be an object of UNetModelSwin arguments")
        if "config" in over and isinstance(over["config"], dict):  # an exported resshift.json
            over = dict(over["config"])
    levels = over.pop("swin_levels", None)
    if levels is not None:
        over["attention_resolutions"] = [image_size >> int(lv) for lv in levels]
    cfg = {**_SWIN_BASE, "image_size": int(image_size), "lq_size": int(image_size), **over}
    cfg["lq_size"] = cfg["image_size"]
    return cfg


def build_model(config: dict[str, Any]) -> nn.Module:
    try:
        return build_network(FAMILY, config)
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid --arch for {FAMILY}: {e}") from None


@dataclass
class ResShiftTrainConfig:
    """Everything that defines a run; stored in ``train.json`` so ``--resume`` continues the same run."""

    data: list[str]
    out: str
    scale: int = 4
    degradation: str = "bicubic"
    latent: bool = False
    vq: str | None = None
    size: int = 64  # HR crop side (pixels)
    steps: int = 100_000
    batch: int = 16
    lr: float | None = None  # None: DEFAULT_LR for a new run, the saved value on --resume
    weight_decay: float = 0.0
    warmup: int = 200
    grad_clip: float = 1.0
    ema: float = 0.999
    diffusion_steps: int = 4
    kappa: float = 2.0
    power: float = 0.3
    min_noise_level: float = 0.2
    etas_end: float = 0.99
    arch: str | dict[str, Any] = "small"
    precision: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    min_scale: float = 0.0
    p_native: float = 0.5
    vflip: bool = False
    rot90: bool = False
    max_images: int | None = None
    ckpt_minutes: float = 10.0
    ckpt_every: int = 0
    log_every: int = 20
    resume: bool = False
    init_from: str | None = None
    progress: bool = True
    model_config: dict[str, Any] = field(default_factory=dict)

    RESUMABLE_OVERRIDES = (
        "steps", "device", "threads", "precision", "ckpt_minutes", "ckpt_every", "log_every", "progress",
        "vq",
    )

    def schedule(self) -> ResShiftSchedule:
        return resshift_schedule(self.diffusion_steps, self.kappa, self.min_noise_level, self.etas_end,
                                 self.power)


def diffusion_block(cfg: ResShiftTrainConfig) -> dict[str, Any]:
    """The ``diffusion`` entry of ``train.json`` / the exported JSON (the registry's ResShift keys)."""
    return {
        **cfg.schedule().to_dict(),
        "predict": "xstart",
        "normalize_input": True,
        "latent": bool(cfg.latent),
        "scale_factor": 1.0,
        "sf": int(cfg.scale),
    }


def _load_vq(path: str | None, device: torch.device) -> nn.Module:
    """The frozen VQ-f4 for latent training: a registry name (``vq-f4``) or a checkpoint (+ sidecar JSON)."""
    if not path:
        raise UserError("--latent needs --vq PATH (the VQ-f4 autoencoder checkpoint or the name vq-f4)")
    from diffrestore.io.registry import load_model

    vq, spec = load_model(path, device=device)
    if spec.family != "vq_f4":
        raise UserError(f"--vq {path} is a {spec.family} model, not vq_f4")
    return vq


def _init_from(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Start weights: an exported model / run folder (architecture from its JSON) or a registry name."""
    p = Path(path).expanduser()
    if not p.exists():
        from diffrestore.io.registry import known_names, resolve

        if path in known_names():
            spec = resolve(path)
            assert spec.path is not None
            from diffrestore.io.checkpoints import load_state_dict

            sd = {k: v.float() for k, v in load_state_dict(spec.path).items()}
            return sd, dict(spec.config or {}), {"diffusion": spec.diffusion}
        raise UserError(f"--init-from: {path} is neither a file/folder nor a known model name")
    return init_weights(path, sidecars=("resshift.json",))


def train_resshift(
    cfg: ResShiftTrainConfig, on_step: Callable[[int, float], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) training; returns the final ``train.json`` content.

    ``on_step(step, loss)`` is called after every optimizer step (tests use it to compare runs).
    """
    run = Path(cfg.out).expanduser()
    meta: dict[str, Any] = run_meta_for(run, cfg.resume, cfg.init_from)
    if meta:
        saved = dict(meta["config"])
        for k in ResShiftTrainConfig.RESUMABLE_OVERRIDES:
            saved[k] = getattr(cfg, k)
        if cfg.lr is not None:  # an explicit --lr on --resume changes the rate from here on
            saved["lr"] = cfg.lr
        saved.update(resume=True, out=str(run), init_from=None)
        cfg = ResShiftTrainConfig(**saved)
    if cfg.lr is None:
        cfg.lr = DEFAULT_LR
    base_lr = float(cfg.lr)
    if cfg.degradation not in DEGRADATIONS:
        raise UserError(f"--degradation must be one of {', '.join(DEGRADATIONS)}, got {cfg.degradation!r}")
    if cfg.scale < 1 or cfg.size % cfg.scale:
        raise UserError(f"--size {cfg.size} must be a multiple of --scale {cfg.scale}")
    if cfg.latent and cfg.scale != 4:
        raise UserError("--latent needs --scale 4 (the VQ-f4 latent has the LR's resolution only then)")
    schedule = cfg.schedule()

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    threads = torch.get_num_threads()
    precision = resolve_precision(cfg.precision, device)
    image_size = cfg.size // 4 if cfg.latent else cfg.size

    init_sd: dict[str, torch.Tensor] | None = None
    init_info: dict[str, Any] = {}
    if not meta and cfg.init_from:
        init_sd, init_config, init_info = _init_from(cfg.init_from)
        if init_config is not None:
            cfg.arch = dict(init_config)
    if not meta:
        cfg.model_config = arch_config(cfg.arch, image_size)
    model_config = dict(cfg.model_config)

    files = find_images(cfg.data)
    images = load_images(files, min_side=cfg.size, max_images=cfg.max_images)
    sampler = CropSampler(images, cfg.size, min_scale=cfg.min_scale, p_native=cfg.p_native, vflip=cfg.vflip,
                          rot90=cfg.rot90)
    vq = _load_vq(cfg.vq, device) if cfg.latent else None

    torch.manual_seed(cfg.seed)
    model = build_model(model_config)
    divisor = int(getattr(model, "divisor", 1))
    if image_size % divisor:
        raise UserError(f"--size {cfg.size}: the network needs sides that are multiples of "
                        f"{divisor * (4 if cfg.latent else 1)} px")
    if init_sd is not None:
        load_into(model, init_sd)
    model.to(device)
    model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    ema = [p.detach().clone().float() for p in params]
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    step = 0
    opt_steps = 0
    segments: list[dict[str, Any]] = []
    if meta:
        step, opt_steps = load_run(run, model, names, ema, opt, gen, meta)
        segments = list(meta.get("segments", []))
    elif init_info:
        tr = init_info.get("training", init_info)
        step = int(tr.get("steps", tr.get("step", 0)) or 0)
        segments = list(tr.get("segments", []))

    etas = torch.tensor(schedule.etas, dtype=torch.float32)
    sqrt_etas = torch.tensor(schedule.sqrt_etas, dtype=torch.float32)
    n_params = sum(p.numel() for p in params)

    run.mkdir(parents=True, exist_ok=True)
    hardware = hardware_string(device, threads)
    seg: dict[str, Any] = {
        "start_step": step, "end_step": step, "images": 0, "wall_hours": 0.0, "hardware": hardware,
        "device": str(device), "precision": precision, "threads": threads, "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
    }
    if init_sd is not None:
        seg["init_from"] = str(cfg.init_from)
    segments.append(seg)
    t_start = time.perf_counter()

    def save() -> None:
        seg["end_step"] = step
        seg["images"] = (step - seg["start_step"]) * cfg.batch
        seg["wall_hours"] = (time.perf_counter() - t_start) / 3600.0
        seg["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        out = {
            "family": FAMILY,
            "config": asdict(cfg) | {"model_config": model_config},
            "model_config": model_config,
            "diffusion": diffusion_block(cfg),
            "scale": cfg.scale,
            "degradation": cfg.degradation,
            "latent": cfg.latent,
            "patch_size": cfg.size,
            "params": n_params,
            "step": step,
            "images_seen": sum(int(s["images"]) for s in segments),
            "wall_hours": sum(float(s["wall_hours"]) for s in segments),
            "data": {"dirs": [str(d) for d in cfg.data], "files": len(files), "used": len(images)},
            "segments": segments,
            "argv": sys.argv,
        }
        save_run(run, model, names, ema, opt, gen, step, opt_steps, out)
        meta.clear()
        meta.update(out)

    log_path = run / LOG_NAME
    new_log = not log_path.exists()
    log_f = open(log_path, "a", newline="")  # noqa: SIM115 - kept open for the whole run
    log = csv.writer(log_f)
    if new_log:
        log.writerow(["step", "loss", "loss_t0", "images_per_s", "lr", "grad_norm", "wall_hours"])
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
    print(
        f"diffrestore train resshift: {n_params / 1e6:.2f}M params, {len(images)} photos, {cfg.size}px HR "
        f"crops x{cfg.scale} {cfg.degradation}, {'latent' if cfg.latent else 'pixel'} space, batch "
        f"{cfg.batch}, T={cfg.diffusion_steps} kappa={cfg.kappa} p={cfg.power}, {precision} on {hardware}, "
        f"step {step} -> {cfg.steps}, run folder {run}",
        file=sys.stderr, flush=True,
    )

    last_ckpt = time.perf_counter()
    past_hours = sum(float(s["wall_hours"]) for s in segments[:-1])
    win_loss: list[float] = []
    win_t0loss: list[float] = []
    win_t0 = time.perf_counter()
    win_steps = 0
    smooth = float("nan")
    gnorm = float("nan")
    amp = autocast(precision, device)
    model.train()
    T = cfg.diffusion_steps
    stopped = False
    try:
        with StopOnSignal() as stop:
            while step < cfg.steps and not stop.flag:
                hr = sampler.sample(cfg.batch, gen)  # [-1, 1]
                lr01 = make_lr(hr * 0.5 + 0.5, cfg.scale, cfg.degradation, gen)
                lq = lr01 * 2.0 - 1.0
                t = torch.randint(0, T, (cfg.batch,), generator=gen)
                noise_shape = (cfg.batch, 3, image_size, image_size)
                eps = torch.randn(noise_shape, generator=gen)
                hr, lq, eps, td = hr.to(device), lq.to(device), eps.to(device), t.to(device)
                y_up = upsample_lq(lq, cfg.scale)
                if vq is not None:
                    with torch.no_grad(), amp:
                        x0 = vq.encode(hr).float()
                        y0 = vq.encode(y_up).float()
                    cond = lq
                else:
                    x0, y0, cond = hr, y_up, y_up
                e = etas.to(device)[td].view(-1, 1, 1, 1)
                s = sqrt_etas.to(device)[td].view(-1, 1, 1, 1)
                xt = x0 + e * (y0 - x0) + cfg.kappa * s * eps
                model_in = xt / torch.sqrt(e * cfg.kappa**2 + 1)
                model_in = model_in.contiguous(memory_format=torch.channels_last)
                cond = cond.contiguous(memory_format=torch.channels_last)
                lr_now = base_lr * min(1.0, (opt_steps + 1) / max(1, cfg.warmup))
                set_lr(opt, lr_now)
                with amp:
                    pred = model(model_in, td, lq=cond)
                per = (pred.float() - x0).pow(2).mean(dim=(1, 2, 3))
                loss = per.mean()
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise RuntimeError(
                        f"loss became {lv} at step {step + 1}; lower --lr or use --precision fp32"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
                opt.step()
                opt_steps += 1
                step += 1
                ema_update(ema, params, step, cfg.ema)
                win_loss.append(lv)
                m0 = t == 0
                if bool(m0.any()):
                    win_t0loss.append(float(per.detach().cpu()[m0].mean()))
                win_steps += 1
                smooth = lv if math.isnan(smooth) else 0.98 * smooth + 0.02 * lv
                if on_step is not None:
                    on_step(step, lv)
                now = time.perf_counter()
                if step % max(1, cfg.log_every) == 0 or step == cfg.steps:
                    ips = win_steps * cfg.batch / max(1e-9, now - win_t0)
                    log.writerow([
                        step, f"{sum(win_loss) / len(win_loss):.6f}",
                        f"{sum(win_t0loss) / len(win_t0loss):.6f}" if win_t0loss else "",
                        f"{ips:.2f}", f"{lr_now:.3g}", f"{gnorm:.4f}",
                        f"{(now - t_start) / 3600 + past_hours:.4f}",
                    ])
                    log_f.flush()
                    win_loss, win_t0loss, win_steps, win_t0 = [], [], 0, now
                    if bar is not None:
                        bar.set_postfix(loss=f"{smooth:.4f}", img_s=f"{ips:.1f}", refresh=False)
                if bar is not None:
                    bar.update(1)
                due_time = cfg.ckpt_minutes > 0 and now - last_ckpt >= cfg.ckpt_minutes * 60
                due_step = cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0
                if due_time or due_step:
                    save()
                    last_ckpt = time.perf_counter()
            stopped = stop.flag
        if step > seg["start_step"] or not (run / CKPT_NAME).exists():
            save()
    finally:
        if bar is not None:
            bar.close()
        log_f.close()
    if stopped:
        print(f"diffrestore train resshift: stopped at step {step}; continue with --resume --out {run}",
              file=sys.stderr, flush=True)
    return meta


def evaluate_sr(
    net: nn.Module,
    schedule: ResShiftSchedule,
    files: Sequence[str | Path],
    *,
    scale: int = 4,
    seed: int = 0,
    vq: nn.Module | None = None,
    chop_size: int = 512,
) -> list[dict[str, Any]]:
    """PSNR-Y (border = scale, 8-bit) of ResShift vs. bicubic on HR images, LR made with MATLAB bicubic
    (the evaluation protocols' rule). For watching a run learn, not a benchmark."""
    from diffrestore.io.images import read_image
    from diffrestore.metrics import imresize, psnr_y
    from diffrestore.train.degradations import bicubic_lr

    rows = []
    for f in files:
        hr = read_image(f)
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % scale, : w - w % scale]
        lr = bicubic_lr(hr, scale)
        with torch.no_grad():
            sr = resshift_chopped(net, lr * 2 - 1, schedule, noise=SeededNoise(seed), vq=vq, scale=scale,
                                  chop_size=chop_size)
        sr01 = (sr * 0.5 + 0.5).clamp(0, 1)
        bic = imresize(lr, scale=float(scale))
        assert isinstance(bic, torch.Tensor)
        bic = bic.clamp(0, 1)
        rows.append({"image": Path(f).name, "psnr_y": psnr_y(sr01, hr, crop_border=scale),
                     "bicubic_psnr_y": psnr_y(bic, hr, crop_border=scale)})
    return rows
