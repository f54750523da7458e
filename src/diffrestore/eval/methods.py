"""Method adapters for the evaluation harness: one uniform call per restoration method.

Why adapters: the harness must treat a zero-shot diffusion solver, a classical baseline and a one-line
pseudo-inverse alike — same observation in, image in [0, 1] out, plus what it cost — so that every row of
``results.csv`` is comparable. Each adapter also says *whether it applies* to a task (bicubic upsampling
means nothing for inpainting): the runner skips and reports those instead of producing a meaningless row.
Every method registered in ``diffrestore.methods`` gets an adapter generated from its declarations;
``_not_yet`` remains for announcing a planned method before it lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError

__all__ = [
    "METHODS",
    "MethodOutput",
    "MethodSpec",
    "Problem",
    "check_methods",
    "get_method",
    "register_method",
]


@dataclass
class Problem:
    """One degraded image as every method sees it.

    ``y`` is the operator's observation (its own layout: an LR image, a masked image, a compact CS
    vector) in [0, 1] units; ``noise`` the std of the added noise in 8-bit units; ``seed`` the per-image
    seed (the runner derives it from the protocol seed and the image name).
    """

    name: str
    gt: torch.Tensor
    y: torch.Tensor
    op: Any
    task: str
    task_opts: dict[str, Any]
    noise: float = 0.0
    seed: int = 0
    device: str = "cpu"

    @property
    def sigma_y(self) -> float:
        """Noise std in [0, 1] units (what ``diffrestore.api.restore`` takes)."""
        return self.noise / 255.0


@dataclass
class MethodOutput:
    """A method's result: ``image`` ``[1, C, H, W]`` in [0, 1] units (may be unclamped), ``info`` extras.

    ``info`` keys the runner understands: ``network_calls``, ``model``, ``tiles``, ``waves``.
    """

    image: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodSpec:
    """A registered method. ``applies(problem)`` returns ``None`` or the reason it does not apply."""

    name: str
    label: str
    description: str
    run: Callable[[Problem, dict[str, Any]], MethodOutput] | None = None
    applies: Callable[[Problem], str | None] = lambda p: None
    implemented: bool = True
    uses_model: bool = False
    #: ``precheck(options)`` raises ``UserError`` before the run starts (e.g. a missing checkpoint), so a
    #: long evaluation does not stop after its first image; returns a provenance dict (e.g. model file).
    precheck: Callable[[dict[str, Any]], dict[str, Any]] | None = None


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; tests use this to count calls."""
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; ``UserError`` for an unknown one."""
    spec = METHODS.get(name)
    if spec is None:
        raise UserError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return spec


def check_methods(
    names: list[str], skip_unavailable: bool = False
) -> tuple[list[str], list[tuple[str, str]]]:
    """Split requested names into runnable ones and (name, why not) for registered-but-missing ones.

    Unknown names always raise ``UserError``; not-yet-implemented ones raise too unless
    ``skip_unavailable`` (then the report lists them), so that a table never silently lacks a column.
    """
    run, missing = [], []
    for n in names:
        spec = get_method(n)
        if spec.implemented:
            run.append(n)
            continue
        why = f"method {n!r} is not implemented yet in diffrestore {_version()} ({spec.description})"
        if not skip_unavailable:
            raise UserError(f"{why}; drop it from --methods or pass --skip-unavailable")
        missing.append((n, why))
    return run, missing


def _version() -> str:
    from diffrestore import __version__

    return __version__


# ---------------------------------------------------------------------- applicability helpers
def _is_sr(p: Problem) -> str | None:
    if p.task != "sr":
        return f"not applicable: bicubic upsampling needs an SR task (task is {p.task})"
    return None


def _is_inpaint(p: Problem) -> str | None:
    if p.task != "inpaint":
        return f"not applicable: biharmonic inpainting needs an inpaint task (task is {p.task})"
    return None


def _is_noisy_denoise(p: Problem) -> str | None:
    if p.task != "denoise":
        return f"not applicable: CBM3D is a denoiser (task is {p.task})"
    if p.noise <= 0:
        return "not applicable: CBM3D needs a noise level (protocol noise > 0)"
    return None


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu()[0].permute(1, 2, 0).numpy()


def _from_hwc(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------- adapters
def _run_pinv(p: Problem, opts: dict[str, Any]) -> MethodOutput:
    """``A⁺ y``: the floor every method must beat, and the range-space part DDNM keeps exactly."""
    with torch.no_grad():
        return MethodOutput(p.op.pinv(p.y).float())


def _run_bicubic(p: Problem, opts: dict[str, Any]) -> MethodOutput:
    """MATLAB ``imresize(y, s, 'bicubic')``: the published SR baseline (BasicSR/MATLAB conventions)."""
    from diffrestore.metrics import imresize

    scale = int(p.task_opts.get("scale", 4))
    x = imresize(p.y.detach().to(torch.float64).cpu(), scale)
    assert isinstance(x, torch.Tensor)
    if tuple(x.shape[-2:]) != tuple(p.gt.shape[-2:]):
        x = imresize(p.y.detach().to(torch.float64).cpu(), output_shape=tuple(p.gt.shape[-2:]))
    return MethodOutput(x.float())  # type: ignore[union-attr]


def _run_biharmonic(p: Problem, opts: dict[str, Any]) -> MethodOutput:
    """scikit-image biharmonic inpainting: the classical smooth fill diffusion methods are compared with."""
    try:
        from skimage.restoration import inpaint_biharmonic
    except ImportError as e:
        raise UserError("biharmonic needs scikit-image (pip install 'diffrestore[baselines]')") from e
    mask = p.op.mask.to(torch.bool).cpu()  # [1 or B, 1 or C, H, W], True = known
    missing = (~mask[0]).any(dim=0).numpy()  # a pixel is filled if any channel is missing
    img = _to_hwc(p.y)
    out = inpaint_biharmonic(img, missing, channel_axis=-1)
    return MethodOutput(_from_hwc(out))


def _run_cbm3d(p: Problem, opts: dict[str, Any]) -> MethodOutput:
    """CBM3D (the ``bm3d`` package) with the true noise level: the classical colour-denoising reference."""
    try:
        import bm3d
    except ImportError as e:
        raise UserError("cbm3d needs the bm3d package (pip install 'diffrestore[baselines]')") from e
    img = _to_hwc(p.y)
    out = bm3d.bm3d_rgb(img, sigma_psd=p.sigma_y, profile=str(opts.get("profile", "np")))
    return MethodOutput(_from_hwc(out))


def _method_runner(name: str) -> Callable[[Problem, dict[str, Any]], MethodOutput]:
    """The harness's adapter for a registered method: the same entry point as ``diffrestore restore``."""

    def run(p: Problem, opts: dict[str, Any]) -> MethodOutput:
        from diffrestore.api import restore

        res = restore(p.y, op=p.op, method=name, sigma_y=p.sigma_y,
                      **{"seed": p.seed, "device": p.device, **opts})
        return MethodOutput(res.x.detach().float().cpu(), dict(res.info))

    return run


