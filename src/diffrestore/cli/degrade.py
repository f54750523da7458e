"""``diffrestore degrade GT OUT --task TASK``: make an observation for experiments.

Writes the observation y (an image when y is image-shaped, plus ``OUT.npy`` with the exact float y when it
is not, or when ``--float`` is given) and the operator's parameters beside it
(``OUT-stem.operator.json`` + mask/kernel files) in the form ``restore --params`` accepts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from diffrestore.cli.common import add_task_options, finite_nonneg, task_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="degrade a ground-truth image into an observation (for experiments)")
    p.add_argument("gt", type=Path, help="ground-truth image")
    p.add_argument("output", type=Path, help="observation image to write (.png)")
    add_task_options(p)
    p.add_argument("--sigma-y", type=finite_nonneg, default=0.0,
                   help="Gaussian noise std added to y, [0,1] units")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (and of random masks/CS)")
    p.add_argument("--float", dest="write_float", action="store_true", help="also write y as OUT.npy")
    p.set_defaults(func=run)


def degrade(gt: torch.Tensor, task: str, sigma_y: float = 0.0, seed: int = 0, **opts):
    """``(op, y, gt_cropped)``: the operator bound to the (cropped) GT and ``y = A(gt) + σ_y n``."""
    from diffrestore.operators.factory import make_operator

    opts.setdefault("seed", seed)
    op = make_operator(task, image_shape=tuple(gt.shape), **opts)
    shape = op.fit_shape(tuple(gt.shape))
    gt = gt[..., : shape[-2], : shape[-1]]
    op.bind(tuple(gt.shape))
    y = op.A(gt)
    if sigma_y > 0:
        g = torch.Generator().manual_seed(seed)
        y = y + sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype)
    return op, y, gt


def run(args: argparse.Namespace) -> int:
    from diffrestore.cli.restore import _check_output
    from diffrestore.io.images import read_image, write_float, write_image

    _check_output(args.output, args.gt)
    gt = read_image(args.gt)
    opts = task_options(args, gt)
    op, y, gt = degrade(gt, args.task, args.sigma_y, args.seed, **opts)
    image_like = y.dim() == 4 and y.shape[1] in (1, 3)
    prefix = args.output.with_suffix("")
    json_path = op.save_params(prefix)
    written = [json_path]
    if image_like:
        written.insert(0, write_image(args.output, (y if y.shape[1] == 3 else y.expand(-1, 3, -1, -1))))
    if args.write_float or not image_like:
        written.append(write_float(args.output.with_suffix(".npy"), y))
    print(f"degraded {args.gt} ({gt.shape[-1]}x{gt.shape[-2]}) with {args.task}; wrote "
          + ", ".join(str(p) for p in written), file=sys.stderr)
    print(f"restore with: diffrestore restore {written[0] if image_like else written[-1]} OUT.png "
          f"--task {args.task} --params {json_path}" + (f" --sigma-y {args.sigma_y}" if args.sigma_y else ""))
    return 0
