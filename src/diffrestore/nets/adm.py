"""ADM (guided-diffusion) ``UNetModel`` and ``EncoderUNetModel`` with the official state_dict keys.

Written from the conventions in ``shared/refs/README.md`` so that the released ImageNet-256 checkpoints
(and the small reference vectors) load strictly and give the official outputs in float32. Differences
from the official code that do not change results: attention runs through ``scaled_dot_product_attention``
(no T x T matrices), there is no gradient checkpointing, and ``use_fp16`` is accepted but the run-time
dtype simply follows the parameters (cast the model with ``.to(torch.bfloat16)`` for half precision).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrestore.errors import UserError
from diffrestore.nets.layers import (
    adm_timestep_embedding,
    normalization,
    qkv_attention,
    zero_module,
)

__all__ = [
    "TimestepBlock",
    "TimestepEmbedSequential",
    "Upsample",
    "Downsample",
    "ResBlock",
    "AttentionBlock",
    "AttentionPool2d",
    "UNetModel",
    "EncoderUNetModel",
    "build_unet",
    "build_classifier",
]


def _check_dims(dims: int) -> None:
    if dims != 2:
        raise ValueError(f"only dims=2 is supported (got dims={dims})")


class TimestepBlock(nn.Module):
    """A module whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes ``emb`` to the children that need it (keeps official ``.N`` key indices)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        _check_dims(dims)
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """3x3 conv stride 2 padding 1 (key ``op``), or a 2x2 average pool without conv."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        _check_dims(dims)
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without conv cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """ADM residual block; optional scale-shift norm (``norm*(1+scale)+shift``) and internal up/down."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        _check_dims(dims)
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False, dims)
            self.x_upd: nn.Module = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _linear1x1(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply a kernel-1 Conv1d to token-major ``(B, T, C)`` as a matmul (no layout copies)."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class AttentionBlock(nn.Module):
    """Spatial self-attention (keys ``norm``, ``qkv``, ``proj_out``), legacy or new qkv order."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.legacy = not use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, T, C); a view for channels_last input
        a = qkv_attention(_linear1x1(h, self.qkv), self.num_heads, self.legacy)
        out = _linear1x1(a, self.proj_out).transpose(1, 2).reshape(b, c, *spatial)
        return x + out


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the spatial mean token attends to all tokens (new qkv order)."""

    def __init__(
        self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int | None = None
    ):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels
        self.spacial_dim = spacial_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        if x.shape[-1] + 1 != self.positional_embedding.shape[1]:
            raise ValueError(
                f"classifier input grid has {x.shape[-1]} cells but the model was built for "
                f"{self.spacial_dim}x{self.spacial_dim} (input image size is fixed by image_size)"
            )
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = (x + self.positional_embedding[None].to(x.dtype)).transpose(1, 2)  # (B, T+1, C)
        a = qkv_attention(_linear1x1(x, self.qkv_proj), self.num_heads, legacy=False, q_tokens=1)
        return _linear1x1(a, self.c_proj)[:, 0]


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _timesteps(timesteps: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(timesteps, device=device)
    if t.dim() == 0 or t.numel() == 1:
        t = t.reshape(1).expand(batch)
    return t


class _ADMTrunk(nn.Module):
    """Time embedding, input blocks and middle block shared by the UNet and the classifier."""

    def _build_trunk(
        self,
        in_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float,
        channel_mult: Sequence[float],
        conv_resample: bool,
        dims: int,
        num_heads: int,
        num_head_channels: int,
        use_scale_shift_norm: bool,
        resblock_updown: bool,
        use_new_attention_order: bool,
        num_classes: int | None = None,
    ) -> tuple[int, int, list[int]]:
        _check_dims(dims)
        attention_resolutions = tuple(int(a) for a in attention_resolutions)
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if num_classes is not None:  # registered here so the state_dict order matches the official one
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [
                    ResBlock(ch, time_embed_dim, dropout, out_channels=int(mult * model_channels),
                             dims=dims, use_scale_shift_norm=use_scale_shift_norm)
                ]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads, num_head_channels,
                                                 use_new_attention_order=use_new_attention_order))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down: nn.Module = (
                    ResBlock(ch, time_embed_dim, dropout, out_channels=ch, dims=dims,
                             use_scale_shift_norm=use_scale_shift_norm, down=True)
                    if resblock_updown
                    else Downsample(ch, conv_resample, dims=dims, out_channels=ch)
                )
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim, dropout, dims=dims, use_scale_shift_norm=use_scale_shift_norm),
            AttentionBlock(ch, num_heads, num_head_channels, use_new_attention_order=use_new_attention_order),
            ResBlock(ch, time_embed_dim, dropout, dims=dims, use_scale_shift_norm=use_scale_shift_norm),
        )
        return ch, ds, chans

    def _embed(self, timesteps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = _timesteps(timesteps, x.shape[0], x.device)
        emb = adm_timestep_embedding(t, self.model_channels)
        return self.time_embed(emb.to(_param_dtype(self.time_embed)))


class UNetModel(_ADMTrunk):
    """guided-diffusion ``UNetModel``: ``forward(x, timesteps, y=None)`` -> ``[B, out_channels, H, W]``."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_resolutions = tuple(int(a) for a in attention_resolutions)
        channel_mult = tuple(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.size_multiple = 2 ** (len(channel_mult) - 1)  # input sides must divide by this (skips)
        self.use_fp16 = use_fp16  # run-time dtype follows the parameters; kept for introspection
        time_embed_dim = model_channels * 4
        ch, ds, chans = self._build_trunk(
            in_channels, model_channels, num_res_blocks, attention_resolutions, dropout, channel_mult,
            conv_resample, dims, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order, num_classes,
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = chans.pop()
                layers: list[nn.Module] = [
                    ResBlock(ch + skip_ch, time_embed_dim, dropout, out_channels=int(model_channels * mult),
                             dims=dims, use_scale_shift_norm=use_scale_shift_norm)
                ]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels,
                                                 use_new_attention_order=use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, time_embed_dim, dropout, out_channels=ch, dims=dims,
                                 use_scale_shift_norm=use_scale_shift_norm, up=True)
                        if resblock_updown
                        else Upsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(int(channel_mult[0] * model_channels), out_channels, 3, padding=1)),
        )

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor | float, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict (eps[, v]) for ``x`` at ORIGINAL timestep indices ``timesteps`` (int or float, [B])."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("class labels y must be given if and only if the model is class-conditional")
        emb = self._embed(timesteps, x)
        if y is not None:
            y = torch.as_tensor(y, device=x.device).reshape(-1)
            emb = emb + self.label_emb(y.expand(x.shape[0]) if y.numel() == 1 else y)
        h = x.to(_param_dtype(self.input_blocks))
        hs = []
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.to(_param_dtype(self.out))).to(x.dtype)


class EncoderUNetModel(_ADMTrunk):
    """guided-diffusion noisy-image classifier: UNet encoder half + pooling head; ``forward(x, t)``."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str = "adaptive",
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.use_fp16 = use_fp16
        self.pool = pool
        ch, ds, _ = self._build_trunk(
            in_channels, model_channels, num_res_blocks, attention_resolutions, dropout, channel_mult,
            conv_resample, dims, num_heads, num_head_channels, use_scale_shift_norm, resblock_updown,
            use_new_attention_order,
        )
        if pool == "attention":
            if num_head_channels == -1:
                raise ValueError("pool='attention' requires num_head_channels != -1")
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(),
                AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels),
            )
        elif pool == "adaptive":
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(nn.Conv2d(ch, out_channels, 1)), nn.Flatten(),
            )
        else:
            raise ValueError(f"unsupported classifier pool {pool!r} (supported: 'attention', 'adaptive')")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float) -> torch.Tensor:
        """Raw class logits ``[B, out_channels]`` of noisy ``x`` at original timestep indices."""
        emb = self._embed(timesteps, x)
        h = x.to(_param_dtype(self.input_blocks))
        for module in self.input_blocks:
            h = module(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.to(_param_dtype(self.out))).to(x.dtype)


