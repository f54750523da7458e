"""Peak memory of ResShift at large sizes: the v3 architecture (random weights) through the tiling layer.

Why: the official code chops the LQ image but decodes the whole latent at once; its VQ decoder's mid
attention over every latent token made a 256→1024 run need more than 34 GB here. Our ResShift runs encode,
chain and decode per tile (blend rule), so memory is bounded by the tile batch, not the image. Weights are
random (the architecture and sizes are what costs memory); the manifests give the official constructor
arguments. Prints peak RSS (Linux ``VmHWM``) and seconds.

Usage::

    python bench/bench_resshift_memory.py --lq 256          # 256 -> 1024
    python bench/bench_resshift_memory.py --lq 512          # 512 -> 2048
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffrestore.diffusion.resshift_schedule import resshift_schedule
from diffrestore.methods.base import Observation, Prior
from diffrestore.methods.resshift import ResShift
from diffrestore.nets import build_network
from diffrestore.operators.sr import AvgPoolSR

REFS = Path(__file__).resolve().parents[2] / "shared" / "refs" / "manifests"


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lq", type=int, default=256, help="LQ side (output = 4x)")
    ap.add_argument("--batch", type=int, default=1, help="tiles per network call")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unet_cfg = json.loads((REFS / "resshift_realsrx4_s4_v3.keys.json").read_text())["config"]
    vq_cfg = json.loads((REFS / "autoencoder_vq_f4.keys.json").read_text())["config"]
    torch.manual_seed(0)
    net = build_network("resshift_swinunet", unet_cfg).eval().requires_grad_(False)
    vq = build_network("vq_f4", vq_cfg).eval().requires_grad_(False)
    prior = Prior(spec="v3-random", patch=256, multiple=4,
                  parts={"net": net, "vq": vq, "schedule": resshift_schedule(4), "scale": 4})
    base = vm_hwm_mb()
    s = args.lq
    op = AvgPoolSR(4).bind((3, 4 * s, 4 * s))
    obs = Observation.from_file_units(op, torch.rand(1, 3, s, s), 0.0, (1, 3, 4 * s, 4 * s))
    meth = ResShift.configure({"batch": args.batch})
    plans: list = []
    t0 = time.perf_counter()
    run = meth.run(obs, prior=prior, on_plan=plans.append)
    dt = time.perf_counter() - t0
    print(f"ResShift v3 architecture (random weights), {s}x{s} -> {4 * s}x{4 * s}, tile 256 (latent 64), "
          f"batch {args.batch}, {torch.get_num_threads()} threads: {plans[0].describe()}")
    print(f"output {tuple(run.x.shape)}; peak RSS {vm_hwm_mb():.0f} MB (after model build {base:.0f} MB); "
          f"{dt:.0f} s")


if __name__ == "__main__":
    main()
