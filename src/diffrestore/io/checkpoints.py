"""Read and write network weights without ever executing code from a file.

Checkpoints come from the internet, so ``.pt``/``.pth``/``.ckpt``/``.bin`` files are only opened with
``torch.load(weights_only=True)`` (a restricted unpickler that accepts tensors and plain containers) and
``.safetensors`` files with safetensors. Anything that would need a real unpickler is refused with a
one-line :class:`UserError` instead of being loaded.

Wrapping rules follow the official loaders (see ``shared/refs/README.md``): a top-level ``state_dict`` (or
``ema`` / ``model``) entry holding a dict of tensors is unwrapped, and ``module.`` / ``_orig_mod.`` prefixes
(DataParallel / ``torch.compile``) are stripped when the FIRST key carries them, as ResShift's loader decides.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from diffrestore.errors import UserError
from diffrestore.io.atomic import atomic_path, follow_link_file

StateDict = dict[str, Tensor]

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Checked in this order; "ema" before "model": a training checkpoint holding both samples with its EMA.
WRAPPER_KEYS = ("state_dict", "ema", "model")
PREFIXES = ("module.", "_orig_mod.")
ORDER_KEY = "diffrestore.key_order"  # safetensors metadata entry holding the original key order


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _first(e: BaseException) -> str:
    """First line of an exception message, short enough for a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0][:120] if text else type(e).__name__


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        if m is None:  # not a disallowed object, just bytes the unpickler cannot parse
            msg = f"{path} is not a readable torch checkpoint (corrupt or truncated?): {_first(e)}"
            raise UserError(msg) from None
        raise UserError(
            f"{path} contains pickled Python objects ({m.group(1)}); refusing to unpickle untrusted code "
            "(convert it to .safetensors with a tool you trust)"
        ) from None
    except Exception as e:  # a damaged file can fail anywhere in the zip reader or the unpickler
        msg = f"{path} is not a readable torch checkpoint (corrupt or truncated?): {_first(e)}"
        raise UserError(msg) from None


def _safetensors_load(path: Path) -> StateDict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError plus OSError/ValueError
        msg = f"{path} is not a readable .safetensors file (corrupt or truncated?): {_first(e)}"
        raise UserError(msg) from None
    # safetensors stores keys sorted; restore state_dict() order when we wrote the file ourselves.
    try:
        order = json.loads(meta.get(ORDER_KEY, "[]"))
    except ValueError:
        order = []
    if isinstance(order, list) and all(isinstance(k, str) for k in order) and order and set(order) == set(sd):
        sd = {k: sd[k] for k in order}
    return sd


def unwrap(obj: object, source: str = "checkpoint") -> StateDict:
    """Reduce a loaded checkpoint object to a flat ``{key: tensor}`` dict (wrappers and prefixes removed)."""
    for _ in range(3):  # at most a few nested wrappers, e.g. {"state_dict": {"model": {...}}}
        if _is_tensor_dict(obj):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
            keys = ", ".join(map(str, list(obj)[:6]))
            raise UserError(f"{source} holds no state_dict of tensors (top-level keys: {keys or 'none'})")
        raise UserError(f"{source} holds a {type(obj).__name__}, not a state_dict of tensors")
    if not _is_tensor_dict(obj):
        raise UserError(f"{source} holds no state_dict of tensors (non-tensor values inside)")
    sd: StateDict = dict(obj)  # type: ignore[arg-type]
    changed = True
    while changed:  # "module._orig_mod.x" (DDP around compile) strips both, decided from the first key
        changed = False
        first = next(iter(sd))
        for p in PREFIXES:
            if first.startswith(p):
                sd = {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict(path: str | os.PathLike) -> StateDict:
    """Load a checkpoint file into a flat CPU ``{key: tensor}`` dict; never runs pickled code."""
    path = follow_link_file(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj: object = _safetensors_load(path)
    elif suffix in TORCH_SUFFIXES:
        obj = _torch_load(path)
    else:
        known = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise UserError(f"unsupported checkpoint extension {suffix or '(none)'!r} for {path} (use {known})")
    return unwrap(obj, str(path))


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _shape(t: Tensor) -> str:
    return "[" + ",".join(map(str, t.shape)) + "]"


def check_keys(expected: Mapping[str, Tensor], sd: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise one ``UserError`` line naming missing, unexpected and mis-shaped keys (if any)."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    bad = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or bad):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if bad:
        shown = [f"{k} file {_shape(sd[k])} vs network {_shape(expected[k])}" for k in bad]
        parts.append(f"{len(bad)} mis-shaped key(s): {_few(shown, 2)}")
    raise UserError(f"{source} does not match the network: " + "; ".join(parts))


def _has_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in model.parameters()) or any(t.is_meta for t in model.buffers())


def load_into(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load weights strictly into ``model`` (shapes checked first, floats cast, integer buffers kept).

    ``dtype`` (a floating dtype) converts the model's floating parameters/buffers too, so a bf16 model never
    needs an fp32 copy. A model built under ``torch.device("meta")`` is filled with ``assign=True`` (no
    second copy of the weights); non-persistent buffers of such a model stay on meta, the caller checks.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state_dict"
        sd = unwrap(path_or_state_dict, source)
    else:
        source = str(path_or_state_dict)
        sd = load_state_dict(path_or_state_dict)
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"load_into dtype must be floating, got {dtype}")
        model.to(dtype)
    expected = model.state_dict()
    check_keys(expected, sd, source)
    cast: StateDict = {}
    for k, want in expected.items():
        t = sd[k]
        if want.dtype.is_floating_point and t.dtype.is_floating_point:
            t = t.to(want.dtype)
        elif not want.dtype.is_floating_point:
            t = t.to(want.dtype)  # e.g. int64 relative_position_index stays integer
        else:
            raise UserError(f"{source}: key {k} has dtype {t.dtype}, the network expects a floating tensor")
        cast[k] = t
    assign = _has_meta(model)
    if assign:
        device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
        cast = {k: v.to(device).contiguous() for k, v in cast.items()}
    model.load_state_dict(cast, strict=True, assign=assign)
    return model


def save_state_dict(sd: Mapping[str, Tensor], path: str | os.PathLike) -> Path:
    """Write a plain ``{key: tensor}`` dict as ``.safetensors`` or ``.pt`` atomically (temp file + rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise UserError(f"unsupported checkpoint extension {suffix or '(none)'!r} for {path}")
    plain: StateDict = {}
    seen: set[int] = set()
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"state_dict value for {k!r} is {type(v).__name__}, not a tensor")
        v = v.detach().to("cpu").contiguous()
        storage = v.untyped_storage()
        # safetensors refuses shared storage and torch.save would write a whole parent storage: copy those.
        if storage.data_ptr() in seen or storage.nbytes() != v.numel() * v.element_size():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        plain[k] = v
    with atomic_path(path) as tmp:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            # save_file streams to disk (``save()`` would build the whole file in memory)
            save_file(plain, str(tmp), metadata={ORDER_KEY: json.dumps(list(plain))})
        else:
            torch.save(plain, tmp)
    return path
