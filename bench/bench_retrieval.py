"""Retrieval robustness of the ADIR neighbour index: does a DEGRADED photo find what its clean version finds?

ADIR adapts the prior on the K nearest neighbours of the degraded input, so the embedding must be insensitive
to the degradation. Protocol: the first ``--n`` BSDS500 training photos (sorted names) are indexed with
``diffrestore.io.index.build_index`` (clean); each photo is then degraded and embedded again:

* ``sr4``: 4x4 average pooling, then bicubic upsampling back to full size (what A⁺y of SR x4 looks like);
* ``blur``: Gaussian blur, std 3 px (reflect padding);
* ``noise``: additive white Gaussian noise, std 25/255 (seeded), clipped to [0, 1];

and we report, over the photos, with k = ``--k`` (5):

* ``self@1`` / ``self@k``: the clean original is the nearest / among the k nearest of its degraded version;
* ``nn-overlap@k``: |top-k(clean query) ∩ top-k(degraded query)| / k, both lists WITHOUT the photo itself —
  "how often the clean image's top-k neighbours are retrieved from its degraded version".

Embeddings compared: the default (``prior``: diffusion-prior middle-block features at t = 400, 4 fixed noise
draws, 64 px view = the prior's patch), the same at t = 200, and a raw-pixel baseline (8x8 thumbnail; very
robust to low-pass degradations by construction, but it only encodes colour layout, not content).

Usage: ``nice python bench/bench_retrieval.py --n 100`` (≈ 0.3–1 s per embedding on 2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffrestore.io.images import read_image
from diffrestore.io.index import build_index, embed_images, spherical_distance

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "bsds500"


def sr4(x: torch.Tensor) -> torch.Tensor:
    """4x4 average pool then bicubic back up (image cropped to a multiple of 4)."""
    h, w = x.shape[-2] // 4 * 4, x.shape[-1] // 4 * 4
    lr = F.avg_pool2d(x[..., :h, :w], 4)
    return F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def blur(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    r = int(3 * sigma)
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Thumb:
    """Raw-pixel baseline: the 8x8 area-averaged colour thumbnail (192 numbers), mean-centred."""

    spec = "thumb8"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(x.float(), 8).flatten(1)
        return f - f.mean(dim=1, keepdim=True)


def scores(clean: torch.Tensor, deg: torch.Tensor, k: int) -> dict[str, float]:
    """self@1, self@k and nn-overlap@k of degraded queries against the clean index."""
    n = clean.shape[0]
    d_deg = spherical_distance(deg, clean)  # [n, n]
    d_cln = spherical_distance(clean, clean)
    rank_deg = d_deg.argsort(dim=1)
    eye = torch.eye(n, dtype=torch.bool)
    self1 = (rank_deg[:, 0] == torch.arange(n)).float().mean()
    selfk = (rank_deg[:, :k] == torch.arange(n)[:, None]).any(dim=1).float().mean()
    inf = torch.tensor(float("inf"))
    nn_c = torch.where(eye, inf, d_cln).argsort(dim=1)[:, :k]
    nn_d = torch.where(eye, inf, d_deg).argsort(dim=1)[:, :k]
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(nn_c, nn_d)]).mean()
    return {"self@1": float(self1), f"self@{k}": float(selfk), f"nn-overlap@{k}": float(overlap)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--embeds", default="prior,prior|t=200,thumb8")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    files = sorted(args.data.glob("*.jpg"))[: args.n]
    images = [read_image(f) for f in files]
    g = torch.Generator().manual_seed(0)
    degraded = {
        "sr4": [sr4(x) for x in images],
        "blur": [blur(x) for x in images],
        "noise": [(x + 25 / 255 * torch.randn(x.shape, generator=g)).clamp(0, 1) for x in images],
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
        for spec in args.embeds.split(","):
            embed = Thumb() if spec == "thumb8" else spec
            t0 = time.perf_counter()
            idx = build_index(folder, Path(tmp) / "index.safetensors", embed)  # the real (cached) path
            order = {Path(e["path"]).name: i for i, e in enumerate(idx.entries)}
            clean = idx.embeddings[[order[f.name] for f in files]]
            results[spec] = {}
            for name, imgs in degraded.items():
                results[spec][name] = scores(clean, embed_images(imgs, embed), args.k)
            secs = (time.perf_counter() - t0) / (len(files) * (1 + len(degraded)))
            for name, r in results[spec].items():
                print(f"{spec:>14} {name:>5}: " + "  ".join(f"{k} {v:.3f}" for k, v in r.items())
                      + f"   ({secs:.2f} s/embedding)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": len(files), "k": args.k, "results": results}, indent=1))


if __name__ == "__main__":
    main()
