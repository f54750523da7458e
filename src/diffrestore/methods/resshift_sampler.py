"""ResShift sampling (METHODS §6) as pure functions, following the official ``ResShiftSampler`` exactly.

Why these pieces and not one function: a generic tiling layer wants to batch chops of one or many images and
blend them with its own weights, so the reverse chain on an already prepared ``y0`` slice is its own function
(:func:`resshift_denoise`, per-tile noise ``streams``); :func:`resshift_sample` is the official per-patch
``sample_func`` (reflect pad, bicubic up, encode, denoise, decode, crop, clamp) and :func:`resshift_chopped`
the official whole-image inference (overlapping chops, plain averaging), kept separate so it reproduces the
refs vectors. Official conventions kept on purpose (refs README "ResShift reference data"):

* y0 = encode(bicubic x``scale`` of the LQ) with torch bicubic (align_corners=False, a = -0.75), NOT clamped;
  in pixel space (no VQ) y0 is that upsampled image itself.
* the network gets ``x_t / sqrt(kappa^2 eta_t + 1)``, the integer step index t, and ``lq`` = the padded LQ
  (latent space: LQ resolution = latent resolution) or y0 (pixel space: the network runs at HR resolution);
* a noise tensor is drawn at EVERY step, also at t = 0 where it is multiplied by 0 (replays depend on it);
* x0 predictions are clipped only in pixel space (official ``clip_denoised = autoencoder is None``);
* the final latent is vector-quantised by ``vq.decode``; the output is cropped, then clamped to [-1, 1].

Images are ``[B, 3, H, W]`` in [-1, 1]. Every random draw goes through a :class:`NoiseSource`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.diffusion.resshift_schedule import ResShiftSchedule
from diffrestore.errors import UserError

__all__ = [
    "Callback",
    "chop_boxes",
    "chop_starts",
    "default_chop_stride",
    "default_pad_multiple",
    "reflect_pad",
    "resshift_chopped",
    "resshift_condition",
    "resshift_decode",
    "resshift_denoise",
    "resshift_sample",
    "upsample_lq",
]


class Callback(Protocol):
    """``callback(step, total, **info)`` after every reverse step (0-based ``step``)."""

    def __call__(self, step: int, total: int, **info: Any) -> None: ...


class _VQ(Protocol):
    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, h: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor: ...


def _dtype_of(module: nn.Module | Any, fallback: torch.dtype = torch.float32) -> torch.dtype:
    try:
        return next(module.parameters()).dtype
    except (AttributeError, StopIteration):
        return fallback


def upsample_lq(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """Official y0 image: torch bicubic x``scale`` (align_corners=False, no antialias), NOT clamped."""
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)


def reflect_pad(lq: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to multiples of ``multiple`` by ``F.pad(mode='reflect')`` (official ``sample_func``).

    Where the official code would fail (pad >= side) the reflection is applied repeatedly, and a side of 1
    is replicated; results for inputs the official code accepts are unchanged.
    """
    h, w = lq.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = lq
    while ph > 0 or pw > 0:
        hh, ww = x.shape[-2:]
        sh = min(ph, hh - 1) if hh > 1 else 0
        sw = min(pw, ww - 1) if ww > 1 else 0
        if sh == 0 and sw == 0:  # 1-pixel side: nothing to reflect
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            break
        x = F.pad(x, (0, sw, 0, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x


def default_pad_multiple(net: nn.Module, scale: int, latent: bool) -> int:
    """LQ padding multiple: the official ``lq_size`` (= ``image_size``) in latent space; in pixel space the
    smallest LQ multiple whose x``scale`` image splits into the network's windows at every level."""
    divisor = int(getattr(net, "divisor", 1))
    if latent:
        return int(getattr(net, "image_size", divisor))
    return divisor // math.gcd(divisor, int(scale))


def resshift_condition(
    lq_padded: torch.Tensor, *, scale: int, vq: _VQ | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y0, cond)`` of padded LQ patches: y0 = (encoded) bicubic upsampling, cond = the network's ``lq``."""
    up = upsample_lq(lq_padded, scale)
    if vq is None:
        return up, up
    y0 = vq.encode(up.to(_dtype_of(vq))).float()
    if y0.shape[-2:] != lq_padded.shape[-2:]:
        raise UserError(
            f"latent ResShift needs the VQ downsampling to equal the SR scale: latent {tuple(y0.shape[-2:])} "
            f"vs LQ {tuple(lq_padded.shape[-2:])}"
        )
    return y0, lq_padded


def _f32(schedule: ResShiftSchedule, name: str, t: int, device: torch.device) -> torch.Tensor:
    """One coefficient as a float32 scalar tensor (the official ``_extract_into_tensor`` cast)."""
    return schedule.tensor(name, device=device)[t]


def resshift_denoise(
    net: nn.Module,
    y0: torch.Tensor,
    cond: torch.Tensor,
    schedule: ResShiftSchedule,
    *,
    noise: NoiseSource,
    streams: Sequence[Stream] | None = None,
    callback: Callback | None = None,
    clip_x0: bool = False,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """The reverse chain for ONE batch of chops/tiles: from ``y0`` ([B, C, h, w], latent or pixel) to the
    final x0 estimate (not decoded).

    ``cond`` is the network's ``lq`` input (same spatial size as y0). One noise draw for x_T (unless
    ``x_T`` is given) and one per step, each via :func:`draw_batch` with ``streams`` (one per batch element,
    so a tile's numbers do not depend on what it is batched with). ``callback(step, total, t=, x_t=,
    model_in=, model_out=, x0=, mean=, x_next=)`` after every step.
    """
    dev = y0.device
    y0 = y0.float()
    T = schedule.steps
    net_dtype = _dtype_of(net)
    cond_n = cond.to(net_dtype)
    if x_T is None:
        prior_std = torch.tensor(schedule.kappa * schedule.sqrt_etas, dtype=torch.float32, device=dev)[T - 1]
        x = y0 + prior_std * draw_batch(noise, y0.shape, streams, dtype=torch.float32, device=dev)
    else:
        x = x_T.float()
    etas = schedule.tensor("etas", device=dev)
    kappa2 = float(schedule.kappa) ** 2
    for i, t in enumerate(range(T - 1, -1, -1)):
        model_in = x / torch.sqrt(etas[t] * kappa2 + 1)
        tt = torch.full((x.shape[0],), t, dtype=torch.int64, device=dev)
        out = net(model_in.to(net_dtype), tt, lq=cond_n).float()
        x0 = out.clamp(-1.0, 1.0) if clip_x0 else out
        mean = _f32(schedule, "coef1", t, dev) * x + _f32(schedule, "coef2", t, dev) * x0
        z = draw_batch(noise, x.shape, streams, dtype=torch.float32, device=dev)
        std = torch.exp(0.5 * _f32(schedule, "posterior_log_variance_clipped", t, dev))
        nonzero = torch.tensor(float(t != 0), dtype=torch.float32, device=dev)
        x_next = mean + nonzero * std * z
        if callback is not None:
            callback(i, T, t=t, x_t=x, model_in=model_in, model_out=out, x0=x0, mean=mean, x_next=x_next)
        x = x_next
    return x


def resshift_decode(
    z: torch.Tensor, *, vq: _VQ | None = None, hw: tuple[int, int] | None = None
) -> torch.Tensor:
    """Final image: ``vq.decode`` (quantising, as officially) or the pixel-space x0, cropped to ``hw``
    (HR size before padding), clamped to [-1, 1]."""
    img = z if vq is None else vq.decode(z.to(_dtype_of(vq))).float()
    if hw is not None:
        img = img[..., : hw[0], : hw[1]]
    return img.clamp(-1.0, 1.0)


def resshift_sample(
    net: nn.Module,
    lq: torch.Tensor,
    schedule: ResShiftSchedule,
    *,
    noise: NoiseSource,
    streams: Sequence[Stream] | None = None,
    vq: _VQ | None = None,
    callback: Callback | None = None,
    scale: int = 4,
    pad_multiple: int | None = None,
    clip_x0: bool | None = None,
) -> torch.Tensor:
    """Restore one batch of LQ patches ``[B, 3, h, w]`` in [-1, 1] -> ``[B, 3, h*scale, w*scale]`` in [-1, 1].

    The official ``sample_func``: reflect-pad to ``pad_multiple`` (default :func:`default_pad_multiple`),
    condition, :func:`resshift_denoise`, decode, crop, clamp. ``clip_x0=None`` follows the official rule
    (clip only without a VQ).
    """
    if lq.dim() != 4 or lq.shape[1] != 3:
        raise UserError(f"ResShift expects LQ images [B, 3, H, W], got {tuple(lq.shape)}")
    h, w = lq.shape[-2:]
    mult = pad_multiple or default_pad_multiple(net, scale, vq is not None)
    with torch.no_grad():
        padded = reflect_pad(lq.float(), mult)
        y0, cond = resshift_condition(padded, scale=scale, vq=vq)
        z = resshift_denoise(net, y0, cond, schedule, noise=noise, streams=streams, callback=callback,
                             clip_x0=(vq is None) if clip_x0 is None else clip_x0)
        return resshift_decode(z, vq=vq, hw=(h * scale, w * scale))


def chop_starts(length: int, chop: int, stride: int) -> list[int]:
    """Official ``ImageSpliterTh`` starts along one side: range(0, L, stride) with overshooting starts
    clamped to L - chop, duplicates dropped (order kept); a side <= chop gives [0]."""
    if length <= chop:
        return [0]
    out: list[int] = []
    for s in range(0, length, stride):
        s = length - chop if s + chop > length else s
        if s not in out:
            out.append(s)
    return out


def chop_boxes(height: int, width: int, chop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """LQ boxes ``(top, left, height, width)`` in the official row-major order (height start outer)."""
    hs, ws = chop_starts(height, chop, stride), chop_starts(width, chop, stride)
    return [(t, le, min(chop, height), min(chop, width)) for t in hs for le in ws]


def default_chop_stride(chop: int) -> int:
    """The official stride for the CLI's chop sizes (512 -> 448, 256 -> 224, 64 -> 48), else 7/8 of it."""
    return {512: 448, 256: 224, 64: 48}.get(int(chop), max(1, int(chop) * 7 // 8))


def resshift_chopped(
    net: nn.Module,
    lq: torch.Tensor,
    schedule: ResShiftSchedule,
    *,
    noise: NoiseSource,
    vq: _VQ | None = None,
    chop_size: int = 512,
    chop_stride: int | None = None,
    scale: int = 4,
    batch: int = 1,
    callback: Callback | None = None,
    pad_multiple: int | None = None,
    clip_x0: bool | None = None,
) -> torch.Tensor:
    """Official whole-image inference: if H or W > ``chop_size`` (LQ pixels), overlapping chops are restored
    (``batch`` chops per network batch) and their clamped outputs averaged uniformly; else one
    :func:`resshift_sample`. Chop k of image b draws from stream ``(b, k)``; with ``batch=1`` and one image
    the draw order is the official one (1 + T draws per chop, chops row-major), so refs replays match.
    ``callback`` gets a running step over all chop batches and ``boxes=`` (the LQ boxes of the batch).
    """
    if lq.dim() != 4 or lq.shape[1] != 3:
        raise UserError(f"ResShift expects LQ images [B, 3, H, W], got {tuple(lq.shape)}")
    if batch < 1 or chop_size < 1:
        raise UserError("chop size and batch must be >= 1")
    b, _, h, w = lq.shape
    if h <= chop_size and w <= chop_size:
        streams = [(i, 0) for i in range(b)]
        return resshift_sample(net, lq, schedule, noise=noise, streams=streams, vq=vq, callback=callback,
                               scale=scale, pad_multiple=pad_multiple, clip_x0=clip_x0)
    stride = chop_stride or default_chop_stride(chop_size)
    boxes = chop_boxes(h, w, chop_size, stride)
    acc = torch.zeros(b, 3, h * scale, w * scale, dtype=torch.float32, device=lq.device)
    cnt = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32, device=lq.device)
    groups = [list(range(i, min(i + batch, len(boxes)))) for i in range(0, len(boxes), batch)]
    T = schedule.steps
    for gi, group in enumerate(groups):
        crops = torch.cat([lq[:, :, t : t + hh, le : le + ww] for t, le, hh, ww in (boxes[k] for k in group)])
        streams = [(i, k) for k in group for i in range(b)]

        def cb(step: int, total: int, _gi: int = gi, _g: list[int] = group, **info: Any) -> None:
            assert callback is not None
            callback(_gi * T + step, len(groups) * T, boxes=[boxes[k] for k in _g], **info)

        out = resshift_sample(net, crops, schedule, noise=noise, streams=streams, vq=vq,
                              callback=cb if callback is not None else None, scale=scale,
                              pad_multiple=pad_multiple, clip_x0=clip_x0)
        for j, k in enumerate(group):
            t, le, hh, ww = boxes[k]
            ys, xs = slice(t * scale, (t + hh) * scale), slice(le * scale, (le + ww) * scale)
            acc[:, :, ys, xs] += out[j * b : (j + 1) * b]
            cnt[:, :, ys, xs] += 1
    return acc / cnt
