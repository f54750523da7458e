"""``diffrestore.restore``: one call from an observation to a restored image, any size.

The CLI ``restore`` command is a thin shell around this function, so Python users, the evaluation harness
and the CLI run exactly the same pipeline: operator from the task options → model from the registry →
DDNM solver → Mask-Shift tiling (optionally Hierarchical) → image in [0, 1] plus a report of what ran.

Units: files and ``y`` are in [0, 1]; networks work in [-1, 1]. For a linear operator
``A(2x − 1) = 2A(x) − A(1)``, so the model-range observation is ``2y − A(1)`` (``A(1)`` is 1 for SR and
colourisation, the mask for inpainting, …); ``sigma_y`` is given in [0, 1] units, as users measure noise.

Order of work (why): everything a user can get wrong — the observation file, the task options, the
operator's size rules, the model file, whether the operator can be cut into the planned tiles — is
checked before the first network call, so a bad input fails in well under a second with one line and
nothing is written. ``on_plan`` is only called once all of that has passed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError

__all__ = ["METHODS", "RestoreResult", "load_denoiser", "read_observation", "restore"]

METHODS = ("ddnm",)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RestoreResult:
    """The restored image and what it took.

    ``image``: ``[1, C, H, W]`` in [0, 1] (clamped); ``x``: the unclamped float result in [0, 1] units
    (what ``--float`` writes, for exact consistency checks); ``op``/``y``: the operator and the observation
    actually used (``y`` in [0, 1] units, in the operator's layout); ``info``: plan, timings, consistency,
    seams.
    """

    image: torch.Tensor
    x: torch.Tensor
    op: Any
    y: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def load_denoiser(model: str | Path | None = None, config: str | Path | dict | None = None,
                  models_dir: str | Path | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Registry model (or user checkpoint + config) as a ``Denoiser``; returns ``(denoiser, spec)``.

    The last two loads are cached (keyed by the arguments and the file's mtime), so evaluating a data set
    image by image loads the network once.
    """
    if isinstance(config, dict):
        return _load_denoiser(model, config, models_dir, device, dtype)
    key = (str(model) if model is not None else None, str(config) if config is not None else None,
           str(models_dir) if models_dir is not None else None, str(device), dtype, _mtime(model))
    return _cached_denoiser(key)


def _mtime(model: str | Path | None) -> float | None:
    p = Path(str(model)) if model is not None else None
    return p.stat().st_mtime if p is not None and p.is_file() else None


@functools.lru_cache(maxsize=2)
def _cached_denoiser(key: tuple) -> tuple[Any, Any]:
    model, config, models_dir, device, dtype, _ = key
    return _load_denoiser(model, config, models_dir, device, dtype)


def _load_denoiser(model: str | Path | None, config: str | Path | dict | None, models_dir: str | Path | None,
                   device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from diffrestore.diffusion.denoiser import Denoiser
    from diffrestore.diffusion.schedules import betas_for
    from diffrestore.io.registry import DEFAULT_NAME, load_model

    net, spec = load_model(str(model) if model is not None else DEFAULT_NAME, config, models_dir,
                           device=device, dtype=dtype)
    if spec.role != "denoiser" or spec.family not in ("adm_unet", "ddpm_unet"):
        raise UserError(f"model {spec.name!r} ({spec.family}) is not a diffusion denoiser usable by DDNM")
    diffusion = spec.diffusion or {}
    learned = bool(diffusion.get("learn_sigma", (spec.config or {}).get("out_channels", 3) == 6))
    return Denoiser(net, betas_for(diffusion), learned_sigma=learned), spec


def read_observation(path: str | Path) -> torch.Tensor:
    """An observation file: an image (``[1, 3, H, W]`` in [0, 1]) or the ``.npy`` float y that ``degrade``
    writes (exact, and the only form for non-image observations such as compressed-sensing coefficients)."""
    from diffrestore.io.images import read_image

    path = Path(path)
    if path.suffix.lower() != ".npy":
        return read_image(path)
    if not path.is_file():
        raise UserError(f"observation not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read observation {path}: {str(e).splitlines()[0]}") from None
    if a.dtype.kind not in "fiub" or not 2 <= a.ndim <= 4:
        raise UserError(f"observation {path} must be a 2-D to 4-D numeric array, got {a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _as_batch(y: torch.Tensor) -> torch.Tensor:
    """``[1, C, h, w]`` from ``[h, w]``, ``[C, h, w]`` or ``[1, C, h, w]`` (one image per call)."""
    if y.dim() == 2:
        y = y[None, None]
    elif y.dim() == 3:
        y = y[None]
    if y.dim() != 4 or y.shape[0] != 1:
        raise UserError(f"restore takes one observation [1, C, h, w], got shape {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise UserError("the observation contains NaN or infinite values")
    return y


def _patch_size(spec: Any, tile: int | None) -> int:
    if tile is not None:
        if int(tile) < 1:
            raise UserError(f"tile size must be positive, got {tile}")
        return int(tile)
    size = spec.image_size or (spec.config or {}).get("image_size")
    if not size:
        raise UserError(f"model {spec.name!r} has no native patch size; pass --tile")
    return int(size)


def _check_observation(op: Any, y: torch.Tensor, x_shape: Sequence[int]) -> None:
    """``y`` must have the shape the operator produces (e.g. ``--params`` of another image: one line,
    not a broadcasting error deep inside the sampler)."""
    try:
        want = tuple(int(v) for v in op.y_shape(tuple(x_shape)))
    except (NotImplementedError, AttributeError):
        return
    if want != tuple(y.shape):
        raise UserError(
            f"the observation has shape {tuple(y.shape)} but the operator expects {want} "
            f"(for a {x_shape[-1]}x{x_shape[-2]} image); were --params written for another image?"
        )


class WholeImage:
    """An operator that cannot be cut into tiles, usable when one tile covers the whole image.

    Why: MSR always asks for ``restrict(boxes)``; for an image no larger than one tile the only box is
    the whole image, whose restriction is the operator itself. Anything else raises a one-line
    ``UserError`` that says what to do. Every other attribute is the wrapped operator's.
    """

    def __init__(self, inner: Any, hw: tuple[int, int]) -> None:
        self.inner, self.hw = inner, hw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _whole(self, boxes: Sequence[Sequence[int]]) -> None:
        h, w = self.hw
        if [tuple(int(v) for v in b) for b in boxes] != [(0, 0, h, w)]:
            raise UserError(
                f"the {getattr(self.inner, 'task', type(self.inner).__name__)} operator cannot be cut into "
                f"tiles and the {w}x{h} image is larger than one tile; use --tile >= {max(h, w)} "
                "(memory permitting) or a smaller image"
            )

    def restrict(self, boxes: Sequence[Sequence[int]], image_shape: Sequence[int] | None = None) -> Any:
        self._whole(boxes)
        return self.inner

    def restrict_y(self, y: torch.Tensor, boxes: Sequence[Sequence[int]]) -> torch.Tensor:
        self._whole(boxes)
        return y

    def to(self, device: Any = None, dtype: Any = None) -> WholeImage:
        return WholeImage(self.inner.to(device, dtype), self.hw)


def _check_tiles(op: Any, y: torch.Tensor, plan: Any) -> None:
    """Restrict ``op`` once per distinct tile size of ``plan`` (cheap), so an operator that cannot serve
    these tiles (kernel larger than a tile, misaligned blocks, …) fails before the first network call."""
    seen: set[tuple[int, int]] = set()
    for i in range(plan.n_tiles):
        v = tuple(plan.valid_box(i))
        if v[2:] in seen:
            continue
        seen.add(v[2:])
        op.restrict([v], image_shape=(plan.height, plan.width))
        op.restrict_y(y, [v])


def restore(
    y: torch.Tensor | np.ndarray | str | Path,
    task: str | None = None,
    *,
    op: Any = None,
    method: str = "ddnm",
    model: str | Path | None = None,
    config: str | Path | dict | None = None,
    models_dir: str | Path | None = None,
    steps: int | None = None,
    eta: float | None = None,
    sigma_y: float = 0.0,
    travel: tuple[int, int] = (1, 1),
    start_t: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    hierarchical: bool = False,
    hir_factor: int | None = None,
    seed: int = 0,
    batch: int = 8,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    compat: str = "paper",
    progress: bool | Callable[[Any], None] = False,
    on_plan: Callable[[Any], None] | None = None,
    **task_opts: Any,
) -> RestoreResult:
    """Restore an observation ``y`` (``[1, C, h, w]`` in [0, 1], an image path or a ``.npy`` path) of any
    size.

    Give either ``task`` (+ task options, e.g. ``scale=4``, ``mask=...``) or a ready ``op``. Returns a
    ``RestoreResult``; ``info`` holds the plan, network calls, seconds, ``consistency_rms`` (RMS of A x − y
    in [0, 1] units, before clamping) and the tiles' ``seam_score``. ``hierarchical`` adds HiR's low
    resolution phase (factor ``hir_factor``, default 2). ``batch`` only changes speed and memory: the result
    is the same for every batch (per-tile noise streams), up to float rounding.
    """
    from diffrestore.operators.factory import make_operator
    from diffrestore.tiling.msr import bound
    from diffrestore.tiling.restore import restore_tiled
    from diffrestore.tiling.runner import tqdm_progress

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if int(batch) < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    if steps is not None and int(steps) < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    if sigma_y < 0:
        raise UserError(f"sigma_y must be >= 0, got {sigma_y}")
    if hierarchical and compat != "paper":
        raise UserError("hierarchical restoration has no official reference code: use compat 'paper'")
    if hir_factor is not None and not hierarchical:
        raise UserError("hir_factor (--hir-factor) needs hierarchical restoration (--hierarchical)")
    if isinstance(y, (str, Path)):
        y = read_observation(y)
    y = _as_batch(torch.as_tensor(y, dtype=torch.float32))
    if op is None:
        if task is None:
            raise UserError("give a task (e.g. task='sr', scale=4) or an operator")
        op = make_operator(task, y_shape=tuple(y.shape), **task_opts)
        y = op.y_from_image(y)
    else:
        if task_opts:
            raise UserError(f"task options {sorted(task_opts)} given together with a ready operator")
        if task is not None and getattr(op, "task", task) != task:
            raise UserError(f"the operator is for task {op.task!r}, not {task!r}")
        if y.shape[1] == 3:
            y = op.y_from_image(y)
    torch_dtype = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise UserError(f"unknown dtype {dtype!r}: float32, bfloat16 or float16")

    x_shape = _x_shape(op, y)
    _check_observation(op, y, x_shape)
    op = bound(op, tuple(x_shape[1:]))

    t0 = time.perf_counter()
    denoiser, spec = load_denoiser(model, config, models_dir, device, torch_dtype)
    P = _patch_size(spec, tile)
    if tile is None and _wide_footprint(op):
        P = _whole_image_tile(P, x_shape)
    sampling = spec.diffusion or {}  # a model card may suggest its own sampling defaults
    steps = int(steps or sampling.get("sampling_steps", 50))
    eta = float(sampling.get("sampling_eta", 0.85) if eta is None else eta)
    if start_t is None and _pinv_keeps_constants(op, x_shape):
        # the model's warm start only where A⁺y is already a photo-like image (SR, denoising, colourisation,
        # deblurring); for inpainting / CS, A⁺y has zeros in the holes, so start from pure noise
        start_t = sampling.get("sampling_start")
    start_t = None if start_t is None or int(start_t) < 0 else int(start_t)
    if _cannot_tile(op, x_shape):
        op = WholeImage(op, (int(x_shape[-2]), int(x_shape[-1])))
    y = y.to(device)
    op = op.to(device=device) if hasattr(op, "to") else op
    y_model = 2 * y - op.A(torch.ones(x_shape, device=device))

    plans: list[Any] = []

    def _on_plan(summary: Any) -> None:
        # phases on the full image (MSR, HiR phase 2) use this operator: check its tiles before any work
        if summary.phase in ("msr", "hir phase 2"):
            _check_tiles(op, y, summary.plan)
        plans.append(summary)
        if on_plan is not None:
            on_plan(summary)

    prog = tqdm_progress() if progress is True else (progress or None)
    t_load = time.perf_counter() - t0
    # noise-free data: finish with one whole-image projection onto A x = y, which MSR alone cannot give
    # for operators wider than a pixel block (bicubic SR, blur); a no-op up to rounding for the others.
    x = restore_tiled(denoiser, op, y_model, method=method, seed=seed, steps=steps, eta=eta, sigma_y=sigma_y,
                      travel=tuple(travel), start_t=start_t, tile=P, overlap=overlap, batch=int(batch),
                      hierarchical=hierarchical, factor=int(hir_factor) if hir_factor is not None else 2,
                      compat=compat, final_projection=(sigma_y == 0 and compat == "paper"),
                      on_plan=_on_plan, progress=prog)
    x01 = (x.float() + 1) / 2
    seconds = time.perf_counter() - t0
    inner = op.inner if isinstance(op, WholeImage) else op
    info = _report(inner, x01, y, plans, spec, seconds, t_load, steps, P, seed)
    return RestoreResult(image=x01.clamp(0, 1), x=x01, op=inner, y=y, info=info)


#: Largest image (pixels) restored as ONE tile when the operator's footprint is wider than a pixel block.
WHOLE_IMAGE_PIXELS = 512 * 512


def _pinv_keeps_constants(op: Any, x_shape: Sequence[int]) -> bool:
    """``A⁺A 1 = 1``: the operator observes a flat image everywhere (no holes, no missing coefficients)."""
    ones = torch.ones(tuple(int(v) for v in x_shape))
    return bool(torch.allclose(op.pinv(op.A(ones)), ones, atol=1e-3))


def _wide_footprint(op: Any) -> bool:
    """Bicubic SR and blur couple pixels across tile edges: their tile operators leave the LR rows / blurred
    pixels that straddle an edge unobserved, and pinning finished pixels there leaves visible lines (measured:
    26.4 dB tiled vs 34.7 dB whole-image on a 128² SR ×4 crop). Until the tiler handles such halos, these
    operators are restored as one tile where memory allows."""
    from diffrestore.operators.deblur import Blur
    from diffrestore.operators.sr import BicubicSR

    parts = getattr(op, "ops", None) or [getattr(op, "inner", op)]
    return any(isinstance(o, (BicubicSR, Blur)) for o in parts)


def _whole_image_tile(P: int, x_shape: Sequence[int]) -> int:
    """One tile covering the image (a multiple of 8, the UNets' downsampling), if it fits the budget."""
    h, w = int(x_shape[-2]), int(x_shape[-1])
    if max(h, w) <= P or h * w > WHOLE_IMAGE_PIXELS:
        return P
    return -(-max(h, w) // 8) * 8


def _cannot_tile(op: Any, x_shape: Sequence[int]) -> bool:
    """True when ``op`` refuses even the whole-image tile (it has no restriction at all)."""
    h, w = int(x_shape[-2]), int(x_shape[-1])
    try:
        op.restrict([(0, 0, h, w)], image_shape=(h, w))
    except UserError:
        return True
    except (NotImplementedError, AttributeError):
        return True
    return False


def _x_shape(op: Any, y: torch.Tensor) -> tuple[int, ...]:
    from diffrestore.tiling.msr import image_shape

    return tuple(int(v) for v in image_shape(op, y))


def _report(op: Any, x01: torch.Tensor, y: torch.Tensor, plans: list[Any], spec: Any, seconds: float,
            t_load: float, steps: int, P: int, seed: int) -> dict[str, Any]:
    from diffrestore.metrics import consistency, seam_score

    info: dict[str, Any] = {
        "model": spec.name,
        "patch": P,
        "steps": steps,
        "seed": seed,
        "seconds": round(seconds, 3),
        "load_seconds": round(t_load, 3),
        "consistency_rms": float(consistency(op, x01, y)),
        "consistency_rms_clamped": float(consistency(op, x01.clamp(0, 1), y)),
        "phases": [],
    }
    for s in plans:
        info["phases"].append({"phase": s.phase, "tiles": s.plan.n_tiles, "waves": s.n_waves,
                               "network_calls": s.network_calls, "tile_evaluations": s.tile_evaluations})
    info["seam_score"] = None
    if plans:  # seams can only appear where a tile's new pixels meet an earlier tile's: its edges
        boxes = [tuple(b) for b in plans[-1].plan.boxes]
        from diffrestore.tiling.msr import operator_align

        # against the operator's own lattice (SR: the LR pixel grid every tile edge lies on)
        score = float(seam_score(x01.clamp(0, 1), boxes=boxes, grid=operator_align(op)))
        info["seam_score"] = None if np.isnan(score) else score
    info["network_calls"] = sum(p["network_calls"] for p in info["phases"])
    return info
