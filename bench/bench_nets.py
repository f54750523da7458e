"""Time one forward of each full-size network (random weights) in fp32 and under bf16 autocast.

Speed does not depend on weight values, so no checkpoint is needed. Each (network, dtype) runs in a fresh
process so its peak RSS is its own. Reports wall seconds and CPU seconds per call (ANCHORS.md compares
CPU-s, which stays stable when the machine is shared).

    python bench/bench_nets.py [--only adm] [--threads 2] [--dtypes fp32,bf16] [--warmup 0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any

# name -> (registry model whose family/config is used, what one "call" is)
NETS: dict[str, tuple[str, str]] = {
    "adm-uncond": ("adm-256-uncond", "UNet forward, x [1,3,256,256]"),
    "adm-classifier": ("adm-256-classifier", "classifier forward, x [1,3,256,256]"),
    "ddpm-celebahq": ("ddpm-celebahq", "UNet forward, x [1,3,256,256]"),
    "resshift-v3": ("resshift-realsr-v3", "Swin-UNet forward, latent [1,3,64,64] + lq [1,3,64,64]"),
    "vq-f4": ("vq-f4", "encode + decode (quantised), x [1,3,256,256]"),
}


def _random_network(model_name: str):
    """Full-size network with random weights; meta build + fill when it has no buffers (fast for ADM)."""
    import torch

    from diffrestore.io.registry import build, get_spec

    spec = get_spec(model_name)
    meta = build(spec, meta=True)
    if any(True for _ in meta.buffers()):  # e.g. Swin position indices: need their real construction
        net = build(spec, meta=False)
    else:
        net = meta.to_empty(device="cpu")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
                p.normal_(0.0, fan_in**-0.5 if p.dim() > 1 else 0.1, generator=g)
    return net.eval().requires_grad_(False), spec


def _call(name: str, net, spec) -> Callable[[], Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    t = torch.tensor([500])
    if name == "resshift-v3":
        x = torch.randn(1, 3, 64, 64, generator=g)
        lq = torch.randn(1, 3, 64, 64, generator=g)
        return lambda: net(x, torch.tensor([3]), lq=lq)
    x = torch.randn(1, 3, 256, 256, generator=g)
    if name == "vq-f4":
        return lambda: net.decode(net.encode(x))
    return lambda: net(x, t)


def _child(name: str, dtype: str, threads: int, warmup: int, repeat: int, q) -> None:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    net, spec = _random_network(NETS[name][0])
    build_s = time.perf_counter() - t0
    fn = _call(name, net, spec)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        for _ in range(warmup):
            fn()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            out = fn()
        wall, cpu = (time.perf_counter() - w0) / repeat, (time.process_time() - c0) / repeat
    finite = bool(torch.isfinite(out.float()).all())
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    q.put({"name": name, "dtype": dtype, "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss_gb,
           "build_s": build_s, "finite": finite})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help=f"network(s) to run (substring of {', '.join(NETS)})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object per result")
    args = ap.parse_args(argv)
    names = [n for n in NETS if not args.only or any(o in n for o in args.only)]
    if not names:
        ap.error(f"--only matches none of {', '.join(NETS)}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if any(d not in ("fp32", "bf16") for d in dtypes):
        ap.error("--dtypes takes fp32 and/or bf16")
    ctx = mp.get_context("spawn")
    print(f"threads {args.threads}, warmup {args.warmup}, repeat {args.repeat}")
    print(f"{'network':16} {'dtype':5} {'wall s/call':>11} {'CPU s/call':>10} {'peak RSS GB':>11}  call")
    for name in names:
        for dtype in dtypes:
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(name, dtype, args.threads, args.warmup, args.repeat, q))
            p.start()
            p.join()
            if p.exitcode != 0 or q.empty():
                print(f"{name:16} {dtype:5} failed (exit code {p.exitcode})")
                continue
            r = q.get()
            if args.json:
                print(json.dumps(r))
            flag = "" if r["finite"] else "  (non-finite output!)"
            print(f"{name:16} {dtype:5} {r['wall_s']:11.2f} {r['cpu_s']:10.2f} {r['peak_rss_gb']:11.2f}  "
                  f"{NETS[name][1]}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
