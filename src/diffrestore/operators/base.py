"""The linear degradation operator ``y = A x`` and everything diffusion restoration needs from it.

Why one base class: DDNM / DDNM+ (METHODS §1) only ever touch a degradation through ``A``, ``Aᵀ`` and a
generalised inverse ``A⁺`` (any matrix with ``A A⁺ A = A``), DDNM+ additionally through an SVD
``A = U diag(s) Vᵀ``, and the tiling layer (METHODS §2–3) through *restriction* to a stack of tiles.
Keeping those in one small interface lets every method and the tiler work with every degradation.

Conventions (shared by all operators in this package):

* ``x`` is ``[B, C, H, W]`` (any float dtype, any device); ``y`` has the operator's own layout
  (``y_shape``), batch first. Operators are matrix-free and compute in the dtype/device of their input;
  size-dependent tables (FFT transfer functions, 1-D SVDs) are built once per size on the CPU in float64
  and cached per (size, dtype, device), so float32 results are as accurate as float32 allows.
* ``pinv`` is a generalised inverse; each operator documents which one (Moore–Penrose, or a thresholded
  / reflexive one) and when ``A A⁺ A = A`` holds exactly.
* **SVD view** (``has_svd``; such operators inherit ``SVDView``, the others lack the methods, so
  ``hasattr(op, "Vt")`` answers too): coefficients are *shaped like x*: ``Vt(x) -> [B, C, H, W]`` (flatten to
  ``[B, N]`` with ``.flatten(1)`` if needed, N = C·H·W), ``V(c)`` maps them back, ``Ut(y)`` puts the
  left-singular coefficients of y into the slots of their right-singular partners (zeros elsewhere) and
  ``U(c)`` reads them back, so that ``A x = U(s ⊙ Vt(x))`` and, for Moore–Penrose operators,
  ``A⁺ y = V(s⁺ ⊙ Ut(y))``. ``singular_values()`` broadcasts against the coefficients: ``[1 or C, H, W]``
  (``[B, 1 or C, H, W]`` when the operator carries one mask per image), 0 on the null space. V and U are
  orthonormal and real. Coefficients being x-shaped means ``V``/``U``/``Ut`` need no size argument;
  ``singular_values`` needs the image size: pass ``x_shape`` or ``bind`` the operator first.
* **Restriction** (tiling): ``restrict(boxes)`` returns an operator acting on the stack
  ``[len(boxes), C, h, w]`` of the windows ``box = (top, left, h, w)`` (x pixels, one size), and
  ``restrict_y(y, boxes)`` the matching measurement stack, such that for every x
  ``restrict(boxes).A(tiles(x)) == restrict_y(A x, boxes)`` (each tile sees exactly the part of y that
  its pixels determine). ``restrict_y`` works on one image (y batch 1).
* User-fixable problems (sizes not divisible by a scale, bad rates) raise ``UserError``.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from diffrestore.errors import UserError

__all__ = [
    "Box",
    "IdentityBasis",
    "LowResProblem",
    "Operator",
    "SVDView",
    "SameShape",
    "crop_stack",
    "fit_multiple",
    "pool",
    "load_operator",
    "read_array_file",
    "register_operator",
    "shape_chw",
]

Box = tuple[int, int, int, int]
OpT = TypeVar("OpT", bound="Operator")

_REGISTRY: dict[str, type[Operator]] = {}


def register_operator(cls: type[OpT]) -> type[OpT]:
    """Make ``cls`` loadable by ``load_operator`` under its class name (saved in the params JSON)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def shape_chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from a ``(C, H, W)`` or ``(B, C, H, W)`` shape (an operator ignores the batch)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        return shape[1], shape[2], shape[3]
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise ValueError(f"expected a (C, H, W) or (B, C, H, W) shape, got {shape}")


