"""LPIPS (Zhang et al. 2018, v0.1) without torchvision, for ``diffrestore eval --lpips-weights PATH``.

Why a port and why only with user weights: LPIPS is only meaningful with its trained backbone and linear
calibration; there are no such weights in this offline project, and a randomly initialised network would be
a stand-in under the same name (which the report must never show). So the metric runs only when the user
points to real weights, and the report otherwise says "not computed".

Accepted weights (``.pth``/``.pt``/``.safetensors``, read with ``weights_only`` loading):

* the ``state_dict()`` of ``lpips.LPIPS(net='alex')`` or ``lpips.LPIPS(net='vgg')`` — keys
  ``net.slice{1..5}.<i>.weight|bias`` (``i`` = the torchvision ``features`` index) and
  ``lin{0..4}.model.1.weight``;
* or torchvision's ``features.<i>.weight|bias`` together with the ``lin{k}.model.{0|1}.weight`` of the lpips
  package's ``weights/v0.1/<net>.pth`` in one file.

The backbone (AlexNet or VGG16) is recognised from the first convolution's shape. Inputs are images in
[0, 1] (``normalize=True`` in the lpips package): mapped to [-1, 1], then the package's scaling layer.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffrestore.errors import UserError

__all__ = ["LPIPS"]

# torchvision ``features`` layouts: conv layers as (index, stride, padding), max-pools by index, taps (the
# ReLU outputs LPIPS compares) by index. Everything else in ``features`` is a ReLU.
_NETS: dict[str, dict[str, Any]] = {
    "alex": {
        "convs": {0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)},
        "pools": {2, 5},
        "taps": (1, 4, 7, 9, 11),
        "chns": (64, 192, 384, 256, 256),
    },
    "vgg": {
        "convs": {i: (1, 1) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)},
        "pools": {4, 9, 16, 23},
        "taps": (3, 8, 15, 22, 29),
        "chns": (64, 128, 256, 512, 512),
    },
}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS distance of images in [0, 1]; ``model(x, y)`` returns ``[B]`` (lower = more similar)."""

    def __init__(self, net: str, convs: dict[int, tuple[Tensor, Tensor]], lins: list[Tensor]) -> None:
        super().__init__()
        if net not in _NETS:
            raise ValueError(f"net must be one of {sorted(_NETS)}")
        self.net = net
        spec = _NETS[net]
        self.weights = nn.ParameterDict()
        for i, (w, b) in convs.items():
            self.weights[f"w{i}"] = nn.Parameter(w.float(), requires_grad=False)
            self.weights[f"b{i}"] = nn.Parameter(b.float(), requires_grad=False)
        self.lins = nn.ParameterList([nn.Parameter(lin.float(), requires_grad=False) for lin in lins])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self._spec = spec

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LPIPS:
        """Load from a weights file (see the module docstring); ``UserError`` naming what is missing."""
        from diffrestore.io.checkpoints import load_state_dict

        try:
            sd = load_state_dict(path)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(f"cannot read LPIPS weights {path}: {e}") from None
        return cls.from_state_dict(sd, source=str(path))

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor], source: str = "LPIPS weights") -> LPIPS:
        """Recognise the layout and backbone, check every needed tensor is there, build the model."""
        feats: dict[int, dict[str, Tensor]] = {}
        lins: dict[int, Tensor] = {}
        for k, v in sd.items():
            m = re.fullmatch(r"(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)", k)
            if m:
                feats.setdefault(int(m.group(1)), {})[m.group(2)] = v
                continue
            m = re.fullmatch(r"lin(\d)\.model\.[01]\.weight", k)
            if m:
                lins[int(m.group(1))] = v
        first = feats.get(0, {}).get("weight")
        if first is None:
            raise UserError(
                f"{source}: no backbone weights (expected net.slice1.0.weight or features.0.weight)"
            )
        net = "alex" if tuple(first.shape[-2:]) == (11, 11) else "vgg"
        spec = _NETS[net]
        missing = [f"conv {i}" for i in spec["convs"] if set(feats.get(i, {})) != {"weight", "bias"}]
        missing += [f"lin{k}" for k in range(5) if k not in lins]
        if missing:
            raise UserError(f"{source}: incomplete LPIPS-{net} weights, missing {', '.join(missing)} "
                            "(save lpips.LPIPS(net=...).state_dict())")
        for k, c in enumerate(spec["chns"]):
            if tuple(lins[k].shape) != (1, c, 1, 1):
                raise UserError(f"{source}: lin{k} has shape {tuple(lins[k].shape)}, expected (1, {c}, 1, 1)")
        convs = {i: (feats[i]["weight"], feats[i]["bias"]) for i in spec["convs"]}
        return cls(net, convs, [lins[k] for k in range(5)]).eval()

    # ------------------------------------------------------------------ forward
    def _features(self, x: Tensor) -> list[Tensor]:
        spec = self._spec
        taps, out = set(spec["taps"]), []
        h = x
        for i in range(max(spec["taps"]) + 1):
            if i in spec["convs"]:
                stride, pad = spec["convs"][i]
                h = F.conv2d(h, self.weights[f"w{i}"], self.weights[f"b{i}"], stride=stride, padding=pad)
            elif i in spec["pools"]:
                h = F.max_pool2d(h, kernel_size=3 if self.net == "alex" else 2, stride=2)
            else:
                h = F.relu(h)
            if i in taps:
                out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance per image of two ``[B, 3, H, W]`` batches in [0, 1]."""
        if x.dim() == 3:
            x, y = x[None], y[None]
        dev = self.shift.device
        a = ((2 * x.float().to(dev) - 1) - self.shift) / self.scale
        b = ((2 * y.float().to(dev) - 1) - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=dev)
        for fa, fb, lin in zip(self._features(a), self._features(b), self.lins):
            na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total += F.conv2d((na - nb) ** 2, lin).mean(dim=(1, 2, 3))
        return total
