"""LoRA adapters for our own ``nn.Module`` networks (ADM UNet, DDPM UNet, Swin UNet, classifiers).

Why our own and not PEFT: PEFT (0.21) hard-requires ``transformers``, ``accelerate`` and
``huggingface_hub`` (checked with ``pip download --no-deps peft`` and its wheel metadata) — hundreds of MB
and an online-hub-oriented stack for a CPU-first, offline tool whose networks are plain nn.Modules. Its
wrappers also replace a layer by a module whose ``forward`` adds a low-rank branch, which silently does
nothing where our code reads the weight directly (ADM attention applies ``qkv``/``proj_out`` through
``F.linear(x, conv.weight.squeeze(-1))``), and its adapter files are a folder (adapter_config.json +
weights) rather than one file. The whole of LoRA for our needs is ~150 lines, so we own it.

How: ``LoRALayer`` wraps a Linear / Conv1d / Conv2d (any kernel size, stride, groups) as
``W = W0 + (alpha / rank) B A`` with ``A: [rank, fan_in]`` (Kaiming-uniform), ``B: [out, rank]`` (zeros,
so an injected net computes exactly what the base did). The effective weight is exposed as the wrapper's
``.weight`` property, so code that reads ``layer.weight`` sees the adapted weight too, and ``forward`` runs
ONE dense op with it (the rank-r product costs out*r*fan_in, far less than the conv itself). Base weights
are frozen (``requires_grad=False``); factors are float32 whatever the base dtype.

Files: one ``.safetensors`` with the factors (``<layer>.lora.A`` / ``.B``) and a ``diffrestore_lora`` JSON
metadata entry (rank, alpha, targets, layers, base model name and a fingerprint of the base weights);
loading onto a different base model is refused with a ``UserError``. ``LoRA`` is not in the ADIR paper
(which fine-tunes all of θ); it is a diffrestore option and is labelled so.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.errors import UserError

__all__ = [
    "DEFAULT_TARGETS",
    "LoRALayer",
    "base_fingerprint",
    "inject_lora",
    "lora_layers",
    "lora_parameters",
    "lora_state_dict",
    "lora_state_params",
    "load_lora",
    "load_lora_file",
    "merge_lora",
    "read_lora_file",
    "save_lora",
    "unmerge_lora",
]

META_KEY = "diffrestore_lora"
FORMAT_VERSION = 1
# Every Linear / Conv layer; ``("*qkv", "*proj_out")`` would adapt attention only, and so on.
DEFAULT_TARGETS: tuple[str, ...] = ("*",)
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _Factors(nn.Module):
    """The trainable pair (A, B), kept in a child module so the wrapper's first parameter is the base
    weight (ADM reads a block's dtype from ``next(parameters())``)."""

    def __init__(self, rank: int, fan_in: int, fan_out: int, device: torch.device,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        a = torch.empty(rank, fan_in, dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # LoRA's (and nn.Linear's) init
        self.A = nn.Parameter(a.to(device))
        self.B = nn.Parameter(torch.zeros(fan_out, rank, dtype=torch.float32, device=device))


class LoRALayer(nn.Module):
    """``base`` with weight ``W0 + (alpha/rank) B A``; ``forward`` = the base op with that weight."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(base, _SUPPORTED):
            raise TypeError(f"LoRA supports Linear/Conv1d/Conv2d, not {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        base.requires_grad_(False)
        self.base = base
        w = base.weight
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.lora = _Factors(self.rank, w[0].numel(), w.shape[0], w.device, generator)
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The low-rank update in the base weight's shape and dtype."""
        w = self.base.weight
        return (self.scale * (self.lora.B @ self.lora.A)).reshape(w.shape).to(w.dtype)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The effective (adapted) weight; after ``merge`` the base weight already holds it."""
        return self.base.weight if self.merged else self.base.weight + self.delta()

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Linear):
            return F.linear(x, self.weight, self.bias)
        return self.base._conv_forward(x, self.weight, self.bias)  # stride/padding/groups of the base

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (inference without the extra product)."""
        if not self.merged:
            self.base_digest = _digest(self.base.weight)  # the base identity survives merging
            self.base.weight.add_(self.delta())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge`` (up to float rounding) so the factors can be trained again."""
        if self.merged:
            self.base.weight.sub_(self.delta())
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in targets)


def lora_layers(net: nn.Module) -> dict[str, LoRALayer]:
    """The injected layers by qualified name."""
    return {n: m for n, m in net.named_modules() if isinstance(m, LoRALayer)}


def inject_lora(
    net: nn.Module,
    rank: int = 4,
    alpha: float | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    *,
    generator: torch.Generator | None = None,
    freeze: bool = True,
) -> list[str]:
    """Wrap every Linear/Conv1d/Conv2d whose qualified name matches a glob in ``targets``; returns the
    names (sorted). ``alpha`` defaults to ``rank`` (scale 1). ``freeze`` makes ALL other parameters of
    ``net`` non-trainable, so only the factors train. In place: call it on a copy
    (``Denoiser.copy_for_adaptation``), never on a shared network."""
    if isinstance(targets, str):
        targets = (targets,)
    alpha = float(rank if alpha is None else alpha)
    if lora_layers(net):
        raise ValueError("network already has LoRA layers")
    if freeze:
        net.requires_grad_(False)
    found = [
        (n, m) for n, m in net.named_modules()
        if n and isinstance(m, _SUPPORTED) and _matches(n, targets)
    ]
    if not found:
        raise UserError(f"no Linear/Conv layer matches the LoRA targets {list(targets)}")
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, LoRALayer(module, rank, alpha, generator=generator))
    return sorted(n for n, _ in found)


def lora_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The trainable factors, in a stable (name) order."""
    return [p for _, p in sorted(lora_state_params(net).items())]


def lora_state_params(net: nn.Module) -> dict[str, nn.Parameter]:
    """The factors by parameter name (``<layer>.lora.A`` / ``.B``)."""
    return {n: m for n, m in net.named_parameters() if n.endswith((".lora.A", ".lora.B"))}


def lora_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>.lora.A": ..., "<layer>.lora.B": ...}`` (detached float32 CPU copies)."""
    return {n: p.detach().float().cpu().clone() for n, p in sorted(lora_state_params(net).items())}


def load_lora(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy factors into an injected ``net``; exact key and shape match required (``UserError``)."""
    params = lora_state_params(net)
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise UserError(
            f"LoRA state does not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        for n, p in params.items():
            if tuple(p.shape) != tuple(state[n].shape):
                raise UserError(
                    f"LoRA factor {n}: shape {tuple(state[n].shape)}, network has {tuple(p.shape)}"
                )
            p.copy_(state[n].to(p))


def merge_lora(net: nn.Module) -> None:
    """Fold every adapter into its base weight."""
    for m in lora_layers(net).values():
        m.merge()


def unmerge_lora(net: nn.Module) -> None:
    """Undo ``merge_lora``."""
    for m in lora_layers(net).values():
        m.unmerge()


def _digest(t: torch.Tensor) -> bytes:
    v = t.detach().float().cpu().contiguous()
    return hashlib.sha256(str(tuple(v.shape)).encode() + v.numpy().tobytes()).digest()


def base_fingerprint(net: nn.Module) -> str:
    """SHA-256 (16 hex) of the BASE weights (names with ``.base`` folded away, LoRA factors left out; a merged
    layer counts with the weight it had before merging), so an adapter only loads onto its own base net."""
    h = hashlib.sha256()
    merged = {f"{n}.base.weight": m for n, m in lora_layers(net).items() if m.merged}
    for name, t in sorted(net.state_dict().items()):
        if name.endswith((".lora.A", ".lora.B")):
            continue
        h.update(name.replace(".base.", ".").encode())
        h.update(merged[name].base_digest if name in merged else _digest(t))
    return h.hexdigest()[:16]


def _info(net: nn.Module, base_name: str | None) -> dict[str, Any]:
    layers = lora_layers(net)
    if not layers:
        raise ValueError("network has no LoRA layers")
    ranks = {m.rank for m in layers.values()}
    alphas = {m.alpha for m in layers.values()}
    return {
        "format": FORMAT_VERSION,
        "rank": ranks.pop() if len(ranks) == 1 else sorted(ranks),
        "alpha": alphas.pop() if len(alphas) == 1 else sorted(alphas),
        "layers": sorted(layers),
        "base_model": base_name,
        "base_fingerprint": base_fingerprint(net),
    }


def save_lora(net: nn.Module, path: str | Path, *, base_name: str | None = None,
              targets: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter as one safetensors file (atomic) with its JSON header; returns the path."""
    from safetensors.torch import save_file

    from diffrestore.io.atomic import atomic_path

    path = Path(path).expanduser()
    info = _info(net, base_name) | {"targets": list(targets) if targets is not None else None}
    if extra:
        info["extra"] = extra
    with atomic_path(path) as tmp:
        save_file(lora_state_dict(net), str(tmp), metadata={META_KEY: json.dumps(info)})
    return path


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(factors, header)`` of an adapter file; ``UserError`` if it is not one."""
    from safetensors import safe_open

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"LoRA adapter file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(f"{p} is not a safetensors file: {e}") from None
    if META_KEY not in meta:
        raise UserError(f"{p} is not a diffrestore LoRA adapter (no {META_KEY} header)")
    return state, json.loads(meta[META_KEY])


def load_lora_file(net: nn.Module, path: str | Path, *, base_name: str | None = None,
                   generator: torch.Generator | None = None) -> dict[str, Any]:
    """Load an adapter file onto ``net`` (injecting the recorded layers first if needed); returns its
    header. Refuses (``UserError``) an adapter made for another base model: by name when both names are
    known, and always by the base-weight fingerprint."""
    state, info = read_lora_file(path)
    if base_name is not None and info.get("base_model") not in (None, base_name):
        raise UserError(f"LoRA adapter {path} was trained on model {info['base_model']!r}, not {base_name!r}")
    if not lora_layers(net):
        rank, alpha = info["rank"], info["alpha"]
        if not isinstance(rank, int | float) or not isinstance(alpha, int | float):
            raise UserError(f"{path}: mixed ranks/alphas are not supported")
        inject_lora(net, int(rank), float(alpha), targets=list(info["layers"]), generator=generator)
    fp = base_fingerprint(net)
    if info.get("base_fingerprint") not in (None, fp):
        raise UserError(
            f"LoRA adapter {path} does not match this base model's weights "
            f"(fingerprint {info['base_fingerprint']} != {fp})"
        )
    load_lora(net, state)
    return info
