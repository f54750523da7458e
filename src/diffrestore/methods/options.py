"""Method options declared once, as dataclasses; CLI flags, protocol keys and API keywords come from them.

Why: before this module every option of DDNM was re-declared at each level (API, tiling, CLI restore, CLI
eval, the eval adapter) with drifting defaults. Now a field's name, type, default and help text live in
one dataclass; ``add_arguments`` makes the argparse flags (``restore``, ``eval``), ``build`` validates a
mapping (a protocol's ``method_options``, ``diffrestore.restore``'s keywords, parsed flags) into the
dataclass, with one-line errors naming the option.

Conventions: a field's flag is ``--<name with dashes>`` unless ``flag=`` says otherwise; ``None`` means
"the model card's / method's own choice" where the help says so; ``choices`` are checked everywhere, not
only on the command line; a tuple of ints is written ``A,B`` on the command line and in protocol files.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffrestore.errors import UserError

__all__ = [
    "ModelOptions",
    "RunOptions",
    "SamplingOptions",
    "TilingOptions",
    "WarmStartOptions",
    "add_arguments",
    "build",
    "fields_of",
    "option",
    "parse_value",
]


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, flag: str | None = None,
           metavar: str | None = None, minimum: float | None = None, maximum: float | None = None,
           cli: bool = True) -> Any:
    """A dataclass field with what the CLI / protocol / API need to know about it."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "flag": flag, "metavar": metavar,
            "minimum": minimum, "maximum": maximum, "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


def fields_of(groups: Iterable[type]) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every option of the option groups, by name (a name declared twice must agree on its type)."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for g in groups:
        hints = typing.get_type_hints(g)
        for f in dataclasses.fields(g):
            f.type = hints[f.name]
            prev = out.get(f.name)
            if prev is not None and prev[1].type != f.type:
                raise TypeError(f"option {f.name!r} declared as {prev[1].type} and {f.type}")
            out.setdefault(f.name, (g, f))
    return out


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of an annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def parse_value(name: str, f: dataclasses.Field, value: Any) -> Any:
    """Check and convert one option value (strings from flags or TOML, numbers from JSON)."""
    tp, nullable = _base_type(f.type)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and tp is not str):
        if nullable:
            return None
        raise UserError(f"option {name} needs a value")
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                v: Any = value.lower() in ("true", "1", "yes")
            elif isinstance(value, (bool, int)) and value in (0, 1):
                v = bool(value)
            else:
                raise ValueError(value)
        elif tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            v = int(value)
        elif tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(value)
        elif typing.get_origin(tp) is tuple:
            parts = value.split(",") if isinstance(value, str) else list(value)
            kinds = typing.get_args(tp)
            if len(parts) != len(kinds):
                raise ValueError(value)
            v = tuple(k(p) for k, p in zip(kinds, parts))
        elif tp is str:
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if not isinstance(value, str):
                raise ValueError(value)
            v = value
        else:
            v = value
    except (TypeError, ValueError):
        raise UserError(f"option {name}: cannot use {value!r} (expected {_type_name(tp)})") from None
    meta = f.metadata
    if meta.get("choices") and v not in meta["choices"]:
        raise UserError(f"option {name}: {v!r} is not one of {', '.join(map(str, meta['choices']))}")
    for bound, ok, word in ((meta.get("minimum"), lambda a, b: a >= b, ">="),
                            (meta.get("maximum"), lambda a, b: a <= b, "<=")):
        if bound is not None and isinstance(v, (int, float)) and not ok(v, bound):
            raise UserError(f"option {name} must be {word} {bound}, got {v}")
        if bound is not None and isinstance(v, tuple) and not all(ok(x, bound) for x in v):
            raise UserError(f"option {name} must be {word} {bound}, got {v}")
    return v


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return ",".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def build(groups: Sequence[type], values: Mapping[str, Any], owner: str,
          other_known: Iterable[str] = ()) -> list[Any]:
    """Instances of ``groups`` from ``values``; unknown keys are an error naming ``owner``'s options.

    ``other_known``: names that are valid options elsewhere (another method's), for a clearer message.
    """
    fields = fields_of(groups)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        foreign = [u for u in unknown if u in set(other_known)]
        if foreign:
            raise UserError(f"option(s) {', '.join(foreign)} do not apply to {owner}")
        known = ", ".join(sorted(fields))
        raise UserError(f"unknown option(s) {', '.join(unknown)} for {owner}; known: {known}")
    out = []
    for g in groups:
        kw = {f.name: parse_value(f.name, fields[f.name][1], values[f.name])
              for f in dataclasses.fields(g) if f.name in values}
        out.append(g(**kw))
    return out


