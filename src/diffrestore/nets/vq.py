"""ResShift's VQ-f4 autoencoder (``VQModelTorch``) with the official ``state_dict`` keys.

The diffusion runs on the *un-quantised* latent ``encode(x)``; the sampler's final ``decode`` snaps the latent
to the codebook first. Two deliberate departures from the official code, both numerically equivalent:

* the mid-block attention uses ``F.scaled_dot_product_attention``: the official einsum materialises a
  (HW/16)² matrix, i.e. 16 GB at a 1024² input, whereas SDPA's blocked kernels never do;
* the nearest-codebook search is chunked over positions so the ``positions x 8192`` distance matrix is never
  built for a whole image at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Max elements of one chunk's distance matrix (positions x codebook): 16M floats = 64 MiB.
_DIST_CHUNK_ELEMS = 1 << 24


def _norm(channels: int) -> nn.GroupNorm:
    """LDM's Normalize: plain GroupNorm, 32 groups, eps 1e-6 (no fp32 upcast, unlike ADM)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """LDM ResnetBlock without timestep input (temb_channels = 0, so no ``temb_proj``)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:  # official conv_shortcut (3x3) is never enabled
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention (separate 1x1 q/k/v convs), computed through SDPA.

    SDPA's default scale is C^-0.5 like the official code; its blocked CPU/GPU kernels keep memory linear in
    the number of positions.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.norm = _norm(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (b, c, h, w) -> (b, 1, hw, c)
            # contiguous: with strided inputs PyTorch's CPU SDPA falls back to the O(T²)-memory math path
            return t.reshape(b, 1, c, hh * ww).transpose(-1, -2).contiguous()

        a = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        a = a.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then 3x3 stride-2 conv without padding (TF "SAME" emulation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    """block_1 -> attn_1 -> block_2 (attention is always present, whatever attn_resolutions says)."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: ``block`` / ``attn`` ModuleLists plus an optional resampler (official keys)."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class Encoder(nn.Module):
    """conv_in -> levels (ResnetBlocks, Downsample except last) -> mid -> GN, swish, conv_out."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        dropout: float = 0.0,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_ch_mult = (1, *ch_mult)
        curr_res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_ch_mult[i], ch * mult
            blocks: list[nn.Module] = []
            attns: list[nn.Module] = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level.run(h)
            if i != len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """conv_in -> mid -> levels in reverse (num_res_blocks + 1 blocks, Upsample except level 0) -> out."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        z_channels: int,
        dropout: float = 0.0,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, dropout)
        levels: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[i]
            blocks: list[nn.Module] = []
            attns: list[nn.Module] = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)  # up[i] is level i, so up.0 (full resolution) runs last
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i].run(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Legacy VectorQuantizer2 lookup: argmin of |z|²+|e|²-2z·e in the input dtype (first index on ties)."""

    def __init__(self, n_e: int, e_dim: int) -> None:
        super().__init__()
        self.n_e, self.e_dim = n_e, e_dim
        self.embedding = nn.Embedding(n_e, e_dim)

    def nearest(
        self, z_flat: torch.Tensor, with_gap: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Nearest code per row of ``z_flat`` [N, e_dim] and (``with_gap``) its distance gap to the second.

        Chunked over rows so a 1024² image (65536 latent positions x 8192 codes) costs 64 MiB, not 2 GiB.
        The gap says how safe each index is against float rounding (the refs store it as ``vq_margin``).
        """
        e = self.embedding.weight.to(z_flat.dtype)
        e2 = torch.sum(e**2, dim=1)
        step = max(1, _DIST_CHUNK_ELEMS // max(1, self.n_e))
        idx: list[torch.Tensor] = []
        gap: list[torch.Tensor] = []
        for s in range(0, z_flat.shape[0], step):
            z = z_flat[s : s + step]
            d = torch.sum(z**2, dim=1, keepdim=True) + e2 - 2 * (z @ e.t())  # official expression order
            idx.append(torch.argmin(d, dim=1))
            if with_gap and self.n_e > 1:
                top = torch.topk(d, 2, dim=1, largest=False).values
                gap.append(top[:, 1] - top[:, 0])
            elif with_gap:
                gap.append(torch.full_like(d[:, 0], float("inf")))
        if not idx:
            return z_flat.new_zeros((0,), dtype=torch.int64), z_flat.new_zeros((0,)) if with_gap else None
        return torch.cat(idx), torch.cat(gap) if with_gap else None

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, C, H, W] -> (z_q [B, C, H, W], indices flat int64 in (b, h, w) order)."""
        zp = z.permute(0, 2, 3, 1).contiguous()
        indices, _ = self.nearest(zp.reshape(-1, self.e_dim), with_gap=False)
        z_q = self.embedding(indices).view(zp.shape).to(z.dtype)
        z_q = zp + (z_q - zp).detach()  # official straight-through form (same rounding as the reference)
        return z_q.permute(0, 3, 1, 2).contiguous(), indices


class VQModelTorch(nn.Module):
    """ResShift's first-stage model; keys ``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``,
    ``quant_conv.*``, ``post_quant_conv.*`` in that order."""

    def __init__(self, ddconfig: dict[str, Any], n_embed: int, embed_dim: int, **_ignored: Any) -> None:
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        z_channels = int(ddconfig["z_channels"])
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image [-1, 1] -> pre-quantisation latent (ResShift diffuses on this)."""
        return self.quant_conv(self.encoder(x))

    def code_margin(self, h: torch.Tensor) -> torch.Tensor:
        """Per-position gap (second-nearest minus nearest squared distance), shape [B, H, W]."""
        b, c, hh, ww = h.shape
        _, gap = self.quantize.nearest(h.permute(0, 2, 3, 1).reshape(-1, c))
        assert gap is not None
        return gap.view(b, hh, ww)

    def decode(self, h: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """Latent -> image; quantises first unless ``force_not_quantize`` (the sampler quantises)."""
        quant = h if force_not_quantize else self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def build_vq(config: dict[str, Any]) -> VQModelTorch:
    """Build from the official kwargs ``{embed_dim, n_embed, ddconfig: {...}}`` (refs config / manifest)."""
    cfg = dict(config)
    return VQModelTorch(ddconfig=dict(cfg.pop("ddconfig")), n_embed=int(cfg.pop("n_embed")),
                        embed_dim=int(cfg.pop("embed_dim")), **cfg)