# ---------------------------------------------------------------------------------------------- builders

_UNET_KWARGS = (
    "image_size in_channels model_channels out_channels num_res_blocks attention_resolutions dropout "
    "channel_mult conv_resample dims num_classes use_checkpoint use_fp16 num_heads num_head_channels "
    "num_heads_upsample use_scale_shift_norm resblock_updown use_new_attention_order"
).split()
_CLASSIFIER_KWARGS = [k for k in _UNET_KWARGS if k != "num_classes"] + ["pool"]


def _default_channel_mult(image_size: int) -> tuple[float, ...]:
    """script_util's channel_mult for an empty ``channel_mult`` flag."""
    table: dict[int, tuple[float, ...]] = {
        512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
    }
    if image_size not in table:
        raise ValueError(f"no default channel_mult for image_size {image_size}; give channel_mult")
    return table[image_size]


def _parse_mult(value: Any, image_size: int) -> tuple[float, ...]:
    if value in (None, ""):
        return _default_channel_mult(image_size)
    if isinstance(value, str):
        return tuple(float(v) if "." in v else int(v) for v in value.split(","))
    return tuple(value)


def _parse_res(value: Any, image_size: int, flags: bool) -> tuple[int, ...]:
    """Attention resolutions: constructor form = ds factors; CLI flag string = feature-map sizes."""
    if isinstance(value, str):
        sizes = [int(v) for v in value.split(",") if v.strip()]
        return tuple(image_size // s for s in sizes)
    vals = tuple(int(v) for v in value)
    return tuple(image_size // v for v in vals) if flags else vals


#: guided-diffusion's ``model_and_diffusion_defaults`` / classifier / sampling script flags.
_FLAG_KEYS = frozenset({
    "image_size", "num_channels", "num_res_blocks", "num_heads", "num_heads_upsample", "num_head_channels",
    "attention_resolutions", "channel_mult", "dropout", "class_cond", "use_checkpoint",
    "use_scale_shift_norm",
    "resblock_updown", "use_fp16", "use_new_attention_order", "learn_sigma", "diffusion_steps",
    "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart", "rescale_timesteps",
    "rescale_learned_sigmas", "classifier_use_fp16", "classifier_width", "classifier_depth",
    "classifier_attention_resolutions", "classifier_use_scale_shift_norm", "classifier_resblock_updown",
    "classifier_pool", "clip_denoised", "num_samples", "batch_size", "use_ddim", "model_path",
    "classifier_path", "classifier_scale",
})


def _check_flags(cfg: dict[str, Any], kind: str) -> None:
    extra = sorted(set(cfg) - _FLAG_KEYS)
    if extra:
        raise UserError(f"{kind} config: unknown flag(s) {', '.join(extra)}")


def _unet_from_flags(cfg: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` flags (num_channels, class_cond, learn_sigma, ...) -> UNetModel kwargs."""
    _check_flags(cfg, "adm_unet")
    size = int(cfg["image_size"])
    return {
        "image_size": size,
        "in_channels": 3,
        "model_channels": cfg["num_channels"],
        "out_channels": 6 if cfg.get("learn_sigma", False) else 3,
        "num_res_blocks": cfg["num_res_blocks"],
        "attention_resolutions": _parse_res(cfg.get("attention_resolutions", "16,8"), size, True),
        "dropout": cfg.get("dropout", 0.0),
        "channel_mult": _parse_mult(cfg.get("channel_mult", ""), size),
        "num_classes": 1000 if cfg.get("class_cond", False) else None,
        "use_checkpoint": cfg.get("use_checkpoint", False),
        "use_fp16": cfg.get("use_fp16", False),
        "num_heads": cfg.get("num_heads", 1),
        "num_head_channels": cfg.get("num_head_channels", -1),
        "num_heads_upsample": cfg.get("num_heads_upsample", -1),
        "use_scale_shift_norm": cfg.get("use_scale_shift_norm", False),
        "resblock_updown": cfg.get("resblock_updown", False),
        "use_new_attention_order": cfg.get("use_new_attention_order", False),
    }


def _classifier_from_flags(cfg: dict[str, Any]) -> dict[str, Any]:
    """``create_classifier`` flags (classifier_width, classifier_depth, ...) -> EncoderUNetModel kwargs."""
    _check_flags(cfg, "adm_classifier")
    size = int(cfg["image_size"])
    return {
        "image_size": size,
        "in_channels": 3,
        "model_channels": cfg["classifier_width"],
        "out_channels": 1000,
        "num_res_blocks": cfg["classifier_depth"],
        "attention_resolutions": _parse_res(
            cfg.get("classifier_attention_resolutions", "32,16,8"), size, True
        ),
        "channel_mult": _default_channel_mult(size),
        "use_fp16": cfg.get("classifier_use_fp16", False),
        "num_head_channels": 64,
        "use_scale_shift_norm": cfg.get("classifier_use_scale_shift_norm", True),
        "resblock_updown": cfg.get("classifier_resblock_updown", True),
        "pool": cfg.get("classifier_pool", "attention"),
    }


def _normalise(cfg: dict[str, Any], allowed: list[str], kind: str) -> dict[str, Any]:
    size = int(cfg["image_size"])
    extra = sorted(set(cfg) - set(allowed))
    if extra:  # a typo'd key would silently build another network that still loads strictly
        raise UserError(f"{kind} config: unknown key(s) {', '.join(extra)}")
    out = {k: v for k, v in cfg.items() if k in allowed}
    for key in ("image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks"):
        if key not in out:
            raise ValueError(f"{kind} config lacks required key {key!r}")
    if "attention_resolutions" not in out:
        raise ValueError(f"{kind} config lacks required key 'attention_resolutions'")
    out["attention_resolutions"] = _parse_res(out["attention_resolutions"], size, False)
    if "channel_mult" in out:
        out["channel_mult"] = _parse_mult(out["channel_mult"], size)
    return out


def build_unet(config: dict[str, Any]) -> UNetModel:
    """Build a ``UNetModel`` from resolved constructor kwargs, ``create_model`` flags, or a manifest."""
    cfg = dict(config)
    if "config_resolved_UNetModel" in cfg:
        cfg = dict(cfg["config_resolved_UNetModel"])
    elif "model_channels" not in cfg and "num_channels" in cfg:
        cfg = _unet_from_flags(cfg)
    return UNetModel(**_normalise(cfg, _UNET_KWARGS, "adm_unet"))


def build_classifier(config: dict[str, Any]) -> EncoderUNetModel:
    """Build an ``EncoderUNetModel`` from resolved kwargs, ``create_classifier`` flags, or a manifest."""
    cfg = dict(config)
    if "config_resolved_EncoderUNetModel" in cfg:
        cfg = dict(cfg["config_resolved_EncoderUNetModel"])
    elif "model_channels" not in cfg and "classifier_width" in cfg:
        cfg = _classifier_from_flags(cfg)
    return EncoderUNetModel(**_normalise(cfg, _CLASSIFIER_KWARGS, "adm_classifier"))
