"""ADIR (guided sampling + test-time adaptation) against DDNM on real crops: quality and where the time goes.

Why: ADIR's claim is that adapting the prior to the image (its own crops, IA) or to its nearest neighbours
(retrieved from a photo collection) makes the restoration better; adaptation costs time before sampling.
This bench runs, on the same observations and the same embedded prior, through ``diffrestore.restore``:
``ddnm`` (defaults), ``adir`` with ``adapt`` none / self / knn (neighbours from ``--neighbours``, by default
BSDS500 train — never the eval photos), and prints PSNR/SSIM (RGB), PSNR-Y (border = scale for SR), NIQE,
and seconds split into preparation (adaptation) and sampling. Tasks: SR ×4 (average pooling) and Gaussian
deblurring (σ 1.6). Crops: the centre ``--size``² of the first ``--images`` photos of each data set.

Usage::

    nice python bench/bench_adir.py --images 2 --size 64 --adapt-steps 20     # minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrestore.api import restore
from diffrestore.io.images import read_image
from diffrestore.metrics import niqe, psnr, psnr_y, ssim
from diffrestore.operators.factory import make_operator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def crops(folder: Path, n: int, size: int) -> list[tuple[str, torch.Tensor]]:
    out = []
    for p in sorted(folder.iterdir())[:n]:
        im = read_image(p)
        h, w = im.shape[-2:]
        t, l = (h - size) // 2, (w - size) // 2
        out.append((p.name, im[..., t : t + size, l : l + size]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="CBSD68,Set14")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--adapt-steps", type=int, default=20)
    ap.add_argument("--neighbours", default=str(SHARED / "train" / "bsds500"))
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs: list[tuple[str, str, dict[str, Any]]] = [
        ("ddnm", "ddnm", {}),
        ("adir", "adir", {}),
        ("adir-self", "adir", {"adapt": "self", "adapt_steps": args.adapt_steps}),
        ("adir-knn", "adir", {"adapt": "knn", "adapt_steps": args.adapt_steps, "neighbours": args.neighbours,
                              "k": args.k}),
    ]
    tasks = {"sr4": dict(task="sr", scale=4), "deblur": dict(task="deblur", kernel="gaussian", sigma=1.6)}
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for task, topts in tasks.items():
        for ds in args.sets.split(","):
            for name, gt in crops(SHARED / "eval" / ds, args.images, args.size):
                opts = {k: v for k, v in topts.items() if k != "task"}
                op = make_operator(topts["task"], tuple(gt.shape), **opts)
                y = op.A(gt)
                border = 4 if task == "sr4" else 0
                for label, method, kw in runs:
                    t0 = time.perf_counter()
                    res = restore(y, op=op, method=method, seed=0, **kw)
                    x = res.image
                    r = {"psnr": psnr(x, gt), "ssim": ssim(x, gt),
                         "psnr_y": psnr_y(x, gt, crop_border=border),
                         "niqe": niqe(x, crop_border=border) if min(x.shape[-2:]) >= 96 else float("nan"),
                         "adapt_s": res.info.get("prepare_seconds", 0.0),
                         "total_s": time.perf_counter() - t0}
                    rows.setdefault((task, label), []).append(r)
                    print(f"{task} {ds}/{name} {label}: " + " ".join(f"{k} {v:.3f}" for k, v in r.items()),
                          flush=True)
    print("\n| task | method | PSNR | SSIM | PSNR-Y | NIQE | adapt s | total s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (task, label), rs in rows.items():
        m = {k: float(np.nanmean([r[k] for r in rs])) if rs else float("nan") for k in rs[0]}
        print(f"| {task} | {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_y']:.2f} | "
              f"{m['niqe']:.2f} | {m['adapt_s']:.1f} | {m['total_s']:.1f} |")


if __name__ == "__main__":
    main()
