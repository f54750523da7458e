"""ResShift's Swin-UNet (``UNetModelSwin``) with the official ``state_dict`` keys and numerics.

Everything but the Swin layers is ADM's (``ResBlock``/``Downsample``/``Upsample`` from :mod:`.adm`). The
Swin parts reproduce the official code's quirks on purpose, because the released weights were trained with
them: GroupNorm instead of LayerNorm, windows and shifts fixed at construction from ``img_size = ds``, and the
official (buggy) shifted-window mask, which only splits the windows of the last window row by in-window
column. Window attention runs as ONE ``scaled_dot_product_attention`` call per mask group with an additive
float mask (relative position bias + window mask), windows folded into the batch dimension: no Python loops
over windows or heads, and no per-window mask copies for large run-time inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.errors import UserError
from diffrestore.nets.adm import Downsample, ResBlock, TimestepBlock, TimestepEmbedSequential, Upsample
from diffrestore.nets.layers import adm_timestep_embedding, normalization

__all__ = [
    "WindowAttention",
    "SwinTransformerBlock",
    "BasicLayer",
    "UNetModelSwin",
    "build_swinunet",
    "relative_position_index",
    "official_shift_mask",
]

MASK_VALUE = -100.0  # the official mask uses -100, not -inf


def relative_position_index(window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Standard Swin index [N, N]: (r_a - r_b + w - 1) * (2w - 1) + (c_a - c_b + w - 1), int64."""
    r = torch.arange(window, device=device)
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    rr, cc = rr.reshape(-1), cc.reshape(-1)
    dr = rr[:, None] - rr[None, :] + window - 1
    dc = cc[:, None] - cc[None, :] + window - 1
    return (dr * (2 * window - 1) + dc).to(torch.int64)


def _column_split(window: int, shift: int, device: torch.device | str | None = None) -> torch.Tensor:
    """[N, N] bool: token pairs whose in-window columns fall on different sides of ``window - shift``."""
    side = torch.arange(window * window, device=device) % window >= window - shift
    return side[:, None] != side[None, :]


