"""An evaluation protocol: which photos, which degradation, which methods, which seeds, which metrics.

Why a data structure and files instead of only CLI flags: a benchmark table is only reproducible if every
choice behind it (operator options, noise level, crop, seeds, step counts, models) is written down in one
place that a second run — on another machine, or on a GPU with the official checkpoints — can load again.
The runner saves the resolved protocol as ``protocol.json`` beside the results, and ``--resume`` refuses to
mix rows produced under different settings.

Files are JSON or TOML with the fields of :class:`Protocol` (unknown keys are an error, so a typo cannot
silently fall back to a default). Built-in protocols (the seed papers' experiment grids) live in
``diffrestore/eval/protocols/*.json`` and are addressed by name (``--protocol ddnm_sr4``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffrestore.errors import UserError

__all__ = [
    "DEFAULT_METRICS",
    "KNOWN_METRICS",
    "Protocol",
    "builtin_protocols",
    "load_protocol",
    "protocol_dir",
]

#: Every metric the runner knows. ``lpips`` additionally needs ``--lpips-weights``.
KNOWN_METRICS: tuple[str, ...] = (
    "psnr",
    "ssim",
    "psnr_y",
    "ssim_y",
    "consistency",
    "niqe",
    "lpips",
)
#: Computed unless a protocol lists its own subset (runtime and memory are always recorded).
DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim", "psnr_y", "ssim_y", "consistency", "niqe", "lpips")

#: Fields that do not change what a row of results.csv means; ``--resume`` may differ in them.
_RESUME_FREE = frozenset({"name", "description", "notes", "methods", "limit", "grids", "models", "requires",
                          "reproduces", "method_options"})


@dataclass
class Protocol:
    """One evaluation setting (see the module docstring for why it is a file).

    ``operator`` holds :func:`diffrestore.operators.factory.make_operator` options (``scale``, ``kernel``,
    ``kind``, ``rate``, ...). ``noise`` is the std of white Gaussian noise added to ``A x`` in 8-bit units
    (25 means σ = 25/255; the papers' convention); DDNM gets it as ``sigma_y = noise / 255``. ``crop``
    centre-crops the ground truth to ``crop × crop`` (the papers evaluate 256² images) before it is trimmed
    to what the operator accepts (e.g. a multiple of the SR scale). ``quantize_y`` rounds image-shaped
    observations to 8 bits (what a real LR file is); off by default, as the zero-shot papers use float y.
    ``seeds``: each (image, seed) pair gets its own degradation and method seed, derived from both, so
    every method sees the same observation. ``method_options`` are per-method keyword options (e.g.
    ``{"ddnm": {"steps": 100, "model": "adm-256-uncond"}}``). ``models`` documents which checkpoint each
    method uses here and on a GPU; ``requires`` lists methods a protocol cannot do without.
    """

    task: str
    data: str | None = None
    name: str = "custom"
    description: str = ""
    operator: dict[str, Any] = field(default_factory=dict)
    noise: float = 0.0
    crop: int | None = None
    quantize_y: bool = False
    methods: list[str] = field(default_factory=lambda: ["ddnm", "bicubic", "pinv"])
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    limit: int | None = None
    grids: int = 8
    models: dict[str, Any] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)
    reproduces: str = ""
    notes: str = ""

    # ------------------------------------------------------------------ construction / validation
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "protocol") -> Protocol:
        """Build and validate; unknown keys raise ``UserError`` naming ``source``."""
        if not isinstance(d, dict):
            raise UserError(f"{source}: a protocol must be a JSON/TOML object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            known = ", ".join(sorted(names))
            raise UserError(f"{source}: unknown protocol key(s) {', '.join(unknown)}; known: {known}")
        if "task" not in d:
            raise UserError(f"{source}: the protocol has no 'task'")
        p = cls(**{k: _copy(v) for k, v in d.items()})
        p.validate(source)
        return p

    def validate(self, source: str = "protocol") -> None:
        """Check types and ranges early, so that a bad file fails before any image is degraded."""
        from diffrestore.operators.factory import TASKS

        self.task = str(self.task).lower()
        if self.task not in TASKS:
            raise UserError(f"{source}: unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if not isinstance(self.operator, dict):
            raise UserError(f"{source}: 'operator' must be an object of operator options")
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        self.methods = [str(m).strip().lower() for m in self.methods]
        if not self.methods:
            raise UserError(f"{source}: no methods to evaluate")
        if len(set(self.methods)) != len(self.methods):
            raise UserError(f"{source}: a method is listed twice in {self.methods}")
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        try:
            self.seeds = [int(s) for s in self.seeds]
            self.noise = float(self.noise)
            self.grids = int(self.grids)
            self.crop = None if self.crop is None else int(self.crop)
            self.limit = None if self.limit is None else int(self.limit)
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: bad value ({e})") from None
        if not self.seeds:
            raise UserError(f"{source}: at least one seed is needed")
        if self.noise < 0:
            raise UserError(f"{source}: noise must be >= 0 (8-bit units), got {self.noise}")
        if self.crop is not None and self.crop < 8:
            raise UserError(f"{source}: crop must be >= 8 pixels, got {self.crop}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"{source}: limit must be >= 1, got {self.limit}")
        bad = sorted(set(self.metrics) - set(KNOWN_METRICS))
        if bad:
            known = ", ".join(KNOWN_METRICS)
            raise UserError(f"{source}: unknown metric(s) {', '.join(bad)}; known: {known}")
        if not isinstance(self.method_options, dict) or not all(
            isinstance(v, dict) for v in self.method_options.values()
        ):
            raise UserError(f"{source}: 'method_options' must map method names to objects of options")

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (what ``protocol.json`` and ``report.json`` store)."""
        return _copy(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> Protocol:
        """A validated copy with some fields changed (CLI flags override a loaded file this way)."""
        d = self.to_dict()
        d.update({k: v for k, v in changes.items()})
        return Protocol.from_dict(d, source=f"protocol {self.name!r}")

    def options_for(self, method: str) -> dict[str, Any]:
        """Keyword options for ``method`` (empty when the protocol gives none)."""
        return dict(self.method_options.get(method, {}))

    def is_sr(self) -> bool:
        """SR-like tasks are scored on Y with a border of ``scale`` pixels (BasicSR convention)."""
        return self.task in ("sr", "oldphoto")

    def scale(self) -> int:
        """The SR factor (factory defaults: 4 for ``sr``, 2 for ``oldphoto``); 1 for the other tasks."""
        if self.task == "sr":
            return int(self.operator.get("scale", 4))
        if self.task == "oldphoto":
            return int(self.operator.get("scale", 2))
        return 1

    def resume_mismatch(self, other: Protocol) -> list[str]:
        """Fields whose change would make old rows incomparable with new ones (empty = safe to resume).

        Method options are compared only for methods both runs share: adding a method on resume is fine,
        changing the steps of one already run is not.
        """
        a, b = self.to_dict(), other.to_dict()
        diff = [k for k in a if k not in _RESUME_FREE and a[k] != b.get(k)]
        for m in set(self.methods) & set(other.methods):
            if self.options_for(m) != other.options_for(m):
                diff.append(f"method_options.{m}")
        return diff


def _copy(v: Any) -> Any:
    """Deep, JSON-normalised copy (tuples → lists) so that saved and loaded protocols compare equal."""
    return json.loads(json.dumps(v))


def protocol_dir() -> Path:
    """Folder of the built-in protocols shipped with the package."""
    return Path(__file__).with_name("protocols")


def builtin_protocols() -> dict[str, Path]:
    """Built-in protocol name → file."""
    d = protocol_dir()
    if not d.is_dir():
        return {}
    return {p.stem: p for p in sorted(d.glob("*.json"))}


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load a protocol from a ``.json`` / ``.toml`` file, or a built-in one by name."""
    p = Path(name_or_path)
    if not p.is_file():
        builtin = builtin_protocols()
        if str(name_or_path) in builtin:
            p = builtin[str(name_or_path)]
        else:
            names = ", ".join(builtin) or "none"
            raise UserError(f"protocol {str(name_or_path)!r} is neither a file nor a built-in one ({names})")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(p.read_text())
        else:
            data = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise UserError(f"cannot read protocol {p}: {e}") from None
    if isinstance(data, dict):
        data.pop("$comment", None)
        data.pop("_comment", None)
    return Protocol.from_dict(data, source=str(p))
