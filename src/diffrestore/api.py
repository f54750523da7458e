"""``diffrestore.restore``: one call from an observation to a restored image, any size, any method.

The CLI ``restore`` command and the evaluation harness are thin shells around this function, so Python
users, the harness and the CLI run exactly the same pipeline: operator from the task options → the
observation in model units (``methods.base.Observation``, the one units boundary) → the registered method
(its options validated from its own declarations) → the tiling layer → image in [0, 1] plus a report.

Like a diffusers pipeline's ``__call__``, this is the one place with a long keyword list: every keyword
that is not a task option is a method option declared in ``diffrestore.methods`` (``steps``, ``tile``,
``seed``, ...), checked against the chosen method.

Order of work (why): everything a user can get wrong — the observation file, the task options, the
operator's size rules, the method options, the model file, whether the operator can be cut into the
planned tiles — is checked before the first network call, so a bad input fails in well under a second with
one line and nothing is written. ``on_plan`` is only called once all of that has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError
from diffrestore.methods.prior import load_denoiser

__all__ = ["RestoreResult", "load_denoiser", "read_observation", "restore"]



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


def restore(
    y: torch.Tensor | np.ndarray | str | Path,
    task: str | None = None,
    *,
    op: Any = None,
    method: str = "ddnm",
    sigma_y: float = 0.0,
    progress: bool | Callable[[Any], None] = False,
    on_plan: Callable[[Any], None] | None = None,
    executor: Any = None,
    **options: Any,
) -> RestoreResult:
    """Restore an observation ``y`` (``[1, C, h, w]`` in [0, 1], an image path or a ``.npy`` path) of any
    size with a registered ``method`` (``diffrestore.methods``).

    Give either ``task`` (+ task options, e.g. ``scale=4``, ``mask=...``) or a ready ``op``. Every other
    keyword is an option of the method (``model``, ``steps``, ``eta``, ``travel``, ``start_t``, ``tile``,
    ``overlap``, ``batch``, ``hierarchical``, ``hir_factor``, ``seed``, ``device``, ``dtype``, ...; see
    ``diffrestore restore --help``). ``sigma_y`` is the noise std of y in [0, 1] units for every method.
    Returns a ``RestoreResult``; ``info`` holds the plan, network calls, seconds, ``consistency_rms`` (RMS
    of A x − y in [0, 1] units, before clamping) and the tiles' ``seam_score``. ``batch`` only changes
    speed and memory: the result is the same for every batch (per-tile noise streams), up to rounding.
    ``executor`` (``tiling.distributed.TorchDistributed()`` under torchrun) spreads each wave's tiles over
    processes; the result is bit-identical to one process.
    """
    from diffrestore.methods.base import Observation, all_option_fields, get_method
    from diffrestore.operators.factory import make_operator
    from diffrestore.progress import tqdm_bar
    from diffrestore.tiling.distributed import use_executor
    from diffrestore.tiling.msr import bound

    cls = get_method(method)
    known = all_option_fields()
    method_opts = {k: v for k, v in options.items() if k in known}
    task_opts = {k: v for k, v in options.items() if k not in known}
    meth = cls.configure(method_opts)
    sigma_y = float(sigma_y)
    if not np.isfinite(sigma_y) or sigma_y < 0:
        raise UserError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
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

    x_shape = _x_shape(op, y)
    _check_observation(op, y, x_shape)
    op = bound(op, tuple(x_shape[1:]))
    obs = Observation.from_file_units(op, y, sigma_y, x_shape, device=meth.device)

    t0 = time.perf_counter()
    prog = tqdm_bar() if progress is True else (progress or None)
    with use_executor(executor):
        run = meth.run(obs, on_plan=on_plan, progress=prog)
    x01 = Observation.to_file_units(run.x)
    seconds = time.perf_counter() - t0
    used = run.op if run.op is not None else obs.op  # blind methods report against their estimate
    info = _report(used, x01, obs.y01, run, seconds)
    return RestoreResult(image=x01.clamp(0, 1), x=x01, op=used, y=obs.y01, info=info)


def _x_shape(op: Any, y: torch.Tensor) -> tuple[int, ...]:
    from diffrestore.tiling.msr import image_shape

    return tuple(int(v) for v in image_shape(op, y))


def _report(op: Any, x01: torch.Tensor, y: torch.Tensor, run: Any, seconds: float) -> dict[str, Any]:
    from diffrestore.metrics import consistency, seam_score
    from diffrestore.tiling.msr import operator_align

    info: dict[str, Any] = {
        **run.info,
        "seconds": round(seconds, 3),
        "consistency_rms": float(consistency(op, x01, y)),
        "consistency_rms_clamped": float(consistency(op, x01.clamp(0, 1), y)),
        "phases": [{"phase": s.phase, "tiles": s.plan.n_tiles, "waves": s.n_waves,
                    "network_calls": s.network_calls, "tile_evaluations": s.tile_evaluations}
                   for s in run.plans],
        "seam_score": None,
    }
    if run.plans:  # seams can only appear where a tile's new pixels meet an earlier tile's: its edges
        boxes = [tuple(b) for b in run.plans[-1].plan.boxes]
        # against the operator's own lattice (SR: the LR pixel grid every tile edge lies on)
        score = float(seam_score(x01.clamp(0, 1), boxes=boxes, grid=operator_align(op)))
        info["seam_score"] = None if np.isnan(score) else score
    info["network_calls"] = sum(p["network_calls"] for p in info["phases"])
    return info