def official_shift_mask(
    height: int, width: int, window: int, shift: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The official ``calculate_mask`` result [nW, N, N] (float, 0 / -100) for an H x W feature map.

    Only windows in the last window row get a mask, splitting tokens by in-window column; every other window
    (also the last column and the bottom-right corner's row split) is unmasked. Kept as a function because
    the persistent ``attn_mask`` buffers must equal it.
    """
    nh, nw = height // window, width // window
    n = window * window
    mask = torch.zeros(nh * nw, n, n, device=device)
    mask[(nh - 1) * nw :] = _column_split(window, shift, device).to(mask.dtype) * MASK_VALUE
    return mask


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nH, nW, w*w, C); windows row-major, tokens row-major inside a window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // window, w // window, window * window, c)


def _from_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: (B, nH, nW, w*w, C) -> (B, H, W, C)."""
    b, nh, nw, _, c = x.shape
    x = x.view(b, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * window, nw * window, c)


class WindowAttention(nn.Module):
    """Multi-head window attention with a learned relative position bias (keys as official)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def bias(self) -> torch.Tensor:
        """Relative position bias [heads, N, N]."""
        n = self.window_size**2
        table = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return table.view(n, n, self.num_heads).permute(2, 0, 1)

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """qkv [M, N, 3C] (M windows) + additive mask broadcastable to [M, heads, N, N] -> [M, N, C]."""
        m, n, _ = qkv.shape
        d = self.dim // self.num_heads
        q, k, v = qkv.view(m, n, 3, self.num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        # SDPA's default scale is d^-0.5, the official q scaling; the mask is added to q@k^T * scale.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
        return out.transpose(1, 2).reshape(m, n, self.dim)

    def forward(self, windows: torch.Tensor, window_mask: torch.Tensor | None = None) -> torch.Tensor:
        """windows [M, N, C]; ``window_mask`` [M, N, N] (or None) -> [M, N, C]."""
        bias = self.bias()
        mask = bias[None] if window_mask is None else bias[None] + window_mask[:, None]
        return self.proj(self.attend(self.qkv(windows), mask))


class Mlp(nn.Module):
    """Two 1x1 convs with exact GELU (channels-first, as in the official Swin-UNet)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """x + attn(GN(x)); x + mlp(GN(x)) on [B, C, H, W], with (shifted) window attention.

    ``input_resolution`` is the construction resolution: it fixes window and shift (a feature map no larger
    than the window gets one unshifted window) and the stored ``attn_mask`` buffer (shifted blocks only),
    which is used when the run-time size equals it and recomputed by the same rule otherwise.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.input_resolution = (int(input_resolution[0]), int(input_resolution[1]))
        if min(self.input_resolution) <= window_size:
            shift_size, window_size = 0, min(self.input_resolution)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} / {window_size}")
        self.dim, self.window_size, self.shift_size = dim, window_size, shift_size
        self.norm1 = normalization(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = normalization(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift_size > 0:
            h, w = self.input_resolution
            mask = official_shift_mask(h, w, window_size, shift_size)
            self.register_buffer("attn_mask", mask, persistent=True)
        else:
            self.attn_mask = None

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W] (shift, partition, attend, merge, unshift)."""
        b, c, h, w = x.shape
        ws, s = self.window_size, self.shift_size
        if h % ws or w % ws:
            raise ValueError(
                f"Swin block: feature map {h}x{w} is not divisible by the window size {ws} "
                "(pad the input so every level is a multiple of the window)"
            )
        t = x.permute(0, 2, 3, 1)
        if s:
            t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))
        win = _to_windows(t, ws)  # (B, nH, nW, N, C)
        nh, nw, n = win.shape[1], win.shape[2], win.shape[3]
        attn = self.attn
        if s == 0:
            out = attn(win.reshape(-1, n, c))
        elif (h, w) == self.input_resolution:
            # stored buffer [nW, N, N]: small at construction size, so expanding over the batch is cheap
            mask = self.attn_mask.to(x.dtype)
            full = (attn.bias()[None] + mask[:, None]).repeat(b, 1, 1, 1)
            out = attn.proj(attn.attend(attn.qkv(win.reshape(-1, n, c)), full))
        else:
            # run-time size: by the official rule only the last window row differs (one shared mask),
            # so attend the two groups separately with broadcast masks instead of an nW-sized tensor.
            qkv = attn.qkv(win)  # (B, nH, nW, N, 3C)
            bias = attn.bias()[None]
            split = _column_split(ws, s, x.device).to(bias.dtype) * MASK_VALUE
            parts = []
            if nh > 1:
                parts.append(attn.attend(qkv[:, :-1].reshape(-1, n, 3 * c), bias).view(b, nh - 1, nw, n, c))
            parts.append(attn.attend(qkv[:, -1:].reshape(-1, n, 3 * c), bias + split).view(b, 1, nw, n, c))
            out = attn.proj(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        t = _from_windows(out.reshape(b, nh, nw, n, c), ws)
        if s:
            t = torch.roll(t, shifts=(s, s), dims=(1, 2))
        return t.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._window_attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Proj(nn.Module):
    """1x1 conv under the official ``<name>.proj`` key (patch_embed / patch_unembed, no norm)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class BasicLayer(nn.Module):
    """patch_embed (1x1) -> ``depth`` Swin blocks (odd ones shifted) -> patch_unembed (1x1); no residual."""

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        num_heads: int,
        window_size: int,
        depth: int,
        img_size: int | tuple[int, int],
        mlp_ratio: float = 4.0,
        patch_norm: bool = False,
    ) -> None:
        super().__init__()
        if patch_norm:
            raise ValueError("resshift_swinunet: patch_norm=True is not supported (no release uses it)")
        res = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_embed = _Proj(in_chans, embed_dim)
        self.patch_unembed = _Proj(embed_dim, in_chans)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(embed_dim, res, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio)
            for i in range(depth)
        )

    def forward_with_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and each Swin block's output (embed_dim channels, before patch_unembed)."""
        h = self.patch_embed(x)
        taps = []
        for blk in self.blocks:
            h = blk(h)
            taps.append(h)
        return self.patch_unembed(h), taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for blk in self.blocks:
            h = blk(h)
        return self.patch_unembed(h)


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    out = [int(v) for v in value]
    if len(out) != levels:
        raise ValueError(f"num_res_blocks has {len(out)} entries for {levels} levels")
    return out


class UNetModelSwin(nn.Module):
    """Official ``UNetModelSwin``: ``forward(x, timesteps, lq=None)``; x and lq at the same resolution.

    ``attention_resolutions`` are feature-map sizes compared with ``ds`` (starting at ``image_size``); a
    BasicLayer follows the first ResBlock of every such level, on both sides, and sits in the middle block.
    ``use_fp16`` is accepted but ignored: the run-time dtype follows the parameters.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int | Sequence[int],
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = -1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        swin_depth: int = 2,
        swin_embed_dim: int = 96,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        patch_norm: bool = False,
        cond_lq: bool = True,
        cond_mask: bool = False,
        lq_size: int = 256,
    ) -> None:
        super().__init__()
        if dims != 2:
            raise ValueError(f"resshift_swinunet: only dims=2 is supported (got {dims})")
        if cond_mask:
            raise ValueError("resshift_swinunet: cond_mask=True is not supported")
        if cond_lq and lq_size != image_size:
            raise ValueError(
                "resshift_swinunet: only lq_size == image_size (identity feature extractor) is supported"
            )
        if num_head_channels == -1:
            if num_heads <= 0:
                raise ValueError("resshift_swinunet: set num_head_channels or num_heads")
            heads = num_heads
        else:
            heads = swin_embed_dim // num_head_channels
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_resolutions = tuple(int(a) for a in attention_resolutions)
        nrb = _per_level(num_res_blocks, len(channel_mult))
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.cond_lq, self.use_fp16 = model_channels, cond_lq, use_fp16
        self.window_size = window_size
        ted = model_channels * 4

        def swin(ch: int, ds: int) -> BasicLayer:
            return BasicLayer(ch, swin_embed_dim, heads, window_size, swin_depth, ds, mlp_ratio, patch_norm)

        def res(cin: int, cout: int, **kw: Any) -> ResBlock:
            return ResBlock(cin, ted, dropout, out_channels=cout, dims=dims,
                            use_scale_shift_norm=use_scale_shift_norm, **kw)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        ch = model_channels * channel_mult[0]
        cin = in_channels + (3 if cond_lq else 0)  # [x, lq] concatenated on channels
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cin, ch, 3, padding=1))])
        chans, ds = [ch], image_size
        for level, mult in enumerate(channel_mult):
            for jj in range(nrb[level]):
                layers: list[nn.Module] = [res(ch, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions and jj == 0:
                    layers.append(swin(ch, ds))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, dims, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds //= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), swin(ch, ds), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(nrb[level] + 1):
                layers = [res(ch + chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == nrb[level]:
                    up = res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, dims, ch)
                    layers.append(up)
                    ds *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        # Input sides must be multiples of this: every level's map must split into whole windows.
        self.divisor = 2 ** (len(channel_mult) - 1)
        for level in range(len(channel_mult)):
            ds_l = image_size // 2**level
            if ds_l in attention_resolutions or level == len(channel_mult) - 1:
                self.divisor = math.lcm(self.divisor, min(window_size, ds_l) * 2**level)

    def _run(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        lq: torch.Tensor | None,
        taps: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        if self.cond_lq:
            if lq is None:
                raise ValueError("this Swin-UNet is LQ-conditioned: pass lq (same spatial size as x)")
            if lq.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"lq {tuple(lq.shape[-2:])} must have the spatial size of x {tuple(x.shape[-2:])}"
                )
        dtype = self.time_embed[0].weight.dtype
        t = torch.as_tensor(timesteps, device=x.device)
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        emb = self.time_embed(adm_timestep_embedding(t, self.model_channels).to(dtype))
        h = torch.cat([x, lq.to(x.dtype)], dim=1) if self.cond_lq else x
        h = h.to(dtype)
        hs = []
        for i, module in enumerate(self.input_blocks):
            if taps is not None and i == 1 and len(module) > 1 and isinstance(module[1], BasicLayer):
                h = module[0](h, emb)
                h, blk = module[1].forward_with_taps(h)
                for j, tap in enumerate(blk):
                    taps[f"h_input_blocks_1_swin_block{j}"] = tap
                for extra in list(module)[2:]:
                    h = extra(h, emb) if isinstance(extra, TimestepBlock) else extra(h)
            else:
                h = module(h, emb)
            if taps is not None and i == 1:
                taps["h_input_blocks_1"] = h
            hs.append(h)
        h = self.middle_block(h, emb)
        if taps is not None:
            taps["h_middle_block"] = h
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor | float, lq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict x0 of the latent; ``timesteps`` are the integer step indices the sampler passes."""
        return self._run(x, timesteps, lq, None)

    def forward_with_taps(
        self, x: torch.Tensor, timesteps: torch.Tensor | float, lq: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``forward`` plus the debug taps of the refs vector (``out``, ``h_input_blocks_1``, ...)."""
        taps: dict[str, torch.Tensor] = {}
        taps["out"] = self._run(x, timesteps, lq, taps)
        return taps


_SWIN_KWARGS = {
    "image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
    "dropout", "channel_mult", "conv_resample", "dims", "use_checkpoint", "use_fp16", "num_heads",
    "num_head_channels", "use_scale_shift_norm", "resblock_updown", "swin_depth", "swin_embed_dim",
    "window_size", "mlp_ratio", "patch_norm", "cond_lq", "cond_mask", "lq_size",
}


def build_swinunet(config: dict[str, Any]) -> UNetModelSwin:
    """Build from the official ``UNetModelSwin`` kwargs (refs config.json / manifest ``config``)."""
    cfg = dict(config)
    extra = sorted(set(cfg) - _SWIN_KWARGS)
    if extra:  # a typo'd key would silently build another network
        raise UserError(f"resshift_swinunet config: unknown key(s) {', '.join(extra)}")
    return UNetModelSwin(**{k: v for k, v in cfg.items() if k in _SWIN_KWARGS})
