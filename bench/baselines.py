"""Classical baselines with our metrics: bicubic SR (PSNR-Y / SSIM-Y) and CBM3D colour denoising (PSNR-RGB).

Why: the learned methods are judged against these numbers, and reproducing ANCHORS.md's table with
``diffrestore.metrics`` is the end-to-end check that our resize + metric conventions are the published ones.

Protocols:

* bicubic xs: HR cropped to a multiple of s, MATLAB ``imresize`` down then up (uint8 in and out, as MATLAB),
  PSNR/SSIM on BT.601 Y with ``crop_border = s``. Greyscale files are read as 3-channel RGB (Set14 bridge;
  ANCHORS.md explains the 26.09 vs 25.99 this causes).
* denoising sigma = 25 (of 255): unclipped AWGN from a seeded numpy generator, one draw per image; CBM3D from
  the ``bm3d`` package (``bm3d_rgb``, default profile); PSNR on RGB, 0-255, *continuous* values (the noisy
  input is not clipped or quantised, so its PSNR is ~20log10(255/25) = 20.17).

Usage: ``python bench/baselines.py --limit 2`` (CBM3D costs ~27 CPU-s per CBSD68 image;
``--limit 0`` skips it, ``--limit -1`` runs all 68).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffrestore.metrics import imresize, measure, psnr, psnr_y, ssim_y

DEFAULT_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"

# ANCHORS.md values, printed next to ours.
ANCHOR_SR = {
    ("Set5", 2): 33.67,
    ("Set5", 4): 28.43,
    ("Set5", 8): 24.40,
    ("Set14", 2): 30.32,
    ("Set14", 4): 26.09,
    ("Set14", 8): 23.18,
    ("CBSD68", 2): 29.75,
    ("CBSD68", 4): 26.07,
    ("CBSD68", 8): 23.69,
}
ANCHOR_SSIM4 = {"Set5": 0.8111, "Set14": 0.7048, "CBSD68": 0.6831}
ANCHOR_DENOISE = {"noisy": 20.17, "cbm3d": 30.80}


def load_rgb(path: Path) -> np.ndarray:
    """8-bit RGB HWC array (greyscale expanded to 3 channels)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def list_set(root: Path, name: str, limit: int | None = None) -> list[Path]:
    """Sorted PNGs of one eval set, the first ``limit`` if given."""
    files = sorted((root / name).glob("*.png"))
    if not files:
        raise SystemExit(f"no images found in {root / name}")
    return files if limit is None or limit < 0 else files[:limit]


def bicubic_sr(root: Path, name: str, scale: int, limit: int | None) -> tuple[float, float, int]:
    """Mean PSNR-Y, SSIM-Y of bicubic down/up by ``scale`` over one set; returns (psnr, ssim, n)."""
    ps, ss = [], []
    for p in list_set(root, name, limit):
        hr = load_rgb(p)
        h, w = hr.shape[:2]
        hr = hr[: h - h % scale, : w - w % scale]
        sr = imresize(imresize(hr, 1 / scale), scale)
        ps.append(psnr_y(sr, hr, crop_border=scale))
        ss.append(ssim_y(sr, hr, crop_border=scale))
    return float(np.mean(ps)), float(np.mean(ss)), len(ps)


def denoise_cbsd68(root: Path, limit: int, sigma: float, seed: int) -> dict[str, float]:
    """Noisy-input and CBM3D PSNR-RGB on the first ``limit`` CBSD68 images, with CPU time per image."""
    import bm3d  # optional dependency (extra "baselines")

    rng = np.random.default_rng(seed)
    noisy_ps, cbm3d_ps, cpu = [], [], []
    for p in list_set(root, "CBSD68", limit):
        clean = load_rgb(p).astype(np.float64) / 255.0
        noisy = clean + rng.normal(0.0, sigma / 255.0, clean.shape)
        with measure() as t:
            den = bm3d.bm3d_rgb(noisy, sigma / 255.0)
        cpu.append(t.cpu_s)
        noisy_ps.append(psnr(noisy * 255.0, clean * 255.0))
        cbm3d_ps.append(psnr(np.asarray(den) * 255.0, clean * 255.0))
        msg = f"noisy {noisy_ps[-1]:.2f}  CBM3D {cbm3d_ps[-1]:.2f}  ({t.cpu_s:.1f} CPU-s)"
        print(f"  {p.name}: {msg}", flush=True)
    return {
        "n": float(len(cbm3d_ps)),
        "noisy": float(np.mean(noisy_ps)),
        "cbm3d": float(np.mean(cbm3d_ps)),
        "cpu_per_image": float(np.mean(cpu)),
    }


def _fmt(v: float | None, digits: int) -> str:
    """Right-aligned number, or '-' when there is no anchor value."""
    return f"{v:>9.{digits}f}" if v is not None else f"{'-':>9}"


def main(argv: list[str] | None = None) -> int:
    """Run the baselines and print a table of ours vs ANCHORS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL, help="folder holding Set5/Set14/CBSD68")
    ap.add_argument("--limit", type=int, default=2, help="CBSD68 images for CBM3D (0 = skip, -1 = all)")
    ap.add_argument("--sr-limit", type=int, default=-1, help="images per set for bicubic SR (-1 = all)")
    ap.add_argument("--scales", type=int, nargs="+", default=[4], help="SR scales (default: 4)")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise std on the 0-255 scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"{'task':<28}{'set':<8}{'n':>4}{'PSNR':>9}{'anchor':>9}{'SSIM':>9}{'anchor':>9}")
    for s in args.scales:
        for name in ("Set5", "Set14", "CBSD68"):
            with measure() as t:
                p, q, n = bicubic_sr(args.eval_dir, name, s, args.sr_limit)
            a_p = ANCHOR_SR.get((name, s))
            a_s = ANCHOR_SSIM4.get(name) if s == 4 else None
            print(
                f"{f'bicubic x{s} (Y)':<28}{name:<8}{n:>4}{p:>9.2f}{_fmt(a_p, 2)}{q:>9.4f}{_fmt(a_s, 4)}"
                f"   [{t.wall_s:.1f} s]",
                flush=True,
            )
    if args.limit != 0:
        print(f"CBSD68 denoising sigma={args.sigma:g} (CBM3D), first {args.limit} image(s):")
        d = denoise_cbsd68(args.eval_dir, args.limit, args.sigma, args.seed)
        n = int(d["n"])
        row = f"{'CBSD68':<8}{n:>4}"
        print(f"{'noisy input (RGB)':<28}{row}{d['noisy']:>9.2f}{ANCHOR_DENOISE['noisy']:>9.2f}")
        print(
            f"{'CBM3D (RGB)':<28}{row}{d['cbm3d']:>9.2f}{ANCHOR_DENOISE['cbm3d']:>9.2f}"
            f"   [{d['cpu_per_image']:.1f} CPU-s/image]"
        )
        if n < 68:
            print("  (anchors are means over all 68 images; a subset differs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
