"""Task options shared by ``restore``, ``degrade`` and ``eval``: one parser, one mapping to the factory."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from diffrestore.errors import UserError
from diffrestore.methods.options import add_arguments


def parse_travel(text: str) -> tuple[int, int]:
    """``"L,R"`` → ``(L, R)`` (time-travel length and repeat)."""
    try:
        length, repeat = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--travel wants L,R (two integers), got {text!r}") from None
    if length < 1 or repeat < 1:
        raise argparse.ArgumentTypeError("--travel L,R must be positive")
    return length, repeat


def add_method_options(p: argparse.ArgumentParser, methods: bool = True, skip: tuple[str, ...] = ()) -> None:
    """``--method``, ``--sigma-y`` and every registered method's options, generated from their declarations.

    Shared groups (model, sampling, tiling, run) appear once; each method's own options get a group
    named after the methods that take them. Flags default to "not given", so each method's declared
    defaults apply and an option of another method is reported as not applicable.
    """
    from diffrestore.methods.base import METHODS, all_option_fields, option_groups_of_all

    if methods:
        p.add_argument("--method", default="ddnm", choices=sorted(METHODS),
                       help="restoration method (default ddnm)")
        p.add_argument("--sigma-y", type=finite_nonneg, default=0.0,
                       help="noise std of the observation, in [0,1] units (every method)")
    owners = all_option_fields()
    done: set[str] = set(skip)
    for g in option_groups_of_all():
        own = [c.name for c in METHODS.values() if g in c.option_groups()]
        title = (g.__doc__ or g.__name__).strip().splitlines()[0].rstrip(".")
        if len(own) < len(METHODS):
            title = f"{', '.join(own)}: {title}"
        done.update(add_arguments(p, [g], title=title, skip=done,
                                  owners={k: v for k, v in owners.items() if len(v) < len(METHODS)}))


def method_options(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The method options the user gave on the command line (declared defaults apply to the rest)."""
    from diffrestore.methods.base import option_groups_of_all
    from diffrestore.methods.options import fields_of, parse_value

    fields = fields_of(option_groups_of_all())
    given = {k: v for k, v in vars(args).items() if k in fields and k not in skip}
    return {k: parse_value(k, fields[k][1], v) for k, v in given.items()}


def finite_nonneg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def add_task_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", required=required,
                   help="sr | inpaint | colorize | denoise | deblur | cs | oldphoto")
    g.add_argument("--params", default=None,
                   help="operator parameters written by `diffrestore degrade` (PREFIX.operator.json)")
    g.add_argument("--scale", type=int, default=None, help="SR factor (sr: 4, oldphoto: 2)")
    g.add_argument("--kernel", default=None,
                   help="sr: avgpool|bicubic; deblur: gaussian|uniform|aniso|PATH to a kernel image/.npy")
    g.add_argument("--mask", default=None, help="inpaint: mask image, white = known pixels")
    g.add_argument("--invert-mask", action="store_true", help="inpaint: white = missing instead")
    g.add_argument("--mask-kind", default=None, help="inpaint without a mask file: box | random | lines")
    g.add_argument("--frac", type=float, default=None, help="box mask: side fraction of the hole")
    g.add_argument("--rate", type=float, default=None,
                   help="random mask: missing fraction; cs: kept fraction")
    g.add_argument("--cs-kind", default=None, help="cs: hadamard | pixels")
    g.add_argument("--block", type=int, default=None, help="cs hadamard block size")
    g.add_argument("--blur-size", type=int, default=None, help="deblur kernel size")
    g.add_argument("--blur-sigma", type=float, default=None, help="deblur Gaussian sigma (pixels)")
    g.add_argument("--op-seed", type=int, default=None, help="seed of random masks / CS patterns")


def task_options(args: argparse.Namespace, image: torch.Tensor | None = None) -> dict[str, Any]:
    """Factory options from the parsed arguments (only those given), validated against ``image``."""
    from diffrestore.operators.factory import TASKS

    if args.task not in TASKS:
        raise UserError(f"unknown task {args.task!r}; tasks: {', '.join(TASKS)}")
    o: dict[str, Any] = {}
    for name, key in (("scale", "scale"), ("frac", "frac"), ("rate", "rate"), ("block", "block"),
                      ("blur_size", "size"), ("blur_sigma", "sigma"), ("op_seed", "seed")):
        v = getattr(args, name, None)
        if v is not None:
            o[key] = v
    if args.kernel is not None:
        o["kernel"] = args.kernel
    if args.task == "inpaint":
        if args.mask is not None:
            from diffrestore.io.images import read_mask

            shape = tuple(image.shape) if image is not None else None
            m = read_mask(args.mask, shape) if shape is not None else None
            o["mask"] = (~m if args.invert_mask else m) if m is not None else args.mask
        elif args.mask_kind is not None:
            o["kind"] = args.mask_kind
    if args.task == "cs" and args.cs_kind is not None:
        o["kind"] = args.cs_kind
    return o
