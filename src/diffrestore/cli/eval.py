"""``diffrestore eval``: benchmark methods on a folder of ground-truth photos and write a report.

Kept thin: flags become a :class:`diffrestore.eval.protocol.Protocol` (a ``--protocol`` file or built-in
name first, flags on top), and :func:`diffrestore.eval.runner.run_eval` does the work, so scripts and
tests run exactly what the command runs. Every user-fixable problem (unknown task or method, empty data
folder, a results folder from another protocol) is a ``UserError``: one line, exit 2, before any image is
restored.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from diffrestore.cli.common import add_method_options, add_task_options, method_options, task_options
from diffrestore.errors import UserError


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _value(text: str) -> Any:
    """``KEY=VALUE`` values: numbers, booleans and comma lists are parsed; the rest stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [_value(t) for t in text.split(",")]
    return text


def register(subparsers: Any) -> None:
    """Add the ``eval`` command."""
    p = subparsers.add_parser(
        "eval",
        help="benchmark restoration methods on a folder of photos (CSV, Markdown table, grids, plots)",
        description="Degrade every photo of --data with a fixed seed (the same observation for every "
        "method), restore it with each of --methods, score it and write results.csv (one row per image "
        "and method, appended as it goes), summary.md, report.json, grids/ and plots/ into --out. "
        "--resume continues an interrupted run without recomputing finished rows.",
    )
    p.add_argument("--protocol", metavar="FILE|NAME",
                   help="protocol file (.json/.toml) or built-in name; flags below override it "
                   "(--protocol list prints the built-in ones)")
    p.add_argument("--data", metavar="DIR", help="folder of ground-truth images")
    p.add_argument("--methods", metavar="LIST",
                   help="comma-separated registered methods and baselines (`diffrestore eval --help` "
                   "lists the method options) [ddnm,bicubic,pinv]")
    p.add_argument("--out", metavar="REPORT_DIR", help="report folder (required)")
    add_task_options(p, required=False)  # the same task flags as restore / degrade
    g = p.add_argument_group("observation")
    g.add_argument("--noise", type=float, help="observation noise std in 8-bit units (25 = 25/255) [0]")
    g.add_argument("--crop", type=_positive_int, help="centre-crop ground truths to N x N first")
    g.add_argument("--quantize-y", action="store_true", default=None,
                   help="round image observations to 8 bits (like LR files)")
    g.add_argument("--op", action="append", default=[], metavar="KEY=VALUE",
                   help="any other operator option (make_operator), e.g. --op lines=4 --op width=3")
    r = p.add_argument_group("run")
    r.add_argument("--limit", type=_positive_int, help="only the first N images (by name)")
    r.add_argument("--seed", type=int, action="append", help="protocol seed (repeat for several) [0]")
    r.add_argument("--resume", action="store_true", help="continue REPORT_DIR, skipping finished rows")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--lpips-weights", metavar="PATH",
                   help="state_dict of lpips.LPIPS(net='alex'|'vgg'); without it LPIPS is not computed")
    r.add_argument("--skip-unavailable", action="store_true",
                   help="list not-yet-implemented methods in the report instead of exiting")
    r.add_argument("--grids", type=int, help="image grids for the first N images [8]")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    # every option of every registered method, from its declarations (seed/device: the eval's own)
    add_method_options(p, methods=False, skip=("seed", "device"))
    p.set_defaults(func=_cmd_eval)


def _operator_opts(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Factory options from the shared task flags (``cli.common``) plus ``--op KEY=VALUE`` extras."""
    if args.params:
        raise UserError("--params is for restore; eval degrades each ground truth itself")
    shared = argparse.Namespace(**{**vars(args), "task": task})
    o = task_options(shared)  # image=None: a --mask path is loaded (and checked) by the factory
    if task == "inpaint" and args.mask is not None and args.invert_mask:
        o["invert_mask"] = True
    for kv in args.op:
        if "=" not in kv:
            raise UserError(f"--op expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        o[k.strip().replace("-", "_")] = _value(v.strip())
    return o


def build_protocol(args: argparse.Namespace) -> Any:
    """The protocol the flags describe (a loaded one with overrides, or one made from flags alone)."""
    from diffrestore.eval.protocol import Protocol, load_protocol

    base: dict[str, Any]
    if args.protocol:
        base = load_protocol(args.protocol).to_dict()
    else:
        if not args.task:
            raise UserError("give --task (or a --protocol)")
        base = {"task": args.task, "name": f"{args.task}"}
    if args.task and args.protocol and args.task.lower() != base["task"]:
        base["operator"] = {}  # another task: the protocol's operator options do not apply
    if args.task:
        base["task"] = args.task.lower()
    op = dict(base.get("operator", {}))
    op.update(_operator_opts(args, base["task"]))
    base["operator"] = op
    if args.data:
        base["data"] = args.data
    if args.methods:
        base["methods"] = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    for flag in ("noise", "crop", "limit", "grids", "quantize_y"):
        v = getattr(args, flag)
        if v is not None:
            base[flag] = v
    if args.seed:
        base["seeds"] = list(args.seed)
    given = method_options(args, skip=("seed", "device"))  # eval's own seed and device
    if given and not base.get("methods"):
        from diffrestore.eval.protocol import Protocol

        base["methods"] = Protocol.__dataclass_fields__["methods"].default_factory()  # type: ignore[misc]
    if given:  # a flag applies to every listed method that declares it
        from diffrestore.methods.base import all_option_fields

        owners = all_option_fields()
        listed = [m for m in base.get("methods", []) if any(m in o for o in owners.values())]
        if not listed:
            raise UserError(f"option(s) {', '.join(sorted(given))} apply to none of the methods "
                            f"{', '.join(base.get('methods', []))}")
        mo = base.setdefault("method_options", {})
        for k, v in given.items():
            users = [m for m in listed if m in owners[k]]
            if not users:
                raise UserError(f"option {k} applies to none of the methods {', '.join(listed)}")
            for m in users:
                mo.setdefault(m, {})[k] = v
    if not args.protocol and base["task"] in ("sr", "oldphoto"):
        scale = op.get("scale", 4 if base["task"] == "sr" else 2)
        kern = op.get("kernel", "avgpool")
        base["name"] = f"{base['task']}_x{scale}_{kern}"
    return Protocol.from_dict(base, source="command line")


def _list_protocols() -> int:
    from diffrestore.eval.protocol import builtin_protocols, load_protocol

    for name, path in builtin_protocols().items():
        p = load_protocol(path)
        print(f"{name:28s} {p.task:9s} {','.join(p.methods):32s} {p.description}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "list":
        return _list_protocols()
    if not args.out:
        raise UserError("give --out REPORT_DIR")
    protocol = build_protocol(args)
    from diffrestore.eval.runner import run_eval

    def log(msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)

    run = run_eval(
        protocol, args.out, resume=args.resume, progress=args.progress, device=args.device,
        lpips_weights=args.lpips_weights,
        # a protocol lists its paper's whole table; only methods asked for by name must all run
        skip_unavailable=args.skip_unavailable or bool(args.protocol and not args.methods),
        command={k: v for k, v in vars(args).items() if k != "func" and v not in (None, [], False)},
        log=log if args.progress else None,
    )
    print((run.out / "summary.md").read_text().split("\n## ")[0].rstrip())
    print(f"\n{run.computed} computed, {run.skipped_done} already done, {run.failed} failed -> {run.out}")
    return 1 if run.failed else 0
