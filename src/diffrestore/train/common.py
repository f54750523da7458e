"""Pieces every trainer shares (the default prior, ResShift): run-folder files, exact resume, precision,
EMA, signal handling, provenance.

Why shared: each trainer must resume bit-for-bit, checkpoint atomically and describe where its steps ran in
the same way, so the model cards and the lead's tooling read every run folder alike. A run folder holds
``ckpt.safetensors`` (``model.<key>`` and ``ema.<key>``, fp32), ``state.pt`` (optimizer, RNG state,
counters: tensors and plain containers only, loaded with ``weights_only``), ``train.json`` and ``log.csv``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffrestore.errors import UserError
from diffrestore.io.atomic import atomic_path
from diffrestore.io.checkpoints import load_state_dict, save_state_dict

__all__ = [
    "CKPT_NAME",
    "STATE_NAME",
    "META_NAME",
    "LOG_NAME",
    "StopOnSignal",
    "atomic_json",
    "autocast",
    "ema_update",
    "hardware_string",
    "init_weights",
    "load_run",
    "read_checkpoint",
    "resolve_precision",
    "run_meta_for",
    "save_run",
    "set_lr",
]

CKPT_NAME = "ckpt.safetensors"  # "model.<key>" and "ema.<key>" (fp32)
STATE_NAME = "state.pt"  # optimizer + RNG + counters: tensors and plain containers only (weights_only load)
META_NAME = "train.json"
LOG_NAME = "log.csv"


def hardware_string(device: torch.device, threads: int) -> str:
    """Human-readable description of where steps ran (CPU model or GPU name) for the model card."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} CPU, {threads} torch thread(s) of {os.cpu_count()} cores"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` picks bf16 where the hardware does it natively (measured much faster), else fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        ok = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "bf16" if ok else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast (fp32 master weights) or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def atomic_json(obj: Any, path: Path) -> None:
    """Write JSON via temp file + rename, so a reader never sees half a ``train.json``."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=str) + "\n")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def ema_update(ema: list[torch.Tensor], params: Sequence[torch.Tensor], step: int, decay: float) -> None:
    """fp32 EMA with the usual warm-up ``min(decay, (1 + n) / (10 + n))`` so early snapshots are usable."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - d)


def read_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """``(model_sd, ema_sd, train_json)`` of a run folder (fp32 CPU tensors)."""
    run = Path(run_dir).expanduser()
    ckpt, meta = run / CKPT_NAME, run / META_NAME
    if not ckpt.is_file() or not meta.is_file():
        raise UserError(f"{run} is not a training run folder (no {CKPT_NAME} / {META_NAME})")
    sd = load_state_dict(ckpt)
    model = {k[6:]: v for k, v in sd.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in sd.items() if k.startswith("ema.")}
    if not model or not ema:
        raise UserError(f"{ckpt} lacks model./ema. weights")
    return model, ema, json.loads(meta.read_text())


def init_weights(
    path: str, sidecars: Sequence[str] = ("prior.json",)
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Weights to start from (EMA if the file has them), plus the config/training info of a JSON beside
    them (``<stem>.json``, one of ``sidecars``, or a run's ``train.json``) so the architecture need not be
    repeated on the command line. ``path`` is a weights file or a run / export folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        cands = [p / CKPT_NAME] + [p / Path(s).with_suffix(".safetensors").name for s in sidecars]
        found = [c for c in cands if c.is_file()]
        if not found:
            raise UserError(f"--init-from {p}: no {CKPT_NAME} or exported weights in that folder")
        p = found[0]
    sd = load_state_dict(p)
    if any(k.startswith("ema.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("ema.")}
    info: dict[str, Any] = {}
    config = None
    for cand in (p.with_suffix(".json"), *(p.parent / s for s in sidecars), p.parent / META_NAME):
        if cand.is_file():
            info = json.loads(cand.read_text())
            config = info.get("model_config") or info.get("config")  # train.json / exported json
            break
    return {k: v.float() for k, v in sd.items()}, config, info


def run_meta_for(run: Path, resume: bool, init_from: str | None) -> dict[str, Any]:
    """The saved ``train.json`` to resume from (``{}`` for a fresh run); refuses to overwrite a run."""
    has_ckpt = (run / STATE_NAME).is_file() and (run / CKPT_NAME).is_file() and (run / META_NAME).is_file()
    if has_ckpt and not resume:
        raise UserError(
            f"{run} already holds a training run; pass --resume to continue it or pick another --out"
        )
    if resume and has_ckpt:
        return dict(json.loads((run / META_NAME).read_text()))
    if resume and not init_from:
        raise UserError(f"--resume: no checkpoint in {run} (pass --init-from PATH to start from weights)")
    return {}


def save_run(
    run: Path,
    model: nn.Module,
    names: Sequence[str],
    ema: Sequence[torch.Tensor],
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    opt_steps: int,
    meta: dict[str, Any],
) -> None:
    """Atomic checkpoint: state first, then weights, then ``train.json`` (the step ties them together)."""
    torch.save(
        {"optimizer": opt.state_dict(), "rng": gen.get_state(), "step": step, "opt_steps": opt_steps},
        run / (STATE_NAME + ".tmp"),
    )
    os.replace(run / (STATE_NAME + ".tmp"), run / STATE_NAME)
    sd: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        sd["model." + k] = v.detach().float().cpu()
    for n, e in zip(names, ema):
        sd["ema." + n] = e.cpu()
    save_state_dict(sd, run / CKPT_NAME)
    atomic_json(meta, run / META_NAME)


def load_run(
    run: Path,
    model: nn.Module,
    names: Sequence[str],
    ema: Sequence[torch.Tensor],
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    meta: dict[str, Any],
) -> tuple[int, int]:
    """Restore weights, EMA, optimizer and RNG from ``run``; returns ``(step, opt_steps)``."""
    model_sd, ema_sd, _ = read_checkpoint(run)
    model.load_state_dict(model_sd, strict=True)
    with torch.no_grad():
        for n, e in zip(names, ema):
            e.copy_(ema_sd[n])
    state = torch.load(run / STATE_NAME, map_location="cpu", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"])
    step, opt_steps = int(state["step"]), int(state["opt_steps"])
    if int(meta["step"]) != step:
        raise UserError(f"{run}: {STATE_NAME} (step {step}) and {META_NAME} (step {meta['step']}) disagree")
    return step, opt_steps


class StopOnSignal:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits cleanly."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. some test runners): no handling
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
