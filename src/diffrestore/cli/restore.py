"""``diffrestore restore IN OUT --task TASK``: restore a real observation of any size.

Everything is validated (image readable, mask size, task, model) before any work starts and the output is
written atomically at the end, so a bad input exits 2 with one line and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffrestore.cli.common import add_task_options, parse_travel, task_options
from diffrestore.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore an observed photo (SR, inpainting, colourisation, ...)",
                       description="Restore the observation IN (the degraded photo itself) into OUT.")
    p.add_argument("input", type=Path, help="the observation: LR image, masked photo, grey photo, ...")
    p.add_argument("output", type=Path, help="where to write the restored image (.png/.jpg/.tif)")
    add_task_options(p)
    g = p.add_argument_group("method")
    g.add_argument("--method", default="ddnm", help="restoration method (default ddnm)")
    g.add_argument("--model", default=None,
                   help="registered model name or checkpoint path (default: embedded prior)")
    g.add_argument("--config", default=None, help="config JSON for a checkpoint path")
    g.add_argument("--models-dir", default=None, help="where named checkpoints live")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, else 50)")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the model's, else 0.85)")
    g.add_argument("--travel", type=parse_travel, default=(1, 1), metavar="L,R",
                   help="time travel: length L, repeat R (default 1,1 = none)")
    g.add_argument("--start", dest="start_t", type=int, default=None, metavar="T",
                   help="warm start: begin at timestep T from A+y noised to that level (not in the DDNM "
                        "paper; default: the model's suggestion, -1 = from pure noise)")
    g.add_argument("--sigma-y", type=float, default=0.0, help="noise std of the observation, in [0,1] units")
    g.add_argument("--compat", choices=("paper", "official"), default="paper",
                   help="paper formulas (default) or the official code's behaviour")
    t = p.add_argument_group("tiling")
    t.add_argument("--tile", type=int, default=None, help="patch size (default: the model's native size)")
    t.add_argument("--overlap", type=int, default=None, help="tile overlap (default tile/2)")
    t.add_argument("--hierarchical", action="store_true", help="Hierarchical Restoration (global coherence)")
    t.add_argument("--hir-factor", type=int, default=None,
                   help="--hierarchical: phase-1 reduction factor (default 2)")
    t.add_argument("--batch", type=int, default=8, help="tiles per network call")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    r.add_argument("--float", dest="write_float", action="store_true",
                   help="also write the unclamped float result as OUT.npy")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffrestore.api import read_observation, restore
    from diffrestore.io.images import write_float, write_image

    _check_output(args.output)
    float_path = args.output.with_suffix(".npy")
    if args.write_float and float_path.resolve() == args.input.resolve():
        raise UserError(f"--float would overwrite the observation {args.input}; choose another OUT name")
    if args.task == "cs" and args.input.suffix.lower() != ".npy":
        raise UserError("a compressed-sensing observation is an array of coefficients, not an image: restore "
                        "the .npy written by `diffrestore degrade --task cs` with its --params")
    y = read_observation(args.input)
    op = None
    if args.params:
        from diffrestore.operators.base import load_operator

        op, opts = load_operator(args.params), {}
        if op.task != args.task:
            raise UserError(f"--params describe task {op.task!r}, not {args.task!r}")
    else:
        opts = task_options(args, y)
    announced: list[bool] = []

    def on_plan(summary: Any) -> None:
        # the header waits until the model is loaded and the tiles are checked: a bad input gets one line
        if not announced:
            announced.append(True)
            print(f"diffrestore: {args.input} ({y.shape[-1]}x{y.shape[-2]}) -> task {args.task} {_fmt(opts)}",
                  file=sys.stderr)
        print(f"plan: {summary.describe()}", file=sys.stderr)

    res = restore(y, None if op is not None else args.task, op=op, method=args.method, model=args.model,
                  config=args.config,
                  models_dir=args.models_dir, steps=args.steps, eta=args.eta, sigma_y=args.sigma_y,
                  travel=args.travel, start_t=args.start_t, tile=args.tile, overlap=args.overlap,
                  hierarchical=args.hierarchical,
                  hir_factor=args.hir_factor, seed=args.seed, batch=args.batch, device=args.device,
                  dtype=args.dtype, compat=args.compat, progress=not args.quiet, on_plan=on_plan, **opts)
    if args.write_float:  # the float first: if the image write then fails, no PNG claims a finished run
        write_float(float_path, res.x)
    write_image(args.output, res.image)
    info = res.info
    H, W = res.image.shape[-2:]
    seam = info.get("seam_score")
    print(f"wrote {args.output} ({W}x{H}) in {info['seconds']:.1f} s, {info['network_calls']} network calls; "
          f"consistency |Ax-y| rms {info['consistency_rms']:.2e} "
          f"(after clamping {info['consistency_rms_clamped']:.2e})"
          + (f"; seam score {seam:.3f}" if seam is not None else ""))
    return 0


def _check_output(out: Path) -> None:
    """Refuse a bad OUT before any work (also used by ``degrade``): nothing may run to be thrown away."""
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
        raise UserError(f"output {out}: unsupported image extension {out.suffix!r} (use .png, .jpg or .tif)")
    if not out.parent.exists():
        raise UserError(f"output folder does not exist: {out.parent}")


def _fmt(opts: dict[str, Any]) -> str:
    """Scalar task options for the header line (arrays such as masks are left out)."""
    return " ".join(f"{k}={v}" for k, v in opts.items() if not hasattr(v, "shape"))
