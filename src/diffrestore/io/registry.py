"""Named public checkpoints and where to find them, so users say ``--model adm-256-uncond``, not kwargs.

``models.json`` (package data, regenerated from the refs' manifests by ``tools/gen_models_json.py``) lists
each released checkpoint: file name, network family + official constructor config, expected size, download
URLs, the tasks/methods it serves and its diffusion. Files live in the models directory
(``--models-dir`` > ``$DIFFRESTORE_MODELS`` > the platform user cache ``diffrestore/models``); nothing is
downloaded implicitly — a missing file is a ``UserError`` that says where we looked and the URL.
The embedded prior ``default`` ships inside the package (``diffrestore/data/prior/``).

A user checkpoint is a path plus a config JSON ``{"family": ..., "config": {...}, "diffusion": {...}}``
(explicit, or ``<checkpoint stem>.json`` beside the file — the refs' ``config.json`` files qualify).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffrestore.errors import UserError
from diffrestore.io.atomic import follow_link_file
from diffrestore.io.checkpoints import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, load_into
from diffrestore.nets import FAMILIES, build_network

ENV_VAR = "DIFFRESTORE_MODELS"
DEFAULT_NAME = "default"
# A file smaller than this fraction of the expected size is a partial download.
_COMPLETE_FRACTION = 0.99


@dataclass
class ModelSpec:
    """Everything needed to find, build and run one checkpoint."""

    name: str
    file: str
    family: str | None
    config: dict[str, Any] | None
    size: int | None = None  # expected bytes of the original file (tensor payload; the file is a bit larger)
    urls: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    role: str = "denoiser"  # denoiser | classifier | autoencoder
    diffusion: dict[str, Any] | None = None
    image_size: int | None = None  # native training size (ResShift: LQ latent patch)
    class_cond: bool = False
    num_params: int | None = None
    requires: list[str] = field(default_factory=list)  # other named models needed (ResShift -> vq-f4)
    description: str = ""
    embedded: bool = False
    path: Path | None = None  # set by resolve(): the file that will be loaded
    extra: dict[str, Any] = field(default_factory=dict)  # everything else in the entry (scale, source, ...)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> ModelSpec:
        entry = copy.deepcopy(entry)
        known = {f for f in cls.__dataclass_fields__ if f not in ("extra", "path")}
        kwargs = {k: entry.pop(k) for k in list(entry) if k in known}
        for k in ("urls", "tasks", "methods", "requires"):
            if kwargs.get(k) is None:
                kwargs.pop(k, None)
        kwargs["class_cond"] = bool(kwargs.get("class_cond") or False)
        kwargs["embedded"] = bool(kwargs.get("embedded") or False)
        return cls(**kwargs, extra=entry)

    @property
    def url(self) -> str | None:
        return self.urls[0] if self.urls else None


# ----------------------------------------------------------------------------------------------- registry


@lru_cache(maxsize=1)
def _entries() -> tuple[dict[str, Any], ...]:
    text = resources.files("diffrestore.io").joinpath("models.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["models"])


def _prior_dir() -> Path:
    return Path(str(resources.files("diffrestore").joinpath("data", "prior")))


def _with_prior_config(spec: ModelSpec) -> ModelSpec:
    """Fill the embedded prior's family/config/diffusion from ``prior.json`` when it is bundled."""
    cfg_name = spec.extra.get("config_file", "prior/prior.json")
    cfg_path = _prior_dir().parent / cfg_name
    if not cfg_path.is_file():
        return spec
    try:
        data = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return spec
    keys = ("family", "config", "diffusion", "image_size", "tasks", "methods", "description", "num_params")
    for key in keys:
        if data.get(key) is not None:
            setattr(spec, key, data[key])
    # names train/export.py writes
    if spec.image_size is None:
        size = data.get("patch_size") or (spec.config or {}).get("image_size")
        spec.image_size = int(size) if size else None
    spec.num_params = spec.num_params or data.get("params")
    weights = _prior_dir().parent / spec.file
    spec.size = weights.stat().st_size if weights.is_file() else data.get("bytes")
    spec.class_cond = bool(data.get("class_cond", spec.class_cond))
    return spec


def known_models() -> list[ModelSpec]:
    """Every named model, in display order (the embedded ``default`` first)."""
    specs = [ModelSpec.from_entry(e) for e in _entries()]
    return [_with_prior_config(s) if s.embedded else s for s in specs]


def known_names() -> list[str]:
    return [e["name"] for e in _entries()]


