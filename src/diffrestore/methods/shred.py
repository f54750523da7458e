"""SHRED: zero-shot restoration by inverting a short deterministic DDIM chain (METHODS §4).

The reverse chain is never modified: the only unknown is the start noise ``x_T`` and the restored image is
``x_0 = f(x_T)``, ``f`` the η = 0 DDIM map at a large stride δt. Adam then minimises the data misfit over
``x_T`` only (and over a kernel generator in the blind case), so every iterate is a sample of the prior.

Conventions (all choices the papers leave open are keyword options with the defaults below):

* Chain: diffusers/BIRD "leading" timesteps ``range(0, T, δt)`` reversed (900, 800, …, 0 for T = 1000,
  δt = 100: 10 network calls), each step jumping to ``t − δt`` (ᾱ = 1 after t = 0), x_{0|t} clipped to
  [−1, 1] and ε re-derived from the clipped x_0 (``clip=True``). Timesteps are the Denoiser's ORIGINAL
  indices.
* Units: ``y`` and the images are in model range [−1, 1] (the caller converts files once, e.g.
  ``y_model = 2 y − A(1)``). The data term of one sample is the **mean** squared error over its y elements
  (what the papers' learning rates were tuned for); the batch loss is the **sum** over samples, so a batch
  behaves like independent per-sample runs (METHODS §3.4).
* Gradients: ``grad="network"`` (METHODS §4 (a), exact) back-propagates through every network call with
  per-step gradient checkpointing (memory ≈ one step); ``grad="formula"`` (§4 (b), BIRD's fast mode) runs
  the network under ``no_grad`` and differentiates only the explicit x_t terms of each DDIM step. Both
  produce the same forward values.
* Sphere projection ``x_T ← √D x_T/‖x_T‖`` per sample at the start and after every update: always in
  formula mode (its gradient is only usable there), by default also in network mode (BIRD;
  ``project=False`` turns it off there).
* Stopping: ``iters`` updates, or earlier per sample when its loss ≤ ``tol`` or has not improved by a
  relative ``min_delta`` for ``patience`` evaluations (**⚠ unspecified** in SHRED; both off by default). A
  stopped sample stays in the batch but is no longer updated (its rows of the Adam update are masked).
* Result: per sample the iterate with the lowest loss among all evaluations (``keep="best"``) or the last
  one (``keep="last"``); ``x0 == f(x_T)`` holds for the returned pair either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import NoiseSource, Stream, draw_batch
from diffrestore.errors import UserError
from diffrestore.methods.base import Method, Observation, Prior, register
from diffrestore.methods.options import ModelOptions, RunOptions, TilingOptions, option
from diffrestore.methods.shred_kernel import KernelGenerator, blur
from diffrestore.progress import Ticker
from diffrestore.tiling.runner import masked_mse

__all__ = [
    "Shred",
    "ShredOptions",
    "ShredResult",
    "ShredSolver",
    "ddim_chain",
    "init_x_T",
    "overlap_loss",
    "shred_solve",
    "shred_timesteps",
    "sphere_project",
]

GradMode = Literal["network", "formula"]
_GRAD_ALIASES = {"network": "network", "exact": "network", "formula": "formula", "fast": "formula"}


class Callback(Protocol):
    """Progress hook: ``callback(it, total, loss, **info)`` once per update (``it`` counts from 1)."""

    def __call__(self, it: int, total: int, loss: float, **info: Any) -> None: ...


@dataclass
class ShredResult:
    """What ``shred_solve`` found.

    ``x0`` ``[B, C, H, W]`` in [−1, 1] with ``x0 == f(x_T)``; ``x_T`` the matching start noise; ``kernel``
    ``[n, K, K]`` (blind mode, the kernel belonging to the returned iterate for ``n = B``; the final kernel
    for a shared ``n = 1``) or None; ``losses`` ``[E, B]`` per-sample loss (data MSE + per-sample extra
    term) at every evaluation (E = ``iters_run`` + 1; rows after a sample stopped repeat its last value);
    ``iters_run`` Adam updates made; ``updates`` ``[B]`` updates each sample received.
    """

    x0: Tensor
    x_T: Tensor
    kernel: Tensor | None
    losses: Tensor
    iters_run: int
    updates: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def shred_timesteps(num_timesteps: int, stride: int = 100) -> list[tuple[int, int]]:
    """DDIM jumps ``(t, s)`` in original indices: ``t`` over ``range(0, T, stride)`` reversed,
    ``s = t − stride`` (−1, i.e. ᾱ = 1, after t = 0).

    T = 1000, stride 100: (900, 800), …, (100, 0), (0, −1).
    """
    if not 1 <= int(stride) <= num_timesteps:
        raise ValueError(f"stride must lie in 1..{num_timesteps}, got {stride}")
    ts = list(range(0, num_timesteps, int(stride)))[::-1]
    return [(t, t - int(stride) if t - int(stride) >= 0 else -1) for t in ts]


def init_x_T(
    noise: NoiseSource,
    shape: Sequence[int],
    streams: Sequence[Stream] | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """x_T^0 ~ N(0, I) via ``draw_batch`` (one draw per element's stream, so tiles keep their numbers)."""
    return draw_batch(noise, shape, streams, dtype=torch.float32, device=device)


def sphere_project(x: Tensor) -> Tensor:
    """Per sample ``√D x/‖x‖`` (D = elements per sample): where N(0, I) in high dimension concentrates."""
    d = x[0].numel()
    norm = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x * (math.sqrt(d) / norm).reshape(-1, *([1] * (x.dim() - 1)))


def _abar(den: Denoiser, t: int) -> float:
    return float(den.abar(t)[0])


def _ddim_update(x_t: Tensor, eps: Tensor, a_t: float, a_s: float, clip: bool) -> Tensor:
    """One η = 0 DDIM jump given ε (x_{0|t} optionally clipped, ε then re-derived from it)."""
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
    if a_s >= 1.0:
        return x0
    return math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * eps


@torch.no_grad()
def ddim_invert(denoiser: Denoiser, x0: Tensor, *, stride: int = 100) -> Tensor:
    """The DDIM chain run backwards from an image: ``x_T`` with ``f(x_T) ≈ x0`` (not in SHRED's paper).

    Why: SHRED starts from pure noise and needs 100+ iterations to reach the observation; on a CPU budget
    of 20-40 iterations, starting from the inversion of ``A⁺y`` makes every iterate at least as
    consistent as ``A⁺y``'s generated twin, and the optimisation then adds detail (``init="inversion"``).
    """
    x = x0.float()
    B = x.shape[0]
    for t, s in reversed(shred_timesteps(denoiser.num_timesteps, stride)):  # s → t, clean side first
        a_s, a_t = _abar(denoiser, s), _abar(denoiser, t)
        if s < 0:  # from the clean image: ε at the first noise level
            eps = denoiser.eps(x, torch.full((B,), t, dtype=torch.long, device=x.device))
            x = math.sqrt(a_t) * x + math.sqrt(1 - a_t) * eps
            continue
        eps = denoiser.eps(x, torch.full((B,), s, dtype=torch.long, device=x.device))
        x0s = (x - math.sqrt(1 - a_s) * eps) / math.sqrt(a_s)
        x = math.sqrt(a_t) * x0s + math.sqrt(1 - a_t) * eps
    return x


def ddim_chain(
    denoiser: Denoiser,
    x_T: Tensor,
    *,
    stride: int = 100,
    clip: bool = True,
    checkpoint: bool = True,
    grad: GradMode | str = "network",
) -> Tensor:
    """``x_0 = f(x_T)``: the deterministic DDIM chain (see ``shred_timesteps``), differentiable in ``x_T``.

    ``grad="network"``: autograd through every network call; with ``checkpoint`` each step is
    checkpointed (non-reentrant), keeping only the step inputs, so backward memory ≈ one step.
    ``grad="formula"``: ε comes from the network under ``no_grad`` and only the scheduler formula is
    differentiated (∇_{x_T} = ∇_{x_0}/√ᾱ_T when nothing clips). Without a gradient to track (``no_grad``
    or ``x_T`` not requiring grad) both are a plain forward. Freeze the network's parameters
    (``requires_grad_(False)``) so backward computes no weight gradients; ``shred_solve`` does.
    """
    mode = _GRAD_ALIASES.get(str(grad))
    if mode is None:
        raise ValueError(f"grad must be 'network' or 'formula', got {grad!r}")
    tracking = torch.is_grad_enabled() and x_T.requires_grad
    x = x_T.float() if x_T.dtype != torch.float32 else x_T
    B = x.shape[0]
    for t, s in shred_timesteps(denoiser.num_timesteps, stride):
        a_t, a_s = _abar(denoiser, t), _abar(denoiser, s)
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        if not tracking or mode == "formula":
            with torch.no_grad():
                eps = denoiser.eps(x.detach(), tt)
            x = _ddim_update(x, eps, a_t, a_s, clip)
        else:
            def step(xt: Tensor, tt: Tensor = tt, a_t: float = a_t, a_s: float = a_s) -> Tensor:
                return _ddim_update(xt, denoiser.eps(xt, tt), a_t, a_s, clip)

            x = _checkpoint(step, x, use_reentrant=False) if checkpoint else step(x)
    return x


def overlap_loss(
    x0: Tensor,
    known_mask: Tensor,
    finished: Tensor,
    mu: float = 10.0,
    reduction: Literal["sum", "none"] = "sum",
) -> Tensor:
    """MSR as a loss (METHODS §3.4): ``μ ‖M ⊙ (x_0 − x_prev)‖² / max(1, count(M))`` per tile.

    ``known_mask`` M (bool or 0/1, ``[B, 1|C, H, W]``) marks pixels already finished by earlier tiles,
    ``finished`` holds their values (model range). The count is of masked *elements* (M broadcast to
    x_0's shape), so μ = 1 weighs like the per-sample MSE data term; tiles without finished pixels give 0.
    ``reduction="sum"``: the scalar for ``extra_loss``; ``"none"``: ``[B]`` per tile (then ``shred_solve``
    also uses it for per-tile stopping). ``sqrt`` of the ``"none"`` value with μ = 1 is the RMS overlap
    residual worth logging.
    """
    return mu * masked_mse(x0, known_mask, finished, reduction)


def _forward_fn(op_or_fn: Any) -> Callable[[Tensor], Tensor]:
    if op_or_fn is None:
        return lambda x: x
    a = getattr(op_or_fn, "A", None)
    if callable(a):
        return a
    if callable(op_or_fn):
        return op_or_fn
    raise TypeError(f"op_or_fn must be an operator with .A or a callable, got {type(op_or_fn).__name__}")


@contextmanager
def _frozen(net: nn.Module) -> Iterator[None]:
    """Parameters out of autograd for the duration (no weight gradients), flags restored afterwards."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)


class _MaskedAdam:
    """Adam (PyTorch's update, default betas/eps) on tensors whose leading dim indexes samples; rows of
    stopped samples are neither updated nor advance their step counts, so a batch equals per-sample runs."""

    def __init__(self, params: Sequence[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros(p.shape[0], dtype=torch.float64, device=p.device) for p in self.params]

    @torch.no_grad()
    def step(self, active: Tensor) -> None:
        """Update the rows where ``active`` (``[rows]`` bool, one per leading index) is True."""
        for p, m, v, n in zip(self.params, self.m, self.v, self.steps):
            if p.grad is None:
                continue
            act = active if active.numel() == p.shape[0] else active.any().reshape(1).expand(p.shape[0])
            shape = (-1, *([1] * (p.dim() - 1)))
            a = act.reshape(shape)
            g = p.grad
            n.add_(act.to(n.dtype))
            m.copy_(torch.where(a, self.b1 * m + (1 - self.b1) * g, m))
            v.copy_(torch.where(a, self.b2 * v + (1 - self.b2) * g * g, v))
            nn_ = n.clamp_min(1.0)
            bc1 = (1 - self.b1**nn_).to(p.dtype).reshape(shape)
            bc2 = (1 - self.b2**nn_).to(p.dtype).reshape(shape)
            upd = (self.lr / bc1) * m / (v.sqrt() / bc2.sqrt() + self.eps)
            p.sub_(torch.where(a, upd, torch.zeros_like(upd)))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _where_rows(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(mask.reshape(-1, *([1] * (new.dim() - 1))), new, old)


def shred_solve(
    denoiser: Denoiser,
    op_or_fn: Any,
    y: Tensor,
    *,
    x_T: Tensor,
    iters: int = 100,
    lr: float = 3e-3,
    stride: int = 100,
    grad: GradMode | str = "network",
    clip: bool = True,
    checkpoint: bool = True,
    project: bool | None = None,
    tol: float | None = None,
    patience: int | None = None,
    min_delta: float = 1e-4,
    extra_loss: Callable[[Tensor], Tensor] | None = None,
    kernel: KernelGenerator | None = None,
    kernel_lr: float = 2e-4,
    blur_padding: str = "circular",
    keep: Literal["best", "last"] = "best",
    callback: Callback | Callable[..., None] | None = None,
) -> ShredResult:
    """Restore a batch by optimising its DDIM start noise (Adam on ``x_T``; METHODS §4).

    ``op_or_fn``: a library operator (its ``A`` is used), any differentiable callable ``x → y`` (non-linear
    degradations), or None (identity). ``y``: ``[B, …]`` in model units, matching ``H(x)``. Loss of sample
    b: ``mean((H(f(x_T^b)) − y^b)²)`` + its share of ``extra_loss``; Adam minimises the sum over active
    samples. ``extra_loss(x0)`` returns a scalar (added to the sum only) or ``[B]`` per-sample terms (also
    used for stopping / best selection), e.g. ``lambda x0: overlap_loss(x0, M, X_prev, mu, "none")``.

    Blind mode: pass ``kernel`` (a :class:`KernelGenerator`, 1 shared or B kernels); then
    ``H(x) = op_or_fn(k_θ * x)`` ('same' blur, ``blur_padding``) and θ is updated simultaneously with ``x_T``
    (separate learning rate ``kernel_lr``, BIRD's default 2e-4); the generator is trained in place.
    Defaults: ``lr`` 3e-3 / 100 iterations (SHRED SR and blind settings; use 1e-2 for inpainting and CS),
    stride 100.
    ``callback(it, total, loss, **info)`` after every update, ``loss`` the summed loss that was
    differentiated, ``info``: ``active`` (samples still running), ``per_sample`` (list of floats).
    """
    mode = _GRAD_ALIASES.get(str(grad))
    if mode is None:
        raise ValueError(f"grad must be 'network' or 'formula', got {grad!r}")
    if project is None:
        project = True
    if mode == "formula" and not project:
        raise ValueError("grad='formula' needs the sphere projection (project=True): its gradient is "
                         "only usable while x_T stays at radius sqrt(D)")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if y.shape[0] != x_T.shape[0]:
        raise ValueError(f"y has a batch of {y.shape[0]}, x_T of {x_T.shape[0]}")
    if kernel is not None and kernel.n not in (1, x_T.shape[0]):
        raise ValueError(f"{kernel.n} kernels for a batch of {x_T.shape[0]}")

    H = _forward_fn(op_or_fn)
    B = x_T.shape[0]
    dev = x_T.device
    y = y.to(device=dev, dtype=torch.float32)
    x = x_T.detach().to(torch.float32).clone()
    if project:  # start on the sphere too, so every iterate (and the returned x_T) lies on it
        x = sphere_project(x)
    x.requires_grad_(True)
    opt = _MaskedAdam([x], lr)
    kopt = _MaskedAdam(list(kernel.parameters()), kernel_lr) if kernel is not None else None

    def evaluate(track: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """x0, per-sample loss [B], a scalar extra term (or None), kernel."""
        with torch.set_grad_enabled(track):
            x0 = ddim_chain(denoiser, x, stride=stride, clip=clip, checkpoint=checkpoint, grad=mode)
            k = kernel() if kernel is not None else None
            pred = H(blur(x0, k, blur_padding) if k is not None else x0)
            per = (pred - y).square().flatten(1).mean(1)
            scalar_extra: Tensor | None = None
            if extra_loss is not None:
                e = extra_loss(x0)
                if e.dim() == 0:
                    scalar_extra = e
                elif e.shape == (B,):
                    per = per + e
                else:
                    raise ValueError(f"extra_loss must return a scalar or [B], got {tuple(e.shape)}")
        return x0, per, scalar_extra, k

    active = torch.ones(B, dtype=torch.bool, device=dev)
    best = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
    ref = best.clone()  # loss level at the last significant (> min_delta relative) improvement
    since = torch.zeros(B, dtype=torch.long, device=dev)
    updates = torch.zeros(B, dtype=torch.long, device=dev)
    out_x0 = torch.zeros_like(x)
    out_xT = torch.zeros_like(x)
    out_k: Tensor | None = None
    history: list[Tensor] = []
    it = 0
    with _frozen(denoiser.net):
        while True:
            last_eval = it == iters
            x0, per, scalar_extra, k = evaluate(track=not last_eval)
            per_d = per.detach().to(torch.float64)
            history.append(torch.where(active, per_d, history[-1] if history else per_d))
            better = active & ~(per_d >= best)  # NaN-safe: a first NaN evaluation is still kept
            pick = (better | (active & torch.isinf(best))) if keep == "best" else active
            out_x0 = _where_rows(pick, x0.detach(), out_x0)
            out_xT = _where_rows(pick, x.detach(), out_xT)
            if k is not None:
                kk = k.detach()
                if kernel is not None and kernel.n == B:
                    out_k = kk if out_k is None else _where_rows(pick, kk, out_k)
                elif pick.any() or out_k is None:
                    out_k = kk
            best = torch.where(better, per_d, best)
            significant = active & (per_d < ref * (1 - min_delta))
            ref = torch.where(significant, per_d, ref)
            since = torch.where(significant, torch.zeros_like(since), since + active.long())
            stop = torch.zeros_like(active)
            if tol is not None:
                stop |= per_d <= tol
            if patience is not None:
                stop |= since >= patience
            active = active & ~stop
            if last_eval or not bool(active.any()):
                break
            opt.zero_grad()
            if kopt is not None:
                kopt.zero_grad()
            total = (per * active.to(per.dtype)).sum()  # stopped samples no longer pull on a shared kernel
            if scalar_extra is not None:
                total = total + scalar_extra
            total.backward()
            opt.step(active)
            if kopt is not None:
                kopt.step(active)
            with torch.no_grad():
                if project:
                    x.copy_(_where_rows(active, sphere_project(x), x))
            updates += active.long()
            it += 1
            if callback is not None:
                callback(it, iters, float(total.detach()), active=int(active.sum()),
                         per_sample=[float(v) for v in per_d])
    return ShredResult(x0=out_x0, x_T=out_xT, kernel=out_k, losses=torch.stack(history).float(),
                       iters_run=it, updates=updates)


# ---------------------------------------------------------------------- the method (contract)
@dataclass
class ShredOptions:
    """SHRED's own options (METHODS §4)"""

    iters: int = option(100, "Adam iterations on x_T per tile (paper: 50-150)", minimum=0)
    lr: float = option(3e-3, "Adam learning rate on x_T (paper: 3e-3 SR/blind, 1e-2 inpainting/CS)",
                       minimum=0)
    init: str = option("noise", "start: noise (the paper) or inversion (DDIM inversion of A+y; fewer "
                       "iterations needed)", choices=("noise", "inversion"))
    stride: int = option(100, "DDIM stride δt (T/δt network calls per chain)", minimum=1)
    grad: str = option("formula", "gradient: network (exact, checkpointed; the paper) or formula (BIRD's "
                       "cheap mode, no network backward)", choices=("network", "formula"))
    tol: float | None = option(None, "stop a tile when its loss is at or below this", minimum=0)
    patience: int | None = option(None, "stop a tile after this many iterations without improvement",
                                  minimum=1)
    overlap_weight: float = option(10.0, "μ of the MSR overlap loss on finished pixels (METHODS §3.4)",
                                   minimum=0)
    kernel_size: int = option(41, "blind deblurring: size of the estimated kernel", minimum=3)
    kernel_lr: float = option(2e-4, "blind deblurring: Adam learning rate of the kernel generator", minimum=0)
    kernel_crop: int = option(256, "blind deblurring: the kernel is estimated on a centre crop this size",
                              minimum=32)


class ShredSolver:
    """``TileSolver``: SHRED on a batch of tiles, MSR as an overlap loss on the finished pixels.

    Each tile starts from its own stream's ``N(0, I)``; the loss is the sum of per-tile losses (so
    batching does not change a tile's result), the overlap term is per tile (``ctx.overlap_loss``
    reduction ``none``) and, in HiR phase 2, the low-frequency misfit is added the same way.
    """

    sequential = False

    def __init__(self, denoiser: Denoiser, opts: ShredOptions, *, noise: NoiseSource,
                 progress: Any = None, kernel: Tensor | None = None) -> None:
        self.denoiser, self.o, self.noise, self.progress = denoiser, opts, noise, progress
        self.calls_per_tile = (opts.iters + 1) * len(shred_timesteps(denoiser.num_timesteps, opts.stride))
        self.kernel = kernel
        self._batch = 0

    def __call__(self, ctx: Any) -> Tensor:
        o = self.o
        if o.init == "inversion":
            x_T = ddim_invert(self.denoiser, ctx.low_correct(ctx.pin(ctx.op.pinv(ctx.y))), stride=o.stride)
        else:
            x_T = init_x_T(self.noise, ctx.shape, ctx.streams, device=ctx.y.device)
        mu = o.overlap_weight

        def extra(x0: Tensor) -> Tensor:
            e = mu * ctx.overlap_loss(x0, reduction="none") if ctx.any_known else x0.new_zeros(x0.shape[0])
            if ctx.low is not None:
                e = e + mu * (ctx.low_correct(x0) - x0).square().flatten(1).mean(1)
            return e

        self._batch += 1
        ticker = Ticker(self.progress, f"shred tiles {self._batch}", o.iters, unit="it")
        res = shred_solve(self.denoiser, ctx.op, ctx.y, x_T=x_T, iters=o.iters, lr=o.lr, stride=o.stride,
                          grad=o.grad, tol=o.tol, patience=o.patience, extra_loss=extra,
                          callback=lambda it, total, loss, **kw: ticker.tick(1, loss=float(loss)))
        return res.x0.detach()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iters": self.o.iters, "grad": self.o.grad, "stride": self.o.stride}
        if self.kernel is not None:
            out["kernel"] = self.kernel  # the estimated blur kernel [K, K] (blind deblurring)
        return out


@register
class Shred(Method):
    """SHRED: optimise only the DDIM start noise so that the generated image explains y; blind deblurring
    with a SelfDeblur kernel generator (one kernel per image, estimated on a centre crop)."""

    name = "shred"
    label = "SHRED"
    description = "SHRED: restoration by optimising the DDIM initial noise (blind deblurring too)"
    groups = (ModelOptions, TilingOptions, RunOptions)
    Options = ShredOptions
    needs_grad = True
    blind_capable = True

    def load(self) -> Prior:
        from diffrestore.methods.prior import load_prior

        m = self.model
        prior = load_prior(m.model, m.config, m.models_dir, self.device, self.dtype)
        if prior.denoiser.num_timesteps % self.group(ShredOptions).stride:
            raise UserError(f"stride {self.group(ShredOptions).stride} must divide the model's "
                            f"{prior.denoiser.num_timesteps} timesteps")
        return prior

    def prepare(self, prior: Prior, obs: Observation, progress: Any = None) -> Prior:
        """Blind: estimate one kernel on a centre crop (joint Adam on x_T and the kernel generator)."""
        if not getattr(obs.op, "blind", False):
            return prior
        from diffrestore.diffusion.noise import SeededNoise
        from diffrestore.operators.deblur import Blur

        o = self.group(ShredOptions)
        _, c, h, w = obs.x_shape
        ch, cw = min(h, o.kernel_crop), min(w, o.kernel_crop)
        if min(ch, cw) <= o.kernel_size:
            raise UserError(f"the image ({w}x{h}) must be larger than the kernel size {o.kernel_size}")
        top, left = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
        y = obs.y[..., top : top + ch, left : left + cw]
        noise = SeededNoise(self.seed())
        gen = KernelGenerator(o.kernel_size, noise=noise).to(y.device)
        ticker = Ticker(progress, "shred kernel estimate", o.iters, unit="it")
        x_T = init_x_T(noise, (1, c, ch, cw), [(-2, 0)], device=y.device)  # its own stream, apart from tiles
        with torch.enable_grad():
            res = shred_solve(prior.denoiser, None, y, x_T=x_T, iters=o.iters, lr=o.lr, stride=o.stride,
                              grad=o.grad, tol=o.tol, patience=o.patience, kernel=gen, kernel_lr=o.kernel_lr,
                              blur_padding="reflect",
                              callback=lambda it, total, loss, **kw: ticker.tick(1, loss=float(loss)))
        kernel = res.kernel.detach().reshape(o.kernel_size, o.kernel_size).cpu()
        est = Blur(kernel).bind(tuple(obs.x_shape[1:])).to(device=y.device)
        return dataclasses.replace(prior, op=est, parts={**prior.parts, "kernel": kernel})

    def solver(self, prior: Prior, obs: Observation) -> ShredSolver:
        from diffrestore.diffusion.noise import SeededNoise

        return ShredSolver(prior.denoiser, self.group(ShredOptions), noise=SeededNoise(self.seed()),
                           progress=self._progress, kernel=prior.parts.get("kernel"))
