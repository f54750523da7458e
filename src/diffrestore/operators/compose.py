"""Composition of operators, e.g. colourisation ∘ super-resolution for old photos.

``Compose([A2, A1])`` is ``A = A2 ∘ A1`` (math order: the LAST operator is applied first), with
``Aᵀ = A1ᵀ A2ᵀ`` (exact) and ``A⁺ = A1⁺ A2⁺``. The product of pseudo-inverses is the Moore–Penrose
inverse when A1 has full row rank and A2 full column rank, or when the factors act on separate axes
(colour vs. space: ``Colorize`` ∘ any channel-wise spatial operator is a Kronecker product ``wᵀ ⊗ S``
whose pseudo-inverse is ``(wᵀ)⁺ ⊗ S⁺``). Otherwise it is only a heuristic: check ``A A⁺ A = A``.

SVD view: provided for ``Colorize ∘ X`` with X channel-wise with an SVD (average-pool / bicubic SR,
blur, 1-channel-mask inpainting, identity): coefficients are X's coefficients of the colour components
in ``householder_basis(w)``; channel 0 (the grey direction) has singular values ``|w|·s_X``, the other
channels are null space. (Such compositions are ``ColorizeCompose`` instances.)

Tiling: supported when every operator but the innermost is pointwise (colourisation, identity); the
tile operator composes them with the innermost's tile operator and the tile y is the innermost's
``restrict_y`` of y (crops and masks act on every channel alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diffrestore.errors import UserError
from diffrestore.operators.base import (
    _REGISTRY,
    Box,
    LowResProblem,
    Operator,
    SVDView,
    check_boxes,
    register_operator,
    shape_chw,
)
from diffrestore.operators.colorize import Colorize, householder_basis
from diffrestore.operators.deblur import Blur
from diffrestore.operators.denoise import Identity
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR, _Separable

__all__ = ["ColorizeCompose", "Compose"]

_SVD_INNER = (AvgPoolSR, _Separable, Blur, Inpaint, Identity)


def _colorize_svd_ok(ops: Sequence[Operator]) -> bool:
    return (
        len(ops) == 2
        and isinstance(ops[0], Colorize)
        and isinstance(ops[1], _SVD_INNER)
        and bool(getattr(ops[1], "channelwise", False))
        and getattr(ops[1], "has_svd", False)
    )


@register_operator
class Compose(Operator):
    """``A = ops[0] ∘ ops[1] ∘ … ∘ ops[-1]`` (see module docstring); ``task`` names the combination."""

    def __new__(cls, ops: Sequence[Operator] | None = None, *args: Any, **kwargs: Any) -> Compose:
        if cls is Compose and ops is not None and _colorize_svd_ok(list(ops)):
            return super().__new__(ColorizeCompose)
        return super().__new__(cls)

    def __init__(self, ops: Sequence[Operator], task: str = "compose") -> None:
        super().__init__()
        ops = list(ops)
        if not ops or not all(isinstance(o, Operator) for o in ops):
            raise ValueError("Compose needs a non-empty list of operators")
        self.ops = ops
        self.task = task  # type: ignore[misc]
        self.channelwise = all(o.channelwise for o in ops)

    def A(self, x: Tensor) -> Tensor:
        for op in reversed(self.ops):
            x = op.A(x)
        return x

    def At(self, y: Tensor) -> Tensor:
        for op in self.ops:
            y = op.At(y)
        return y

    def pinv(self, y: Tensor) -> Tensor:
        for op in self.ops:
            y = op.pinv(y)
        return y

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in x_shape)
        for op in reversed(self.ops):
            shape = op.y_shape(shape)
        return shape

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in y_shape)
        for op in self.ops:
            shape = op.x_shape_from_y(shape)
        return shape

    def check_shape(self, x_shape: Sequence[int]) -> None:
        shape = shape_chw(x_shape)
        for op in reversed(self.ops):
            op.check_shape(shape)
            shape = shape_chw(op.y_shape(shape))

    def fit_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return self.ops[-1].fit_shape(x_shape)

    def bind(self, x_shape: Sequence[int]) -> Compose:
        shape = shape_chw(x_shape)
        self.check_shape(shape)
        self.x_shape = shape
        for op in reversed(self.ops):
            op.bind(shape)
            shape = shape_chw(op.y_shape(shape))
        return self

    def y_from_image(self, img: Tensor) -> Tensor:
        return self.ops[0].y_from_image(img)

    @property
    def block_local(self) -> bool:  # type: ignore[override]
        return all(o.block_local for o in self.ops)

    def tile_align(self) -> int:
        return math.lcm(1, *(o.tile_align() for o in self.ops))

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """Pointwise outer operators (colourisation) commute with pooling: the inner operator's rule."""
        if not all(o.pointwise for o in self.ops[:-1]) or isinstance(self.ops[-1], Inpaint):
            raise UserError(
                "hierarchical restoration supports compositions of pointwise operators (colorize) with SR, "
                "colorize or denoise inside"
            )
        inner = self.ops[-1].lowres(y, factor)
        return LowResProblem(Compose([*self.ops[:-1], inner.op], task=self.task), inner.y, inner.sigma_scale,
                             inner.exact, False)

    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        if not all(o.pointwise for o in self.ops[:-1]):
            raise UserError(
                "this composition cannot be restricted to tiles (only pointwise outer operators such as "
                "colorization are supported); restore the whole image"
            )
        hw = self._hw_or_none(image_shape)
        inner = self.ops[-1].restrict(boxes, hw)
        return self._tiled(Compose([*self.ops[:-1], inner], task=self.task), check_boxes(boxes))

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        if not all(o.pointwise for o in self.ops[:-1]):
            raise UserError("this composition cannot be restricted to tiles; restore the whole image")
        return self.ops[-1].restrict_y(y, boxes)

    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        subs, arrays = [], {}
        for i, op in enumerate(self.ops):
            cfg, arr = op.get_state()
            subs.append({"op": type(op).__name__, "config": cfg, "arrays": sorted(arr)})
            arrays.update({f"op{i}.{k}": v for k, v in arr.items()})
        return {"ops": subs, "task": self.task}, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, Tensor]) -> Compose:
        ops = []
        for i, sub in enumerate(config["ops"]):
            name = sub["op"]
            if name not in _REGISTRY:
                raise UserError(f"unknown operator {name!r} in saved parameters")
            arr = {k: arrays[f"op{i}.{k}"] for k in sub.get("arrays", [])}
            ops.append(_REGISTRY[name].from_state(sub.get("config", {}), arr))
        return Compose(ops, task=config.get("task", "compose"))

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "op": "Compose", "ops": [o.params() for o in self.ops]}
        if self.x_shape is not None:
            out["x_shape"] = list(self.x_shape)
        return out


