"""The method contract: a restoration method is a configured object, registered by name.

Why: DDNM, its official Mask-Shift variant, ResShift, SHRED and ADIR must plug into the same options,
tiling, progress and evaluation without each adding keywords to every layer. A method

* declares its options once (``Options``, a dataclass of ``methods.options.option`` fields) on top of the
  shared groups (model, tiling, run; diffusion samplers add ``SamplingOptions``) — the CLI flags of
  ``restore``/``eval``, protocol ``method_options`` and ``diffrestore.restore``'s keyword validation are
  generated from these declarations;
* ``load()`` s what it needs from the registry (a :class:`Prior`), ``prepare()`` s it for one observation
  (ADIR adapts here; default: unchanged), and returns a tile solver for it (``solver()``);
* states its canvas rule (``"first"``: MSR, finished pixels win; ``"blend"``: weighted blending of
  independent tiles) and, optionally, its own tile plan (``plan()``, e.g. hq_demo's layout).

``Method.run`` is the one driver every method shares: it fits the tiling to the operator, announces the
plan, runs the tiles and reports. The observation crosses one units boundary (:class:`Observation`):
solvers only see model units ([-1, 1] images, σ in the same units).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from diffrestore.errors import UserError
from diffrestore.methods.options import ModelOptions, RunOptions, TilingOptions, build, fields_of
from diffrestore.progress import Callback

__all__ = [
    "METHODS",
    "Method",
    "MethodRun",
    "Observation",
    "Prior",
    "all_option_fields",
    "get_method",
    "register",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Observation:
    """An observation in model units, made once at the boundary (``from_file_units``).

    ``y`` is in the operator's layout with a batch of 1; ``sigma`` its noise std; both in model units
    ([-1, 1] images). For a linear operator ``A(2x − 1) = 2A(x) − A(1)``, so ``y = 2 y01 − A(1)`` and
    ``sigma = 2 σ_y`` (``σ_y`` in [0, 1] units, as users measure noise). ``y01`` keeps the file-unit y.
    """

    op: Any
    y: torch.Tensor
    sigma: float
    x_shape: tuple[int, int, int, int]
    y01: torch.Tensor

    @classmethod
    def from_file_units(cls, op: Any, y01: torch.Tensor, sigma_y: float, x_shape: Sequence[int],
                        device: str | torch.device = "cpu") -> Observation:
        shape = tuple(int(v) for v in x_shape)
        op = op.to(device=device) if hasattr(op, "to") else op
        y01 = y01.to(device)
        return cls(op, 2 * y01 - op.A(torch.ones(shape, device=device)), 2.0 * float(sigma_y), shape, y01)  # type: ignore[arg-type]

    @staticmethod
    def to_file_units(x: torch.Tensor) -> torch.Tensor:
        return (x.float() + 1) / 2


@dataclass
class Prior:
    """What a method loaded: the network(s) behind a :class:`diffrestore.diffusion.denoiser.Denoiser` or
    the method's own parts, the registry spec (name, card), its native patch size and sampling defaults.
    """

    spec: Any
    patch: int
    denoiser: Any = None
    parts: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: An operator the method estimated in ``prepare`` (blind deblurring's kernel); None: the observation's.
    op: Any = None
    #: Tile sides must be multiples of this (the network's downsampling); checked before any work.
    multiple: int = 1


@dataclass
class MethodRun:
    """A finished run: ``x`` in model units ``[1, C, H, W]`` and what it took (plans, calls, seconds)."""

    x: torch.Tensor
    plans: list[Any]
    info: dict[str, Any]
    op: Any = None


class Method:
    """Base of every registered method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Shared option groups this method takes (its own ``Options`` come last).
    groups: ClassVar[tuple[type, ...]] = (ModelOptions, TilingOptions, RunOptions)
    Options: ClassVar[type | None] = None
    #: Canvas rule of the tiling layer: ``"first"`` (MSR) or ``"blend"`` (weighted blending).
    rule: ClassVar[str] = "first"
    #: Whether the solver needs autograd (SHRED, DPS guidance); otherwise the driver runs under no_grad.
    needs_grad: ClassVar[bool] = False
    #: Whether the method can estimate an unknown operator (blind deblurring, ``op.blind``).
    blind_capable: ClassVar[bool] = False
    #: Default tile overlap as a fraction of the tile (None: the tiling layer's, half a tile). Blending
    #: methods need less overlap than MSR: nothing is pinned, the ramp only has to hide the joins.
    overlap_fraction: ClassVar[float | None] = None

    def __init__(self, *groups: Any) -> None:
        by_type = {type(g): g for g in groups}
        for cls in self.option_groups():
            if cls not in by_type:
                by_type[cls] = cls()
        self._groups = by_type
        self.model: ModelOptions = by_type.get(ModelOptions, ModelOptions())
        self.tiling: TilingOptions = by_type.get(TilingOptions, TilingOptions())
        self.run_opts: RunOptions = by_type.get(RunOptions, RunOptions())
        self._progress: Callback | None = None  # set by ``run`` for solvers that report inner loops

    # ------------------------------------------------------------------ declarations
    @classmethod
    def option_groups(cls) -> tuple[type, ...]:
        return (*cls.groups, *((cls.Options,) if cls.Options is not None else ()))

    @classmethod
    def option_names(cls) -> set[str]:
        return set(fields_of(cls.option_groups()))

    @classmethod
    def configure(cls, values: Mapping[str, Any] | None = None) -> Method:
        """The method with ``values`` validated against its declarations (unknown keys: ``UserError``)."""
        groups = build(cls.option_groups(), dict(values or {}), f"method {cls.name}",
                       other_known=all_option_fields())
        for g in groups:
            if isinstance(g, TilingOptions) and g.hir_factor is not None and not g.hierarchical:
                raise UserError("hir_factor (--hir-factor) needs hierarchical restoration (--hierarchical)")
        meth = cls(*groups)
        meth.validate()
        return meth

    def validate(self) -> None:
        """Cross-option checks of a configured method (``UserError``), before any file is read."""

    def group(self, cls: type) -> Any:
        return self._groups[cls]

    def options(self) -> dict[str, Any]:
        """Every option value (for reports and ``protocol.json``)."""
        out: dict[str, Any] = {}
        for g in self._groups.values():
            out.update(dataclasses.asdict(g))
        return out

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.run_opts.dtype]

    @property
    def device(self) -> str:
        return self.run_opts.device

    # ------------------------------------------------------------------ contract
    def load(self) -> Prior:
        """Load the networks this method needs (registry name or checkpoint, device, dtype)."""
        raise NotImplementedError

    def check(self, obs: Observation) -> None:
        """Raise ``UserError`` when the method cannot restore this observation (before any work)."""

    def prepare(self, prior: Prior, obs: Observation, progress: Callback | None = None) -> Prior:
        """Adapt the prior to this observation (ADIR); default: unchanged. Never mutate a cached prior."""
        return prior

    def solver(self, prior: Prior, obs: Observation) -> Any:
        """A ``tiling.runner.TileSolver`` for this observation."""
        raise NotImplementedError

    def plan(self, prior: Prior, obs: Observation, tile: int) -> Any:
        """An imposed tile plan (e.g. an official layout), or None for the tiling layer's own."""
        return None

    def final_projection(self, obs: Observation) -> bool:
        """Finish with one whole-image projection onto ``A x = y`` (projection methods, noise-free data)."""
        return False

    def seed(self) -> int:
        return int(self.run_opts.seed)

    # ------------------------------------------------------------------ the shared driver
    def run(self, obs: Observation, *, prior: Prior | None = None,
            on_plan: Callable[[Any], None] | None = None, progress: Callback | None = None) -> MethodRun:
        """Restore ``obs`` at any size over the tiling layer; returns model-unit ``x`` and a report."""
        from diffrestore.tiling.restore import check_tiles, fit_tiling, restore_tiled

        t0 = time.perf_counter()
        if getattr(obs.op, "blind", False) and not self.blind_capable:
            raise UserError(f"the operator is unknown (blind {getattr(obs.op, 'task', '')}): method "
                            f"{self.name} cannot estimate it; use a method that can (--method shred)")
        self.check(obs)
        prior = self.load() if prior is None else prior
        t_load = time.perf_counter() - t0
        self._progress = progress
        prior = self.prepare(prior, obs, progress)
        if prior.op is not None:  # the method estimated the operator (blind): tiles use its estimate
            obs = dataclasses.replace(obs, op=prior.op)
        op, P = fit_tiling(obs.op, obs.x_shape, prior.patch, self.tiling.tile)
        if P % prior.multiple:
            raise UserError(f"tile {P} is not usable by model {getattr(prior.spec, 'name', prior.spec)}: "
                            f"tile sides must be multiples of {prior.multiple}")
        t_prep = time.perf_counter() - t0 - t_load
        solver = self.solver(prior, obs)
        plan = self.plan(prior, obs, P)
        plans: list[Any] = []

        def announce(summary: Any) -> None:
            if summary.phase in ("msr", "hir phase 2"):  # full-image phases use this operator
                check_tiles(op, obs.y, summary.plan)
            plans.append(summary)
            if on_plan is not None:
                on_plan(summary)

        grad = torch.enable_grad() if self.needs_grad else torch.no_grad()
        with grad:
            overlap = self.tiling.overlap
            if overlap is None and self.overlap_fraction is not None:
                overlap = int(P * self.overlap_fraction) // prior.multiple * prior.multiple
            x = restore_tiled(solver, op, obs.y, sigma=obs.sigma, x_shape=obs.x_shape, tile=P,
                              overlap=overlap, batch=int(self.tiling.batch),
                              hierarchical=bool(self.tiling.hierarchical),
                              factor=int(self.tiling.hir_factor or 2), plan=plan, rule=self.rule,
                              final_projection=self.final_projection(obs), on_plan=announce,
                              progress=progress)
        info = {"model": getattr(prior.spec, "name", str(prior.spec)), "patch": P, "seed": self.seed(),
                "load_seconds": round(t_load, 3), "prepare_seconds": round(t_prep, 3),
                **getattr(solver, "report", lambda: {})()}
        return MethodRun(x.detach(), plans, info, obs.op)


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by name to the CLI, the API and the eval harness."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    fields_of(cls.option_groups())  # a clash of option types is a programming error: fail at import
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The registered method class; ``UserError`` naming the available ones otherwise."""
    import diffrestore.methods  # noqa: F401  (registers the built-in methods)

    cls = METHODS.get(name)
    if cls is None:
        raise UserError(f"unknown method {name!r}; methods: {', '.join(sorted(METHODS))}")
    return cls


def all_option_fields(methods: Iterable[type[Method]] | None = None) -> dict[str, list[str]]:
    """Option name → the methods that declare it (all registered methods by default)."""
    import diffrestore.methods  # noqa: F401

    owners: dict[str, list[str]] = {}
    for cls in (methods if methods is not None else METHODS.values()):
        for name in cls.option_names():
            owners.setdefault(name, []).append(cls.name)
    return owners


def option_groups_of_all() -> list[type]:
    """Every option group of every registered method, shared groups first, each once."""
    import diffrestore.methods  # noqa: F401

    seen: list[type] = []
    for cls in METHODS.values():
        for g in cls.option_groups():
            if g not in seen:
                seen.append(g)
    return seen
