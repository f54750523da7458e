"""The default prior as a one-step denoiser on CBSD68 at sigma = 15, 25, 50, against CBM3D and the input.

Why this bench: a diffusion prior's x0-prediction at the timestep whose noise level equals the image
noise is an MMSE Gaussian denoiser, so its PSNR measures the prior directly, on the regime (small t) that
DDNM's final steps and the restore command depend on most; CBM3D (``bm3d.bm3d_rgb``) is the classical
reference (published ~30.7 dB at sigma = 25; DnCNN ~31.2 dB).

Protocol (same as ``bench/baselines.py``): clean 8-bit RGB in [0, 1]; unclipped AWGN from
``numpy.random.default_rng(seed)`` drawn image after image (one generator per sigma), so the first N images
get the same noise whatever ``--limit`` is; PSNR on RGB, 0-255, continuous values (no quantisation).

Prior denoiser: ``y`` in [-1, 1] (``2*noisy - 1``, so sigma_m = 2*sigma/255); ``abar = 1/(1 + sigma_m^2)``;
``x_t = sqrt(abar) * y`` is then exactly a diffusion state; the network gets the (fractional) timestep
with that ``abar`` (log-abar interpolated on the training schedule), ``x0 = y - sigma_m * eps``, clipped.
Whole images are reflect-padded to a multiple of the UNet's downsampling and cropped back; ``--tile 64``
instead runs overlapping 64x64 tiles (the restore command's patch size), averaged.

CBM3D costs ~27 CPU-s per image, so its PSNRs are cached (keyed by image, sigma, seed) in ``--cache``.

Usage::

    python bench/bench_prior.py --weights ~/.cache/diffrestore/runs/prior --limit 4 --threads 1
    python bench/bench_prior.py --weights src/diffrestore/data/prior/prior.safetensors --limit -1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from diffrestore.diffusion.schedules import alphas_cumprod, linear_betas
from diffrestore.io.checkpoints import load_into, load_state_dict
from diffrestore.metrics import psnr
from diffrestore.nets import build_network

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eval" / "CBSD68"
DEFAULT_WEIGHTS = ROOT / "src" / "diffrestore" / "data" / "prior" / "prior.safetensors"
DEFAULT_CACHE = Path("~/.cache/diffrestore/bench/cbm3d_psnr.json").expanduser()
# Zhang et al. 2017 (DnCNN), CBSD68 table: CBM3D and CDnCNN-B (ANCHORS.md: DnCNN 31.23 at sigma 25).
PUBLISHED = {"CBM3D": {15: 33.52, 25: 30.71, 50: 27.38}, "CDnCNN-B": {15: 33.89, 25: 31.23, 50: 27.92}}


def load_prior(weights: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Network + info from an exported prior (``.safetensors`` + sibling ``.json``) or a run folder (EMA)."""
    weights = weights.expanduser()
    if weights.is_dir():  # a training run folder: use its current EMA weights
        info = json.loads((weights / "train.json").read_text())
        sd = load_state_dict(weights / "ckpt.safetensors")
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("ema.")}
        info = {"config": info["model_config"], "diffusion": info["diffusion"], "step": info["step"]}
    else:
        meta = weights.with_suffix(".json")
        if not meta.is_file():
            meta = weights.parent / "prior.json"
        info = json.loads(meta.read_text())
        sd = load_state_dict(weights)
        info["step"] = info.get("training", {}).get("steps")
    net = build_network("adm_unet", info["config"])
    load_into(net, {k: v.float() for k, v in sd.items()})
    net.eval().requires_grad_(False)
    return net, info


def t_for_abar(abar_target: float, abar: np.ndarray) -> float:
    """Fractional timestep whose abar equals ``abar_target`` (linear in -log abar between integers)."""
    return float(np.interp(-math.log(abar_target), -np.log(abar), np.arange(len(abar), dtype=np.float64)))


def _down_factor(net: nn.Module) -> int:
    cm = getattr(net, "channel_mult", None)
    levels = len(cm) if cm is not None else 4
    return 2 ** (levels - 1)


@torch.no_grad()
def prior_denoise(
    net: nn.Module,
    noisy01: torch.Tensor,
    sigma255: float,
    abar: np.ndarray,
    tile: int = 0,
    overlap: int = 16,
    precision: str = "fp32",
) -> torch.Tensor:
    """One x0|t prediction for ``noisy01`` [1, 3, H, W] (values may leave [0, 1]); returns [0, 1]."""
    sm = 2.0 * sigma255 / 255.0
    a = 1.0 / (1.0 + sm * sm)
    t = t_for_abar(a, abar)
    y = noisy01 * 2.0 - 1.0
    xt = math.sqrt(a) * y

    def run(x: torch.Tensor) -> torch.Tensor:
        ctx = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            eps = net(x, torch.full((x.shape[0],), t, dtype=torch.float32))
        return eps.float()

    _, _, h, w = xt.shape
    if tile <= 0:
        m = 8 if not hasattr(net, "input_blocks") else _down_factor(net)
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(xt, (0, pw, 0, ph), mode="reflect") if (ph or pw) else xt
        eps = run(xp)[:, :, :h, :w]
    else:
        stride = tile - overlap

        def starts(n: int) -> list[int]:
            s = list(range(0, max(n - tile, 0) + 1, stride))
            if s[-1] + tile < n:
                s.append(n - tile)
            return s

        acc = torch.zeros_like(xt)
        cnt = torch.zeros_like(xt[:, :1])
        boxes = [(i, j) for i in starts(h) for j in starts(w)]
        for k in range(0, len(boxes), 16):
            chunk = boxes[k : k + 16]
            batch = torch.cat([xt[:, :, i : i + tile, j : j + tile] for i, j in chunk])
            out = run(batch)
            for b, (i, j) in enumerate(chunk):
                acc[:, :, i : i + tile, j : j + tile] += out[b : b + 1]
                cnt[:, :, i : i + tile, j : j + tile] += 1
        eps = acc / cnt
    x0 = y - sm * eps  # == (x_t - sqrt(1 - a) eps) / sqrt(a)
    return ((x0.clamp(-1.0, 1.0) + 1.0) / 2.0).clamp(0.0, 1.0)