def _with_batch(like: Sequence[int], chw_or_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``chw_or_shape`` with the batch of ``like`` prepended when ``like`` had one."""
    out = tuple(int(s) for s in chw_or_shape)
    return (int(like[0]), *out) if len(like) == 4 else out


def check_boxes(boxes: Sequence[Sequence[int]], hw: tuple[int, int] | None = None) -> list[Box]:
    """Validate tile boxes: non-empty, one size, inside the image when its size is known."""
    out = [tuple(int(v) for v in b) for b in boxes]
    if not out:
        raise ValueError("restrict needs at least one box")
    if any(len(b) != 4 for b in out):
        raise ValueError("a box is (top, left, height, width)")
    h, w = out[0][2], out[0][3]
    for t, l, bh, bw in out:
        if (bh, bw) != (h, w):
            raise ValueError(f"all boxes of one restriction must have one size, got {(bh, bw)} and {(h, w)}")
        if t < 0 or l < 0 or bh <= 0 or bw <= 0:
            raise ValueError(f"bad box {(t, l, bh, bw)}")
        if hw is not None and (t + bh > hw[0] or l + bw > hw[1]):
            raise ValueError(f"box {(t, l, bh, bw)} leaves the {hw[0]}x{hw[1]} image")
    return out  # type: ignore[return-value]


def crop_stack(t: Tensor, boxes: Sequence[Box], scale: int = 1) -> Tensor:
    """Stack the windows ``boxes`` (x pixels, divided by ``scale``) of a single image ``t`` ``[1, ...]``.

    Why a loop over boxes: tiles are few (tens), each crop is a view; the stack is the tile batch.
    """
    if t.shape[0] != 1:
        raise ValueError(f"restrict_y works on one image (batch 1), got batch {t.shape[0]}")
    crops = []
    for top, left, h, w in boxes:
        if top % scale or left % scale or h % scale or w % scale:
            raise UserError(
                f"tile box {(top, left, h, w)} is not aligned to the operator's grid of {scale} pixels; "
                f"choose tile size, overlap and positions that are multiples of {scale}"
            )
        a, b, hh, ww = top // scale, left // scale, h // scale, w // scale
        if a + hh > t.shape[-2] or b + ww > t.shape[-1]:
            raise ValueError(f"box {(top, left, h, w)} leaves the measurement of size {tuple(t.shape[-2:])}")
        crops.append(t[0, ..., a : a + hh, b : b + ww])
    return torch.stack(crops)


def _move(t: Tensor, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
    """Like ``Module.to``: the dtype applies to floating tensors only (masks and indices keep theirs)."""
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device=device) if device is not None else t


@dataclass
class LowResProblem:
    """HiR's phase-1 problem: ``y_low = op(x_low)`` with ``x_low ≈ D_f x`` (``D_f``: average pooling ×f).

    ``sigma_scale`` multiplies σ_y for phase 1 (pooling f² noisy pixels divides σ by f); ``exact`` is False
    where ``A ≠ A_low ∘ D_f``; ``identity`` marks ``A_low = I`` (noise-free: ``x_low = y_low``, no network).
    """

    op: Any
    y: Tensor
    sigma_scale: float
    exact: bool = True
    identity: bool = False


def pool(y: Tensor, f: int) -> Tensor:
    """Average pooling ×f (the HiR reduction), identity for f = 1."""
    return torch.nn.functional.avg_pool2d(y, f) if f > 1 else y


class Operator:
    """A linear degradation ``y = A x`` with ``A``, ``Aᵀ``, ``A⁺`` and optional SVD view / tiling.

    Subclasses implement ``A``, ``At``, ``pinv`` and ``y_shape``; the rest has defaults. Class flags:
    ``pointwise`` (acts on every pixel alike, so a tile's operator is the operator itself and its y is
    the crop), ``channelwise`` (acts identically and independently on every channel; its SVD
    coefficients are then per-channel planes — what ``Compose`` needs to build colorize∘X's SVD).
    """

    task: ClassVar[str] = "generic"
    has_svd: ClassVar[bool] = False
    pointwise: ClassVar[bool] = False
    channelwise: bool = False

    #: The observation of a pixel block depends on that block alone (False for bicubic SR and blur,
    #: whose footprint crosses tile edges): the tiling layer's policy for such operators differs.
    block_local: ClassVar[bool] = True

    def __init__(self) -> None:
        self.x_shape: tuple[int, int, int] | None = None
        self.tile_hw: tuple[int, int] | None = None  # set on tile operators (restrict's results)
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ tiling facts
    def tile_align(self) -> int:
        """Tile-start alignment this operator needs (SR ×s: ``s``; block CS: the block; else 1).

        Why: a tile's measurement must be a whole window of y (whole LR pixels, whole CS blocks).
        """
        a = 1
        for name in ("align", "scale", "block"):
            v = getattr(self, name, None)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
                a = math.lcm(a, v)
        return a

    def lowres(self, y: Tensor, factor: int) -> LowResProblem:
        """Hierarchical Restoration's phase-1 problem at reduction ``factor`` (``x_low ≈ D_f x``).

        Each operator that supports HiR says how it factors through average pooling; the rest refuse.
        """
        raise UserError(
            f"hierarchical restoration does not support the {self.task} operator "
            "(supported: sr, inpaint, colorize, denoise and colorize compositions)"
        )

    # ------------------------------------------------------------------ core
    def A(self, x: Tensor) -> Tensor:
        """Apply the degradation."""
        raise NotImplementedError

    def At(self, y: Tensor) -> Tensor:
        """Apply the adjoint ``Aᵀ`` (exact: ``<A x, y> = <x, Aᵀ y>``)."""
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:
        """Apply the generalised inverse ``A⁺`` (see the subclass for which one)."""
        raise NotImplementedError

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``A x`` for an x of shape ``(B, C, H, W)`` (or ``(C, H, W)`` → no batch)."""
        raise NotImplementedError

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the x that produces a y of shape ``y_shape`` (restore starts from y, not from x)."""
        raise NotImplementedError(f"{type(self).__name__} cannot infer the image size from y")

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    # deepinv-style aliases: the same maps under the names other code bases use
    def A_adjoint(self, y: Tensor) -> Tensor:
        """Alias of ``At``."""
        return self.At(y)

    def A_dagger(self, y: Tensor) -> Tensor:
        """Alias of ``pinv``."""
        return self.pinv(y)

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """Range–null-space correction ``x − A⁺(A x − y)`` = ``A⁺y + (I − A⁺A) x`` (DDNM, METHODS §1.3)."""
        return x - self.pinv(self.A(x) - y)

    def check_shape(self, x_shape: Sequence[int]) -> None:
        """Raise ``UserError`` if the operator cannot act on images of this shape."""

    def fit_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        """The largest shape ≤ ``x_shape`` the operator accepts (``degrade`` crops ground truth to it)."""
        return tuple(int(s) for s in x_shape)

    def bind(self: OpT, x_shape: Sequence[int]) -> OpT:
        """Fix the image shape ``(C, H, W)``; needed where a size cannot be read from the argument
        (``singular_values()`` without argument, restriction of size-dependent operators). Returns self."""
        chw = shape_chw(x_shape)
        self.check_shape(chw)
        self.x_shape = chw
        return self

    def y_from_image(self, img: Tensor) -> Tensor:
        """Turn an observation read from an image file (``[B, 3, H, W]``) into this operator's y layout.

        Why: files are 3-channel (grey is replicated); e.g. colourisation's y has one channel. Default:
        unchanged.
        """
        return img

    def _svd_hw(self, x_shape: Sequence[int] | None) -> tuple[int, int]:
        """Image ``(H, W)`` for ``singular_values``: the argument (``(H, W)``, 3-D or 4-D), else the bound
        shape, else the tile size of a restricted operator."""
        if x_shape is not None:
            s = tuple(int(v) for v in x_shape)
            return s[-2], s[-1]
        if self.x_shape is not None:
            return self.x_shape[1], self.x_shape[2]
        if self.tile_hw is not None:
            return self.tile_hw
        raise ValueError(
            f"{type(self).__name__} needs the image size here: pass x_shape or call op.bind((C, H, W)) "
            "(make_operator(..., image_shape=...) binds it)"
        )

    def _tiled(self, op: OpT, boxes: Sequence[Box]) -> OpT:
        """Mark ``op`` as this operator's tile operator for ``boxes``: tile size, and the bound shape."""
        h, w = boxes[0][2], boxes[0][3]
        op.tile_hw = (h, w)
        op.x_shape = None if self.x_shape is None else (self.x_shape[0], h, w)
        return op

    # ------------------------------------------------------------------ tiling
    def restrict(self, boxes: Sequence[Box], image_shape: Sequence[int] | None = None) -> Operator:
        """Operator on the tile stack ``[len(boxes), C, h, w]`` (see module docstring).

        ``image_shape`` (``(H, W)``, ``(C, H, W)`` or 4-D) is needed by operators whose tile operator
        depends on where the image ends; default: the bound shape.
        """
        if self.pointwise:
            bx = check_boxes(boxes, self._hw_or_none(image_shape))
            new = copy.copy(self)
            new._cache = {}
            return self._tiled(new, bx)
        raise UserError(f"{type(self).__name__} cannot be restricted to tiles; restore the whole image")

    def restrict_y(self, y: Tensor, boxes: Sequence[Box]) -> Tensor:
        """Measurement stack for ``restrict(boxes)``, cut from the whole-image ``y`` (batch 1)."""
        if self.pointwise:
            return crop_stack(y, check_boxes(boxes))
        raise UserError(f"{type(self).__name__} cannot be restricted to tiles; restore the whole image")

    def _hw_or_none(self, image_shape: Sequence[int] | None) -> tuple[int, int] | None:
        if image_shape is not None:
            s = tuple(int(v) for v in image_shape)
            return s[-2], s[-1]
        return None if self.x_shape is None else (self.x_shape[1], self.x_shape[2])

    def _hw(self, image_shape: Sequence[int] | None) -> tuple[int, int]:
        hw = self._hw_or_none(image_shape)
        if hw is None:
            raise ValueError(
                f"{type(self).__name__}.restrict needs the image size: pass image_shape or bind the operator"
            )
        return hw

    # ------------------------------------------------------------------ device / dtype / caches
    def to(self: OpT, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> OpT:
        """A copy whose stored tensors live on ``device`` (floating ones in ``dtype``), like ``Module.to``.

        Results always follow the input's dtype/device; ``to`` only avoids per-call transfers.
        """
        new = copy.copy(self)
        new._cache = {}
        for k, v in list(vars(new).items()):
            if isinstance(v, Tensor):
                setattr(new, k, _move(v, device, dtype))
            elif isinstance(v, Operator):
                setattr(new, k, v.to(device, dtype))
            elif isinstance(v, list) and v and all(isinstance(o, Operator) for o in v):
                setattr(new, k, [o.to(device, dtype) for o in v])
        return new

    def _cached(self, key: Any, like: Tensor, build: Callable[[], Any]) -> Any:
        """``build()`` (CPU float64 tensors, or a tuple of them) cast to ``like``'s device and precision.

        Why: tables are built once in float64 (accurate SVDs/FFTs) and converted once per dtype/device.
        """
        full = (key, like.dtype, str(like.device))
        hit = self._cache.get(full)
        if hit is not None:
            return hit
        base = self._cache.get((key, "f64"))
        if base is None:
            base = build()
            self._cache[(key, "f64")] = base
        out = _cast_like(base, like)
        if len(self._cache) > 64:  # many sizes (tiles of a few sizes, images): keep memory bounded
            self._cache.clear()
        self._cache[full] = out
        return out

    # ------------------------------------------------------------------ parameters
    def get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-able constructor config, named arrays) that rebuild this operator via ``from_state``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def from_state(cls: type[OpT], config: dict[str, Any], arrays: dict[str, Tensor]) -> OpT:
        """Rebuild from ``get_state``'s output."""
        return cls(**config, **arrays)

    def params(self) -> dict[str, Any]:
        """JSON-able description (task, operator, its parameters; arrays summarised by shape)."""
        cfg, arrays = self.get_state()
        out: dict[str, Any] = {"task": self.task, "op": type(self).__name__, **cfg}
        for k, a in arrays.items():
            out[k] = f"<array {list(a.shape)} {str(a.dtype).replace('torch.', '')}>"
        if self.x_shape is not None:
            out["x_shape"] = list(self.x_shape)
        return out

    def save_params(self, target: str | os.PathLike[str]) -> Path:
        """Write ``<prefix>.operator.json`` (+ masks as PNG, kernels/indices as NPY) beside an observation.

        ``target``: an existing directory (→ ``dir/operator.json``), a ``*.json`` path, or a prefix
        (``out/photo`` → ``out/photo.operator.json``, ``out/photo.operator.mask.png``). ``degrade`` writes
        them, ``restore`` reads them back with ``load_operator``. Returns the JSON path.
        """
        json_path = _json_path(target)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        stem = json_path.name[: -len(".json")]
        cfg, arrays = self.get_state()
        files: dict[str, dict[str, Any]] = {}
        for name, a in arrays.items():
            a = a.detach().cpu()
            safe = name.replace("/", "_")
            if a.dtype == torch.bool and a.dim() >= 2 and all(s == 1 for s in a.shape[:-2]):
                fname = f"{stem}.{safe}.png"
                _write_png_mask(json_path.parent / fname, a.reshape(a.shape[-2:]).numpy())
            else:
                fname = f"{stem}.{safe}.npy"
                np.save(json_path.parent / fname, a.numpy())
            files[name] = {"file": fname, "shape": list(a.shape), "dtype": str(a.dtype).replace("torch.", "")}
        doc = {
            "format": "diffrestore.operator/1",
            "task": self.task,
            "op": type(self).__name__,
            "config": cfg,
            "files": files,
            "x_shape": None if self.x_shape is None else list(self.x_shape),
        }
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, json_path)
        return json_path


class SVDView:
    """Mixin: the operator has an SVD view ``A = U diag(s) Vᵀ`` (see the module docstring for layouts).

    Why a mixin and not methods on every operator: code asks ``hasattr(op, "Vt")`` / ``op.has_svd`` to
    decide whether DDNM+ can use the SVD rule, so operators without one must not have these methods.
    """

    has_svd: ClassVar[bool] = True

    def singular_values(self, x_shape: Sequence[int] | None = None) -> Tensor:
        """Singular values (CPU float64), broadcastable against ``Vt(x)`` (0 on the null space)."""
        raise NotImplementedError

    def Vt(self, x: Tensor) -> Tensor:
        """Right-singular coefficients ``Vᵀ x``, shaped like x."""
        raise NotImplementedError

    def V(self, c: Tensor) -> Tensor:
        """Image ``V c`` from x-shaped coefficients."""
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:
        """Left-singular coefficients ``Uᵀ y`` in the x-shaped slot layout (zeros where s = 0)."""
        raise NotImplementedError

    def U(self, c: Tensor) -> Tensor:
        """Measurement ``U c`` from x-shaped coefficients (slots with s = 0 are ignored)."""
        raise NotImplementedError


class IdentityBasis(SVDView):
    """Mixin: an SVD view with ``U = V = I`` (the singular values alone describe ``A``, e.g. a mask)."""

    def Vt(self, x: Tensor) -> Tensor:
        return x

    def V(self, c: Tensor) -> Tensor:
        return c

    def Ut(self, y: Tensor) -> Tensor:
        return y

    def U(self, c: Tensor) -> Tensor:
        return c


class SameShape:
    """Mixin: ``y`` has the shape of ``x`` (masks, blurs, the identity)."""

    def y_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) for s in x_shape)

    def x_shape_from_y(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) for s in y_shape)