def _method_checker(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Options valid for the method (its declarations), model resolvable: fail before the first image."""

    def check(opts: dict[str, Any]) -> dict[str, Any]:
        from diffrestore.methods.base import get_method

        meth = get_method(name).configure(opts)
        model = getattr(meth, "model", None)
        if model is None or not hasattr(model, "model"):
            return {}
        from diffrestore.io.registry import DEFAULT_NAME, resolve

        default = getattr(meth, "default_model", DEFAULT_NAME)
        spec = resolve(str(model.model or default), model.config, model.models_dir)
        return {"model": spec.name, "family": spec.family,
                "file": None if spec.path is None else str(spec.path), "image_size": spec.image_size}

    return check


def _registered() -> list[MethodSpec]:
    from diffrestore.methods.base import METHODS, get_method

    get_method("ddnm")  # imports the built-in methods
    return [MethodSpec(name, cls.label or name, cls.description, _method_runner(name), uses_model=True,
                       precheck=_method_checker(name)) for name, cls in METHODS.items()]


def _not_yet(name: str, label: str, what: str) -> MethodSpec:
    return MethodSpec(name=name, label=label, description=what, implemented=False)


for _spec in (
    MethodSpec("pinv", "A⁺y", "pseudo-inverse of the operator applied to y", _run_pinv),
    MethodSpec("bicubic", "Bicubic", "MATLAB bicubic upsampling of the LR image (SR only)", _run_bicubic,
               _is_sr),
    MethodSpec("biharmonic", "Biharmonic", "scikit-image biharmonic inpainting (inpaint only)",
               _run_biharmonic, _is_inpaint),
    MethodSpec("cbm3d", "CBM3D", "bm3d package, colour BM3D with the true sigma (denoise only)", _run_cbm3d,
               _is_noisy_denoise),
    *_registered(),
):
    register_method(_spec)
