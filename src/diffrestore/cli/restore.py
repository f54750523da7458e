"""``diffrestore restore IN OUT --task TASK``: restore a real observation of any size.

Everything is validated (image readable, mask size, task, model) before any work starts and the output is
written atomically at the end, so a bad input exits 2 with one line and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffrestore.cli.common import add_method_options, add_task_options, method_options, task_options
from diffrestore.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore an observed photo (SR, inpainting, colourisation, ...)",
                       description="Restore the observation IN (the degraded photo itself) into OUT.")
    p.add_argument("input", type=Path, help="the observation: LR image, masked photo, grey photo, ...")
    p.add_argument("output", type=Path, help="where to write the restored image (.png/.jpg/.tif)")
    add_task_options(p)
    add_method_options(p)
    r = p.add_argument_group("output")
    r.add_argument("--float", dest="write_float", action="store_true",
                   help="also write the unclamped float result as OUT.npy")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--distributed", action="store_true",
                   help="under torchrun: split each wave's tiles over the processes (gloo on CPU, nccl on "
                        "GPUs, one per GPU); rank 0 writes OUT; the result equals one process's")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "distributed", False):
        return _run(args)
    from diffrestore.distributed import launched
    from diffrestore.tiling.distributed import TorchDistributed

    device = str(method_options(args).get("device", "cpu"))
    with launched(device, required=True) as launch:
        if hasattr(args, "device"):
            args.device = launch.device(device)
        return _run(args, lead=launch.lead, executor=TorchDistributed())


def _run(args: argparse.Namespace, lead: bool = True, executor: Any = None) -> int:
    from diffrestore.api import read_observation, restore
    from diffrestore.io.images import write_float, write_image

    _check_output(args.output, args.input, args.params, getattr(args, "mask", None))
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
        if not lead:
            return
        if not announced:
            announced.append(True)
            print(f"diffrestore: {args.input} ({y.shape[-1]}x{y.shape[-2]}) -> task {args.task} {_fmt(opts)}",
                  file=sys.stderr)
        print(f"plan: {summary.describe()}", file=sys.stderr)

    res = restore(y, None if op is not None else args.task, op=op, method=args.method, sigma_y=args.sigma_y,
                  progress=not args.quiet and lead, on_plan=on_plan, executor=executor,
                  **method_options(args), **opts)
    if not lead:  # every rank holds the full result; one writes it
        return 0
    if args.write_float:  # the float first: if the image write then fails, no PNG claims a finished run
        write_float(float_path, res.x)
    kernel = res.info.pop("kernel", None)
    if kernel is not None:  # blind deblurring: the estimated kernel beside OUT (PNG to view, .npy exact)
        from diffrestore.methods.shred_kernel import save_kernel

        png, npy = save_kernel(kernel, args.output.with_name(args.output.stem + ".kernel"))
        print(f"estimated kernel: {png} and {npy}", file=sys.stderr)
    write_image(args.output, res.image)
    info = res.info
    H, W = res.image.shape[-2:]
    seam = info.get("seam_score")
    print(f"wrote {args.output} ({W}x{H}) in {info['seconds']:.1f} s, {info['network_calls']} network calls; "
          f"consistency |Ax-y| rms {info['consistency_rms']:.2e} "
          f"(after clamping {info['consistency_rms_clamped']:.2e})"
          + (f"; seam score {seam:.3f}" if seam is not None else ""))
    return 0


def _check_output(out: Path, *inputs: Path | str | None) -> None:
    """Refuse a bad OUT before any work (also used by ``degrade``): nothing may run to be thrown away, and
    no input may be overwritten (OUT is compared with each input after resolving links and ``..``)."""
    for src in inputs:
        if src is None:
            continue
        try:
            same = Path(src).exists() and out.exists() and out.resolve().samefile(Path(src).resolve())
        except OSError:
            same = False
        if same or out.resolve() == Path(src).resolve():
            raise UserError(f"output {out} is the input {src}: refusing to overwrite it; choose another OUT")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
        raise UserError(f"output {out}: unsupported image extension {out.suffix!r} (use .png, .jpg or .tif)")
    if not out.parent.exists():
        raise UserError(f"output folder does not exist: {out.parent}")


def _fmt(opts: dict[str, Any]) -> str:
    """Scalar task options for the header line (arrays such as masks are left out)."""
    return " ".join(f"{k}={v}" for k, v in opts.items() if not hasattr(v, "shape"))