def fit_multiple(x_shape: Sequence[int], m: int) -> tuple[int, ...]:
    """``x_shape`` with height and width cropped down to multiples of ``m`` (a ``fit_shape`` for grids)."""
    return (*tuple(x_shape)[:-2], x_shape[-2] - x_shape[-2] % m, x_shape[-1] - x_shape[-1] % m)


def _cast_like(obj: Any, like: Tensor) -> Any:
    if isinstance(obj, tuple):
        return tuple(_cast_like(o, like) for o in obj)
    if isinstance(obj, Tensor):
        if obj.is_complex():
            cdt = torch.complex128 if like.dtype == torch.float64 else torch.complex64
            return obj.to(device=like.device, dtype=cdt)
        if obj.is_floating_point():
            return obj.to(device=like.device, dtype=like.dtype)
        return obj.to(device=like.device)
    return obj


def _json_path(target: str | os.PathLike[str]) -> Path:
    p = Path(target)
    if p.is_dir() or str(target).endswith(("/", os.sep)):
        return p / "operator.json"
    if p.suffix == ".json":
        return p
    return p.with_name(p.name + ".operator.json")


def read_array_file(
    path: str | os.PathLike[str],
    what: str,
    from_npy: Callable[[np.ndarray], np.ndarray],
    from_image: Callable[[Any], np.ndarray],
) -> np.ndarray:
    """A user's ``.npy`` array or image file, through ``from_npy(array)`` / ``from_image(PIL image)``.

    Why here: masks and kernels accept the same two file kinds and must fail the same way: a missing or
    unreadable file is a ``UserError`` naming ``what`` and the path.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file {p} not found")
    if p.suffix.lower() == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {what} {p}: {e}") from e
        return from_npy(a)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            return from_image(im)
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"cannot read {what} image {p}: {e}") from e


def _write_png_mask(path: Path, m: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((m.astype(np.uint8) * 255), mode="L").save(path)


def _read_array(folder: Path, spec: dict[str, Any]) -> Tensor:
    path = folder / spec["file"]
    if not path.is_file():
        raise UserError(f"operator parameter file {path} is missing")
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im.convert("L")) > 127
        return torch.from_numpy(a.copy()).reshape(spec["shape"])
    return torch.from_numpy(np.load(path, allow_pickle=False)).reshape(spec["shape"])


def load_operator(target: str | os.PathLike[str]) -> Operator:
    """Rebuild an operator written by ``Operator.save_params`` (directory, JSON path or prefix)."""
    import diffrestore.operators  # noqa: F401  (registers every operator class)

    json_path = _json_path(target)
    if not json_path.is_file():
        raise UserError(f"no operator parameters at {json_path}")
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read operator parameters {json_path}: {e}") from e
    return _from_doc(doc, json_path.parent)


def _from_doc(doc: dict[str, Any], folder: Path) -> Operator:
    name = doc.get("op")
    if name not in _REGISTRY:
        raise UserError(
            f"unknown operator {name!r} in saved parameters (known: {', '.join(sorted(_REGISTRY))})"
        )
    arrays = {k: _read_array(folder, spec) for k, spec in doc.get("files", {}).items()}
    op = _REGISTRY[name].from_state(doc.get("config", {}), arrays)
    if doc.get("x_shape"):
        op.bind(doc["x_shape"])
    return op