def flag_of(name: str, f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser | Any, groups: Iterable[type], title: str | None = None,
                  skip: Iterable[str] = (), owners: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Add a flag per option to ``parser`` (in a group titled ``title``); returns the dests added.

    Flags default to ``argparse.SUPPRESS``: only options the user gave reach the namespace, so each
    method's dataclass defaults apply (and a flag of another method can be reported as not applicable).
    """
    target = parser.add_argument_group(title) if title else parser
    added = []
    for name, (_, f) in fields_of(groups).items():
        if name in set(skip) or not f.metadata.get("cli", True):
            continue
        tp, _ = _base_type(f.type)
        helptext = f.metadata.get("help", "")
        if owners and name in owners:
            helptext += f" [{', '.join(owners[name])}]"
        default = f.default if f.default is not dataclasses.MISSING else None
        if default not in (None, False, ()):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            helptext += f" (default {shown})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": helptext}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = f.metadata.get("metavar") or (
                _type_name(tp).upper() if typing.get_origin(tp) is tuple else name.upper())
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
                kw.pop("metavar")
        target.add_argument(flag_of(name, f), **kw)
        added.append(name)
    return added


def check_device(device: str) -> None:
    """A device that exists here: ``cpu``, or ``cuda[:N]`` / ``mps`` when available (one-line error)."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if d.type == "cpu":
        return
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r}: CUDA is not available on this machine")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return
    if d.type == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return
    raise UserError(f"device {device!r} is not usable here: use cpu or cuda[:N]")


@dataclass
class ModelOptions:
    """Which network(s) a method loads (registry name or checkpoint + config)."""

    model: str | None = option(None, "registered model name or checkpoint path (default: the method's)")
    config: str | None = option(None, "config JSON for a checkpoint path", metavar="JSON")
    models_dir: str | None = option(None, "where named checkpoints live", metavar="DIR")


@dataclass
class TilingOptions:
    """How an image of any size is cut into patches (tiling layer)."""

    tile: int | None = option(None, "patch size (default: the model's native size)", minimum=8)
    overlap: int | None = option(None, "tile overlap in pixels (default tile/2)", minimum=0)
    batch: int = option(8, "tiles per network call (speed/memory only; same result)", minimum=1)
    hierarchical: bool = option(False, "Hierarchical Restoration: low-resolution phase first")
    hir_factor: int | None = option(None, "hierarchical phase-1 reduction factor (default 2)", minimum=2)


@dataclass
class RunOptions:
    """Where and how the networks run, and the seed of every random draw."""

    seed: int = option(0, "seed of all random draws (per-tile noise streams)")
    device: str = option("cpu", "cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        check_device(self.device)
    dtype: str = option("float32", "network precision", choices=("float32", "bfloat16", "float16"))


@dataclass
class SamplingOptions:
    """Shared by the diffusion samplers that take a step count."""

    steps: int | None = option(None, "sampling steps (default: the model card's, else the method's)",
                               minimum=1)


@dataclass
class WarmStartOptions:
    """Warm start of a diffusion sampler (not in the papers; SDEdit/CCDF-style)"""

    start_t: int | None = option(
        None, "begin at timestep T from A+y noised to that level (default: the model card's where A+y "
        "observes a flat image, -1 = from pure noise)", flag="--start", metavar="T", minimum=-1)

    def resolve(self, prior: Any, obs: Any) -> int | None:
        """The start timestep: the user's, else the model card's where ``A⁺A 1 = 1`` (A⁺y is already a
        photo-like image: SR, denoising, colourisation, deblurring; not inpainting / CS, whose A⁺y has
        zeros in the holes), else None (pure noise)."""
        start = self.start_t
        if start is None and pinv_keeps_constants(obs.op, obs.x_shape):
            start = prior.defaults.get("sampling_start")
        return None if start is None or int(start) < 0 else int(start)


def pinv_keeps_constants(op: Any, x_shape: Sequence[int]) -> bool:
    """``A⁺A 1 = 1``: the operator observes a flat image everywhere (no holes, no missing coefficients)."""
    import torch

    op = op.to(device="cpu") if hasattr(op, "to") else op
    ones = torch.ones(tuple(int(v) for v in x_shape))
    return bool(torch.allclose(op.pinv(op.A(ones)), ones, atol=1e-3))
