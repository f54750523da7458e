"""DDPM ``Model`` (PyTorch port of Ho et al.) as used by SDEdit / DDRM / DDNM for CelebA-HQ 256.

Official state_dict keys (``temb.dense.N``, ``down.i.block.j``, ``mid.block_1`` ...), so the released
``celeba_hq.ckpt`` loads strictly. Numerics follow ``shared/refs/README.md``: sin-first embedding with
``/(half-1)``, GroupNorm eps 1e-6, asymmetric (0,1,0,1) padding before the stride-2 conv, single-head
attention with separate q/k/v convs (run through ``scaled_dot_product_attention``).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.nets.layers import GroupNorm32, ddpm_timestep_embedding, sdpa

__all__ = ["Model", "build_ddpm"]


def _norm(channels: int) -> nn.GroupNorm:
    # The official port uses a plain GroupNorm (no upcast); upcasting is identical in float32 and keeps
    # bf16 runs stable.
    return GroupNorm32(channels, eps=1e-6)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv (key ``conv``)."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, 3x3 conv stride 2 (TF "SAME" emulation); else 2x2 average pool."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """norm-swish-conv, + temb_proj(swish(temb)), norm-swish-dropout-conv; 1x1 shortcut if widths differ."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.0,
        temb_channels: int = 512,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = h + self.temb_proj(_swish(temb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with separate 1x1 q, k, v convs and ``proj_out``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.norm = _norm(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    @staticmethod
    def _tok(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return F.linear(x, conv.weight.flatten(1), conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, T, C): a view for channels_last input
        q, k, v = (self._tok(h, m)[:, None] for m in (self.q, self.k, self.v))  # (B, 1, T, C)
        a = sdpa(q, k, v)[:, 0]
        out = self._tok(a, self.proj_out).transpose(1, 2).reshape(b, c, hh, ww)
        return x + out


class Model(nn.Module):
    """DDPM UNet; ``forward(x, t)`` with ORIGINAL timesteps (float or int) -> eps ``[B, out_ch, H, W]``."""

    def __init__(self, config: Any):
        super().__init__()
        m, data, diff = config.model, config.data, config.diffusion
        ch, out_ch = int(m.ch), int(m.out_ch)
        ch_mult = tuple(int(c) for c in m.ch_mult)
        num_res_blocks = int(m.num_res_blocks)
        attn_resolutions: Sequence[int] = tuple(int(r) for r in m.attn_resolutions)
        dropout = float(m.dropout)
        in_channels = int(m.in_channels)
        resolution = int(data.image_size)
        resamp_with_conv = bool(m.resamp_with_conv)
        if getattr(m, "type", "simple") == "bayesian":
            self.logvar = nn.Parameter(torch.zeros(int(diff.num_diffusion_timesteps)))

        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(ch_mult)
        self.size_multiple = 2 ** (len(ch_mult) - 1)  # input sides must divide by this (skips)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(in_channels, ch, 3, stride=1, padding=1)

        curr_res = resolution
        in_ch_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out,
                                         temb_channels=self.temb_ch, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block = block
            down.attn = attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                curr_res //= 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)

        ups: list[nn.Module] = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            skip_in = ch * ch_mult[i_level]
            for i_block in range(num_res_blocks + 1):
                if i_block == num_res_blocks:
                    skip_in = ch * in_ch_mult[i_level]
                block.append(ResnetBlock(in_channels=block_in + skip_in, out_channels=block_out,
                                         temb_channels=self.temb_ch, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if i_level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                curr_res *= 2
            ups.insert(0, up)  # up.0 is the full-resolution level, as in the official state_dict
        self.up = nn.ModuleList(ups)

        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != x.shape[3] or x.shape[2] != self.resolution:
            raise ValueError(
                f"DDPM model expects square {self.resolution}x{self.resolution} inputs [B, C, H, W]; "
                f"got shape {tuple(x.shape)} (tile/patch size must equal the model's image_size)"
            )
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])
        dt = self.conv_in.weight.dtype
        temb = ddpm_timestep_embedding(t, self.ch).to(self.temb.dense[0].weight.dtype)
        temb = self.temb.dense[1](_swish(self.temb.dense[0](temb)))

        hs = [self.conv_in(x.to(dt))]
        for i_level in range(self.num_resolutions):
            down = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = down.block[i_block](hs[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(down.downsample(hs[-1]))

        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, temb)), temb)

        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = up.block[i_block](torch.cat([h, hs.pop()], dim=1), temb)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)

        h = self.conv_out(_swish(self.norm_out(h)))
        return h.to(x.dtype)


_MODEL_KEYS = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "in_channels",
               "resamp_with_conv", "type", "var_type", "ema_rate", "ema")


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    raise ValueError(f"ddpm config must be a dict or namespace, got {type(obj).__name__}")


def build_ddpm(config: Any) -> Model:
    """Build ``Model`` from the nested YAML tree ``{model, data, diffusion}``, a manifest, or a flat dict.

    Flat form: the ``model`` keys plus ``image_size`` (or ``resolution``) and optionally
    ``num_diffusion_timesteps`` at top level.
    """
    cfg = _to_dict(config)
    if "model" not in cfg and isinstance(cfg.get("config"), dict) and "model" in cfg["config"]:
        cfg = dict(cfg["config"])  # a whole manifest
    if "model" in cfg:
        model = _to_dict(cfg["model"])
        data = _to_dict(cfg.get("data", {}))
        diffusion = _to_dict(cfg.get("diffusion", {}))
    else:
        model = {k: v for k, v in cfg.items() if k in _MODEL_KEYS}
        data = {"image_size": cfg.get("image_size", cfg.get("resolution"))}
        diffusion = {"num_diffusion_timesteps": cfg.get("num_diffusion_timesteps", 1000)}
    required = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions")
    missing = [k for k in required if k not in model]
    if missing or data.get("image_size") is None:
        raise ValueError(f"ddpm config lacks {missing + ([] if data.get('image_size') else ['image_size'])}")
    model.setdefault("dropout", 0.0)
    model.setdefault("in_channels", 3)
    model.setdefault("resamp_with_conv", True)
    model.setdefault("type", "simple")
    diffusion.setdefault("num_diffusion_timesteps", 1000)
    ns = SimpleNamespace(model=SimpleNamespace(**model), data=SimpleNamespace(**data),
                         diffusion=SimpleNamespace(**diffusion))
    return Model(ns)
