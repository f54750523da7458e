"""Zero-shot restoration of real photos: Mask-Shift Restoration vs independent tiles (and optionally HiR).

Why this bench: the product promise is "any size, no seams". A patch prior restores an image larger than
its patch only tile by tile; restoring the tiles *independently* (same solver, same noise, no overlap
constraint, hard stitching) leaves visible joins, while MSR makes every tile agree with the pixels its
earlier neighbours finished. The seam score (``diffrestore.metrics.seam_score``: mean jump across the tile
edges / mean jump elsewhere) makes that measurable: ≈ 1 = joins as smooth as the image, > 1 = seams. The
table also shows what each costs (seconds, sequential network calls) and that both honour the
measurement (consistency RMS of ``A x − y`` in [0, 1] units, before clamping).

Protocol: CBSD68 photos (481x321 / 321x481, non-square), optionally centre-cropped (``--crop HxW``);
``degrade`` makes the noise-free observation (default SR ×4 average pooling; the GT is cropped to what the
operator accepts); every method gets the same observation, model, steps, seed and tile size. PSNR / SSIM on
RGB and on BT.601 Y (BasicSR conventions, 8-bit quantised, border = SR scale cropped). The seam score of
each method is taken at the edges of *its own* tile grid; the ground truth's score at the same positions
is printed as the reference (≈ 1 for a natural photo).

Usage::

    python bench/bench_restore.py --limit 2 --threads 2                     # trained default prior, 256 px
    python bench/bench_restore.py --model ../shared/refs/adm_small.safetensors \\
        --config ../shared/refs/adm_small.json --tile 32 --steps 10 --crop 96x128
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from diffrestore.api import load_denoiser, restore
from diffrestore.cli.degrade import degrade
from diffrestore.diffusion.noise import SeededNoise
from diffrestore.io.images import read_image
from diffrestore.methods.ddnm import DDNMSolver
from diffrestore.metrics import consistency, psnr, psnr_y, seam_score, ssim, ssim_y
from diffrestore.tiling.msr import msr
from diffrestore.tiling.runner import PlanSummary, TileContext

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eval" / "CBSD68"


class IndependentTiles:
    """A ``TileSolver`` that ignores the MSR constraint: each tile sees only its own y (the baseline).

    The driver still writes only a tile's new pixels (first tile wins), i.e. hard stitching; with overlap 0
    only the edge-flush last row/column overlaps its neighbour.
    """

    sequential = False

    def __init__(self, inner: DDNMSolver) -> None:
        self.inner = inner
        self.calls_per_tile = inner.calls_per_tile

    def __call__(self, ctx: TileContext) -> torch.Tensor:
        ctx.known = torch.zeros_like(ctx.known)  # forget the finished pixels: no MSR constraint
        return self.inner(ctx)


def independent_tiles(op: Any, y: torch.Tensor,
                      args: argparse.Namespace) -> tuple[torch.Tensor, dict[str, Any]]:
    """The baseline: the DDNM tile solver on a non-overlapping grid, no MSR constraint; x in [0, 1]."""
    denoiser, _ = load_denoiser(args.model, args.config, device=args.device)
    x_shape = (1, *op.x_shape)
    y_model = 2 * y - op.A(torch.ones(x_shape))
    solver = IndependentTiles(DDNMSolver(denoiser, noise=SeededNoise(args.seed), steps=args.steps,
                                         eta=args.eta, start_t=args.start_t))
    plans: list[PlanSummary] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        x = msr(solver, op, y_model, sigma=2 * args.sigma_y, tile=args.tile, overlap=0, batch=args.batch,
                on_plan=plans.append)
    seconds = time.perf_counter() - t0
    return (x + 1) / 2, {"seconds": seconds, "network_calls": plans[0].network_calls,
                         "boxes": [tuple(b) for b in plans[0].plan.boxes]}


def run_msr(op: Any, y: torch.Tensor, args: argparse.Namespace,
            hierarchical: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """``diffrestore.restore`` (MSR, or HiR + MSR); seconds exclude the model load."""
    plans: list[PlanSummary] = []
    res = restore(y, op=op, model=args.model, config=args.config, steps=args.steps, eta=args.eta,
                  start_t=args.start_t if args.start_t is not None else -1,
                  sigma_y=args.sigma_y, tile=args.tile, overlap=args.overlap, batch=args.batch,
                  seed=args.seed, device=args.device, hierarchical=hierarchical, on_plan=plans.append)
    info = res.info
    return res.x, {"seconds": info["seconds"] - info["load_seconds"], "network_calls": info["network_calls"],
                   "boxes": [tuple(b) for b in plans[-1].plan.boxes]}


def score(name: str, x01: torch.Tensor, gt: torch.Tensor, op: Any, y: torch.Tensor, run: dict[str, Any],
          border: int, grid: int) -> dict[str, Any]:
    """One table row: time, calls, PSNR/SSIM (RGB, Y), consistency, seam score (and the GT's)."""
    img = x01.clamp(0, 1)
    return {
        "method": name,
        "seconds": run["seconds"],
        "calls": run["network_calls"],
        "psnr": psnr(img, gt, crop_border=border),
        "psnr_y": psnr_y(img, gt, crop_border=border),
        "ssim": ssim(img, gt, crop_border=border),
        "ssim_y": ssim_y(img, gt, crop_border=border),
        "consistency": consistency(op, x01, y),
        "seam": seam_score(img, boxes=run["boxes"]),
        "seam_gt": seam_score(gt, boxes=run["boxes"]),
        "seam_grid": seam_score(img, boxes=run["boxes"], grid=grid),
    }


COLUMNS = (("method", "{:<12}"), ("seconds", "{:>8.1f}"), ("calls", "{:>6d}"), ("psnr", "{:>7.2f}"),
           ("psnr_y", "{:>7.2f}"), ("ssim", "{:>6.3f}"), ("ssim_y", "{:>6.3f}"), ("consistency", "{:>11.2e}"),
           ("seam", "{:>6.3f}"), ("seam_gt", "{:>7.3f}"), ("seam_grid", "{:>9.3f}"))


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(title)
    print(" ".join(f"{n:<12}" if n == "method" else f"{n:>{len(f.format(0 if 'd' in f else 0.0))}}"
                   for n, f in COLUMNS))
    for r in rows:
        print(" ".join(f.format(r[n]) for n, f in COLUMNS))


def _crop(gt: torch.Tensor, crop: str | None) -> torch.Tensor:
    if not crop:
        return gt
    h, w = (int(v) for v in crop.lower().split("x"))
    H, W = gt.shape[-2:]
    if h > H or w > W:
        raise SystemExit(f"--crop {crop} is larger than the {H}x{W} image")
    t, left = (H - h) // 2, (W - w) // 2
    return gt[..., t : t + h, left : left + w]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of ground-truth photos")
    p.add_argument("--image", type=Path, action="append", help="ground-truth image(s) instead of --data")
    p.add_argument("--limit", type=int, default=1, help="number of photos from --data (-1 = all)")
    p.add_argument("--crop", default=None, help="centre crop HxW, e.g. 96x128")
    p.add_argument("--task", default="sr")
    p.add_argument("--scale", type=int, default=None, help="sr: factor (default 4); oldphoto: (default 2)")
    p.add_argument("--kernel", default=None, help="sr: avgpool|bicubic; deblur: gaussian|...")
    p.add_argument("--mask-kind", dest="kind", default=None, help="inpaint: box|random|lines")
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--sigma-y", type=float, default=0.0)
    p.add_argument("--model", default=None, help="registered name or checkpoint (default: the default prior)")
    p.add_argument("--config", default=None)
    p.add_argument("--tile", type=int, default=None, help="patch size (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, help="MSR overlap (default tile/2)")
    p.add_argument("--steps", type=int, default=None, help="default: the model card's, else 50")
    p.add_argument("--eta", type=float, default=None, help="default: the model card's, else 0.85")
    p.add_argument("--start", dest="start_t", type=int, default=None,
                   help="warm start timestep (default: the model card's; -1 = pure noise)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--methods", default="msr,independent", help="comma list of msr, independent, hir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, spec = load_denoiser(args.model, args.config, device=args.device)
    if args.tile is None:  # the model's native patch size, as `restore` uses
        args.tile = spec.image_size or (spec.config or {}).get("image_size")
        if not args.tile:
            raise SystemExit(f"model {spec.name} has no native patch size: pass --tile")
    sampling = spec.diffusion or {}  # the same defaults `restore` takes from the model card
    args.steps = args.steps or sampling.get("sampling_steps", 50)
    args.eta = sampling.get("sampling_eta", 0.85) if args.eta is None else args.eta
    if args.start_t is None:
        args.start_t = sampling.get("sampling_start")
    if args.start_t is not None and args.start_t < 0:
        args.start_t = None
    paths = args.image or sorted(args.data.glob("*.png"))
    if not args.image and args.limit >= 0:
        paths = paths[: args.limit]
    if not paths:
        raise SystemExit(f"no images in {args.data}")
    if args.scale is None and args.task == "sr":
        args.scale = 4
    opts = {k: getattr(args, k) for k in ("scale", "kernel", "kind", "rate") if getattr(args, k) is not None}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    all_rows: list[dict[str, Any]] = []
    for path in paths:
        gt = _crop(read_image(path), args.crop)
        op, y, gt = degrade(gt, args.task, args.sigma_y, args.seed, **opts)
        grid = int(getattr(op.ops[-1] if hasattr(op, "ops") else op, "scale", 1))  # SR's LR grid, else 1
        border = grid if grid > 1 else 0
        rows = []
        for m in methods:
            if m == "msr":
                x, run = run_msr(op, y, args)
            elif m == "hir":
                x, run = run_msr(op, y, args, hierarchical=True)
            elif m == "independent":
                x, run = independent_tiles(op, y, args)
            else:
                raise SystemExit(f"unknown method {m!r}: msr, independent or hir")
            rows.append(score(m, x, gt, op, y, run, border, grid))
        H, W = gt.shape[-2:]
        print_table(rows, f"\n{path.name} {W}x{H}, task {args.task} {opts}, tile {args.tile}, "
                          f"steps {args.steps}, model {args.model or 'default'}")
        all_rows += rows
    if len(paths) > 1:
        mean = []
        for m in methods:
            rs = [r for r in all_rows if r["method"] == m]
            mean.append({k: (m if k == "method" else
                             (round(sum(r[k] for r in rs) / len(rs)) if k == "calls"
                              else math.fsum(r[k] for r in rs) / len(rs))) for k in rs[0]})
        print_table(mean, f"\nmean over {len(paths)} photos")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
