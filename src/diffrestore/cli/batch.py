"""``diffrestore batch IN_DIR OUT_DIR --task TASK``: restore a folder of photos, resumably, any option.

Every image goes through ``diffrestore.restore`` exactly as ``diffrestore restore`` would restore it, with the
same task and method flags (generated from the registered methods). Under ``torchrun --nproc-per-node N -m
diffrestore batch ...`` the images are shared over the N processes; the outputs equal a one-process run.
Exit status: 0 when every image is done, 1 when some failed (listed in the summary), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from diffrestore.cli.common import add_method_options, add_task_options, method_options, task_options
from diffrestore.errors import UserError

#: Options that change speed or placement only, not the output: not part of the settings a rerun compares.
PLACEMENT = ("device", "batch", "models_dir")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="restore every image of a folder (resumable; torchrun for several processes)",
        description="Restore every image of IN_DIR into OUT_DIR (same subfolders). A rerun skips the images "
                    "done with the same settings and retries failures; a bad file is reported and skipped. "
                    "OUT_DIR/batch_summary.csv lists every input. Scale out with "
                    "`torchrun --nproc-per-node N -m diffrestore batch ...`.")
    p.add_argument("input_dir", type=Path, help="folder of observations (degraded photos)")
    p.add_argument("output_dir", type=Path, help="where the restored images go (created if missing)")
    add_task_options(p)
    add_method_options(p)
    g = p.add_argument_group("batch")
    g.add_argument("--recursive", action="store_true", help="also restore the images in subfolders")
    g.add_argument("--pattern", default=None, metavar="GLOB",
                   help="only inputs whose name matches GLOB (e.g. '*.jpg'; with a '/', the relative path); "
                        "default: every .png/.jpg/.tif/.bmp/.webp")
    g.add_argument("--ext", default="png", choices=("png", "tif", "jpg", "same"),
                   help="output format (default png; same: the input's)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _file_id(path: str | None) -> Any:
    """A file option for the settings: its path and content hash (an edited mask counts as new settings)."""
    from diffrestore.batch import file_sha256

    if path is None or not Path(path).is_file():
        return path
    return {"path": str(path), "sha256": file_sha256(Path(path))}


def settings_of(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines an output, as JSON-able values."""
    from diffrestore import __version__

    task = {k: v for k, v in vars(args).items() if v is not None and k in (
        "scale", "kernel", "invert_mask", "mask_kind", "frac", "rate", "cs_kind", "block", "blur_size",
        "blur_sigma", "op_seed")}
    return {"task": args.task, "task_options": task, "mask": _file_id(args.mask),
            "params": _file_id(args.params), "kernel_file": _file_id(args.kernel), "method": args.method,
            "sigma_y": args.sigma_y,
            "options": {k: v for k, v in opts.items() if k not in PLACEMENT}, "ext": args.ext,
            "version": __version__}


def run(args: argparse.Namespace) -> int:
    from diffrestore.api import read_observation, restore
    from diffrestore.batch import run_batch
    from diffrestore.distributed import launched
    from diffrestore.methods.base import get_method
    from diffrestore.progress import tqdm_bar

    opts = method_options(args)
    get_method(args.method).configure(opts)  # a bad option is one line now, not one failure per image
    task_options(args)  # unknown task: one line now
    if args.task == "cs" and args.params is None:
        raise UserError("compressed sensing needs the --params written by `diffrestore degrade --task cs`")
    settings = settings_of(args, opts)
    with launched(str(opts.get("device", "cpu")), backend="gloo") as launch:
        if "device" in opts:
            opts["device"] = launch.device(str(opts["device"]))

        def restore_one(path: Path) -> torch.Tensor:
            y = read_observation(path)
            if args.params:
                from diffrestore.operators.base import load_operator

                op = load_operator(args.params)
                if op.task != args.task:
                    raise UserError(f"--params describe task {op.task!r}, not {args.task!r}")
                return restore(y, None, op=op, method=args.method, sigma_y=args.sigma_y, **opts).image
            return restore(y, args.task, method=args.method, sigma_y=args.sigma_y, **opts,
                           **task_options(args, y)).image

        show = not args.quiet and launch.lead
        res = run_batch(args.input_dir, args.output_dir, restore_one, settings, recursive=args.recursive,
                        pattern=args.pattern, ext=args.ext, launch=launch,
                        progress=tqdm_bar() if show else None)
        if launch.lead:
            tail = f"; {res.failed} failed (see the summary)" if res.failed else ""
            print(f"batch: {res.done} restored, {res.skipped} already done{tail}; summary {res.summary}",
                  file=sys.stderr, flush=True)
        launch.barrier()  # no rank exits (and makes torchrun stop the others) before the report
    return 1 if res.failed else 0
