"""Record a sampler's per-step callback under the refs' ``trace.*`` names (tests, debugging, previews).

Why a callback and not a ``trace=`` dict inside each sampler: one hook serves progress bars, traces and
previews alike (k-diffusion's style), and samplers stay free of bookkeeping.
"""

from __future__ import annotations

from typing import Any

import torch

from diffrestore.progress import StepCallback

__all__ = ["tracer"]


def tracer(trace: dict[str, Any], prefix: str = "") -> StepCallback:
    """A step callback filling ``trace``: ``xT``, ``x0.KKK``, ``x0hat.KKK``, ``xt.KKK`` and ``steps``.

    Tensors are detached copies; ``steps`` collects each step's ``info`` dict (when the sampler gives one).
    ``prefix`` is prepended to tensor names (e.g. ``"05."`` gives ``xt.05.KKK`` for a tile index).
    """
    trace.setdefault("steps", [])

    def callback(step: int, total: int, **kw: Any) -> None:
        if step < 0:
            if "x" in kw:
                trace["xT" if not prefix else f"xstart.{prefix.rstrip('.')}"] = kw["x"].detach().clone()
            return
        for name in ("x0", "x0hat"):
            v = kw.get(name)
            if isinstance(v, torch.Tensor):
                trace[f"{name}.{prefix}{step:03d}"] = v.detach().clone()
        if isinstance(kw.get("x"), torch.Tensor):
            trace[f"xt.{prefix}{step:03d}"] = kw["x"].detach().clone()
        if "info" in kw:
            trace["steps"].append(kw["info"])

    return callback