def get_spec(name: str) -> ModelSpec:
    """The registry entry called ``name`` (a fresh copy); ``UserError`` listing known names otherwise."""
    for spec in known_models():
        if spec.name == name:
            return spec
    raise UserError(f"unknown model {name!r}; known models: {', '.join(known_names())}")


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """Where named checkpoints live: ``override`` (--models-dir) > ``$DIFFRESTORE_MODELS`` > user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("diffrestore")) / "models"


def candidates(spec: ModelSpec, models_dir_override: str | os.PathLike | None = None) -> list[Path]:
    """Paths searched for a named model, best first: a ``.safetensors`` copy, then the released file."""
    if spec.embedded:
        return [_prior_dir().parent / spec.file]
    root = models_dir(models_dir_override)
    original = root / spec.file
    converted = original.with_suffix(".safetensors")
    return [converted, original] if converted != original else [original]


def locate(spec: ModelSpec, models_dir_override: str | os.PathLike | None = None) -> Path | None:
    """The file a named model would load from, or None when absent."""
    return next((p for p in candidates(spec, models_dir_override) if p.is_file()), None)


def file_status(spec: ModelSpec, models_dir_override: str | os.PathLike | None = None) -> str:
    """``present``, ``missing`` or ``incomplete`` (released file clearly smaller than expected)."""
    path = locate(spec, models_dir_override)
    if path is None:
        return "missing"
    if (
        spec.size
        and path.name == spec.file
        and path.stat().st_size < _COMPLETE_FRACTION * spec.size
    ):
        return "incomplete"
    return "present"


# ------------------------------------------------------------------------------------------ user models


def _default_diffusion(family: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The diffusion a user checkpoint of ``family`` most likely uses when its JSON does not say."""
    if family == "adm_unet":
        learn_sigma = int(config.get("out_channels", 3)) == 2 * int(config.get("in_channels", 3)) or bool(
            config.get("learn_sigma", False)
        )
        return {"type": "ddpm", "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "steps": 1000,
                "learn_sigma": learn_sigma, "predict": "eps"}
    if family == "adm_classifier":
        return {"type": "ddpm", "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "steps": 1000}
    if family == "ddpm_unet":
        d = config.get("diffusion", {}) if isinstance(config.get("diffusion"), dict) else {}
        var_type = config.get("model", {}).get("var_type", "fixedsmall") if isinstance(
            config.get("model"), dict) else "fixedsmall"
        return {"type": "ddpm", "schedule": d.get("beta_schedule", "linear"),
                "beta_start": d.get("beta_start", 0.0001), "beta_end": d.get("beta_end", 0.02),
                "steps": d.get("num_diffusion_timesteps", 1000), "learn_sigma": False,
                "var_type": var_type, "predict": "eps"}
    return None  # resshift_swinunet: the schedule differs per checkpoint; vq_f4: no diffusion


_ROLE = {"adm_unet": "denoiser", "ddpm_unet": "denoiser", "resshift_swinunet": "denoiser",
         "adm_classifier": "classifier", "vq_f4": "autoencoder"}


def _read_config_json(config_json: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    if isinstance(config_json, dict):
        return copy.deepcopy(config_json)
    p = follow_link_file(config_json)
    if not p.is_file():
        raise UserError(f"model config JSON not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"model config {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"model config {p} must be a JSON object with 'family' and 'config'")
    return data


def spec_from_config(path: Path, data: dict[str, Any], source: str = "model config") -> ModelSpec:
    """A ``ModelSpec`` for a user checkpoint described by ``{"family", "config", "diffusion"?, ...}``."""
    family = data.get("family")
    config = data.get("config")
    if family not in FAMILIES:
        raise UserError(f"{source}: 'family' must be one of {', '.join(FAMILIES)} (got {family!r})")
    if not isinstance(config, dict):
        raise UserError(f"{source}: 'config' must be an object of the network's official constructor kwargs")
    diffusion = data.get("diffusion") or _default_diffusion(family, config)
    if family == "resshift_swinunet" and not diffusion:
        raise UserError(f"{source}: a resshift_swinunet model needs a 'diffusion' entry (steps, kappa, ...)")
    image_size = data.get("image_size") or config.get("image_size")
    if image_size is None and isinstance(config.get("data"), dict):
        image_size = config["data"].get("image_size")
    class_cond = bool(data.get("class_cond", config.get("num_classes") is not None and family == "adm_unet"))
    role = data.get("role", _ROLE[family])
    default_tasks = ["sr", "inpaint", "colorize", "denoise", "deblur", "cs"] if role == "denoiser" else []
    used = {"family", "config", "diffusion", "image_size", "class_cond", "role", "tasks", "methods", "name"}
    return ModelSpec(
        name=str(data.get("name") or path.stem),
        file=path.name,
        family=family,
        config=config,
        size=path.stat().st_size if path.is_file() else None,
        tasks=list(data.get("tasks", ["sr"] if family == "resshift_swinunet" else default_tasks)),
        methods=list(data.get("methods", [])),
        role=role,
        diffusion=diffusion,
        image_size=int(image_size) if image_size is not None else None,
        class_cond=class_cond,
        description=f"user checkpoint {path}",
        path=path,
        extra={k: v for k, v in data.items() if k not in used},
    )


def _looks_like_path(s: str) -> bool:
    suffixes = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
    return os.sep in s or "/" in s or Path(s).suffix.lower() in suffixes or Path(s).exists()


def resolve(
    name_or_path: str | os.PathLike,
    config_json: str | os.PathLike | dict[str, Any] | None = None,
    models_dir: str | os.PathLike | None = None,
) -> ModelSpec:
    """Turn a model name or checkpoint path into a ``ModelSpec`` whose ``path`` exists (else UserError)."""
    text = os.fspath(name_or_path)
    names = known_names()
    if text in names and config_json is not None and not Path(text).is_file():
        raise UserError(f"model {text!r} is a named model; a config JSON is only for checkpoint files")
    if text in names and config_json is None:
        spec = get_spec(text)
        path = locate(spec, models_dir)
        if spec.embedded:
            if path is None or spec.family is None:
                raise UserError(
                    f"the embedded default prior is not bundled in this installation ({candidates(spec)[0]} "
                    f"missing); choose a named model ({', '.join(n for n in names if n != DEFAULT_NAME)})"
                )
        elif path is None:
            looked = " or ".join(str(p) for p in candidates(spec, models_dir))
            raise UserError(
                f"model {text!r} not found (looked for {looked}); download {spec.url or spec.file} into "
                f"{candidates(spec, models_dir)[-1].parent} or set --models-dir / ${ENV_VAR}"
            )
        elif file_status(spec, models_dir) == "incomplete":
            got = path.stat().st_size
            raise UserError(
                f"model file {path} looks incomplete ({got} of ~{spec.size} bytes); download it again from "
                f"{spec.url}"
            )
        return replace(spec, path=path)
    if not _looks_like_path(text):
        known = ", ".join(names)
        raise UserError(f"unknown model {text!r}; known models: {known} (or give a checkpoint path)")
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if config_json is None:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise UserError(
                f"checkpoint {path} needs a model config JSON ({{\"family\", \"config\", \"diffusion\"}}): "
                f"pass one or put {sidecar.name} next to it"
            )
        config_json = sidecar
    source = "model config" if isinstance(config_json, dict) else f"model config {config_json}"
    return spec_from_config(path, _read_config_json(config_json), source)


# ------------------------------------------------------------------------------------------------ loading


def _has_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in model.parameters()) or any(t.is_meta for t in model.buffers())


def build(spec: ModelSpec, meta: bool = False) -> nn.Module:
    """Build ``spec``'s network with uninitialised weights (on the meta device when ``meta``)."""
    assert spec.family is not None and spec.config is not None
    try:
        if meta:
            with torch.device("meta"):
                return build_network(spec.family, spec.config)
        return build_network(spec.family, spec.config)
    except UserError:
        raise
    except (TypeError, KeyError, ValueError, AssertionError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"invalid {spec.family} config for model {spec.name!r}: {msg}") from None


def load_model(
    name_or_path: str | os.PathLike,
    config_json: str | os.PathLike | dict[str, Any] | None = None,
    models_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, ModelSpec]:
    """Resolve, build and strictly load a network; returns ``(net in eval mode, no grads), spec``.

    The network is built on the meta device and filled with ``assign=True`` so a 2 GB checkpoint costs 2 GB
    of RAM, not 4; a network whose non-persistent buffers would stay on meta is rebuilt for real instead.
    """
    spec = resolve(name_or_path, config_json, models_dir)
    assert spec.path is not None
    net = load_into(build(spec, meta=True), spec.path, dtype=dtype)
    if _has_meta(net):
        net = load_into(build(spec, meta=False), spec.path, dtype=dtype)
    net = net.to(device).eval()
    net.requires_grad_(False)
    return net, spec