@register_operator
class ColorizeCompose(SVDView, Compose):
    """``Colorize ∘ X`` with the Kronecker SVD view (see module docstring); built by ``Compose``."""

    @property
    def _color(self) -> Colorize:
        return self.ops[0]  # type: ignore[return-value]

    def _q(self, like: Tensor) -> Tensor:
        return self._cached("q", like, lambda: householder_basis(self._color.weights))

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        hw = None
        if x_shape is not None or self.x_shape is not None or self.tile_hw is not None:
            hw = self._svd_hw(x_shape)
        s_in = self.ops[1].singular_values(hw)  # type: ignore[attr-defined]
        first = s_in * self._color.weights.norm()
        rest = torch.zeros_like(first).expand(*first.shape[:-3], self._color.channels - 1, *first.shape[-2:])
        return torch.cat([first, rest], dim=-3)

    def Vt(self, x: Tensor) -> Tensor:
        self._color.check_shape(x.shape)
        return self.ops[1].Vt(torch.einsum("ck,bchw->bkhw", self._q(x), x))  # type: ignore[attr-defined]

    def V(self, c: Tensor) -> Tensor:
        return torch.einsum("ck,bkhw->bchw", self._q(c), self.ops[1].V(c))  # type: ignore[attr-defined]

    def Ut(self, y: Tensor) -> Tensor:
        first = self.ops[1].Ut(y)  # type: ignore[attr-defined]
        rest = first.new_zeros(first.shape[0], self._color.channels - 1, *first.shape[2:])
        return torch.cat([first, rest], dim=1)

    def U(self, c: Tensor) -> Tensor:
        return self.ops[1].U(c[:, :1])  # type: ignore[attr-defined]