def _load_cache(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    """Run the bench, print a Markdown table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help="prior .safetensors or a run folder"
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of clean PNGs (CBSD68)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0, 50.0])
    ap.add_argument("--limit", type=int, default=-1, help="first N images (-1 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile", type=int, default=0, help="0 = whole image; N = overlapping NxN tiles")
    ap.add_argument("--overlap", type=int, default=16, help="tile overlap in pixels (with --tile)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--no-cbm3d", action="store_true", help="skip CBM3D (cached values are still shown)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="CBM3D PSNR cache (JSON)")
    ap.add_argument("--json", type=Path, default=None, help="write the results (means and per image) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    files = sorted(args.data.glob("*.png"))
    if not files:
        print(f"no PNGs in {args.data}", file=sys.stderr)
        return 2
    if args.limit >= 0:
        files = files[: args.limit]
    net, info = load_prior(args.weights)
    abar = alphas_cumprod(linear_betas(int(info["diffusion"]["steps"])))
    cache = _load_cache(args.cache)
    results: dict[str, Any] = {
        "weights": str(args.weights),
        "step": info.get("step"),
        "n": len(files),
        "tile": args.tile,
        "seed": args.seed,
        "sigmas": {},
    }
    for sigma in args.sigmas:
        rng = np.random.default_rng(args.seed)
        rows: dict[str, list[float]] = {"noisy": [], "prior": [], "cbm3d": []}
        t_prior = 0.0
        for p in files:
            with Image.open(p) as im:
                clean = np.asarray(im.convert("RGB")).astype(np.float64) / 255.0
            noisy = clean + rng.normal(0.0, sigma / 255.0, clean.shape)
            rows["noisy"].append(psnr(noisy * 255.0, clean * 255.0))
            x = torch.from_numpy(noisy).permute(2, 0, 1)[None].float()
            t0 = time.perf_counter()
            den = prior_denoise(
                net, x, sigma, abar, tile=args.tile, overlap=args.overlap, precision=args.precision
            )
            t_prior += time.perf_counter() - t0
            out = den[0].permute(1, 2, 0).double().numpy()
            rows["prior"].append(psnr(out * 255.0, clean * 255.0))
            key = f"{p.name}|{sigma:g}|{args.seed}"
            if key not in cache and not args.no_cbm3d:
                import bm3d  # optional dependency (extra "baselines")

                cache[key] = psnr(np.asarray(bm3d.bm3d_rgb(noisy, sigma / 255.0)) * 255.0, clean * 255.0)
                args.cache.parent.mkdir(parents=True, exist_ok=True)
                args.cache.write_text(json.dumps(cache, indent=0, sort_keys=True))
            if key in cache:
                rows["cbm3d"].append(cache[key])
            print(
                f"  sigma {sigma:g} {p.name}: noisy {rows['noisy'][-1]:.2f} prior {rows['prior'][-1]:.2f}"
                + (f" CBM3D {rows['cbm3d'][-1]:.2f}" if key in cache else ""),
                file=sys.stderr,
                flush=True,
            )
        entry = {k: (float(np.mean(v)) if len(v) == len(files) else None) for k, v in rows.items()}
        entry["prior_s_per_image"] = t_prior / len(files)
        entry["per_image"] = {k: v for k, v in rows.items() if len(v) == len(files)}
        results["sigmas"][f"{sigma:g}"] = entry

    def fmt(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else "-"

    sig = [f"{s:g}" for s in args.sigmas]
    step = info.get("step")
    print(
        f"\nCBSD68 colour denoising, PSNR-RGB (dB), first {len(files)} image(s), seed {args.seed}, "
        f"prior step {step}, {'whole image' if args.tile <= 0 else f'{args.tile}px tiles'}\n"
    )
    print("| method | " + " | ".join(f"σ={s}" for s in sig) + " |")
    print("|---|" + "---:|" * len(sig))
    for name, key in (("noisy input", "noisy"), ("CBM3D (bm3d)", "cbm3d"), ("prior x0|t (ours)", "prior")):
        print(f"| {name} | " + " | ".join(fmt(results["sigmas"][s][key]) for s in sig) + " |")
    for name, ref in PUBLISHED.items():
        print(
            f"| {name} (published, 68 images) | "
            + " | ".join(fmt(ref.get(int(float(s)))) for s in sig)
            + " |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
