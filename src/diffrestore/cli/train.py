"""``diffrestore train prior`` (the default prior), ``train resshift`` (a ResShift SR model) and
``diffrestore train export``.

Kept thin: argument parsing only, so the library entry points (:func:`diffrestore.train.prior.train_prior`,
:func:`diffrestore.train.export.export_prior`) are what tests and scripts call.
"""

from __future__ import annotations

import argparse
from typing import Any

from diffrestore.errors import UserError


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def register(subparsers: Any) -> None:
    """Add the ``train`` command with its ``prior``, ``resshift`` and ``export`` subcommands."""
    p = subparsers.add_parser(
        "train",
        help="train the default diffusion prior on your photos",
        description="Train (prior) or export (export) the embedded default prior.",
    )
    sub = p.add_subparsers(dest="train_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    t = sub.add_parser(
        "prior",
        help="train or resume an ADM UNet prior on random crops of photos",
        description="Epsilon-prediction training of an ADM UNet on random multi-scale crops of photos. "
        "Checkpoints go to OUT every --ckpt-minutes and on exit (Ctrl-C / SIGTERM); "
        "--resume continues exactly.",
    )
    t.add_argument(
        "--data", nargs="+", required=True, metavar="DIR", help="folders of photos (searched recursively)"
    )
    t.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, train.json, log.csv)"
    )
    t.add_argument(
        "--size", type=_positive_int, default=64, help="crop size (default 64, the restore patch size)"
    )
    t.add_argument("--steps", type=_positive_int, default=100_000, help="total optimizer steps to reach")
    t.add_argument("--batch", type=_positive_int, default=16)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--warmup", type=int, default=200, help="linear learning-rate warmup steps")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    t.add_argument("--ema", type=float, default=0.999, help="EMA decay (warmed up as (1+n)/(10+n))")
    t.add_argument(
        "--t-low-frac",
        type=_fraction,
        default=0.0,
        help="fraction of samples with t drawn from [0, --t-low-max) (denoising-range importance)",
    )
    t.add_argument("--t-low-max", type=_positive_int, default=250)
    t.add_argument(
        "--arch", default="small", help="small | tiny | JSON object/file of ADM UNetModel arguments"
    )
    t.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto = bf16 autocast where the hardware has it, fp32 master weights always",
    )
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    t.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--min-scale", type=float, default=0.0, help="smallest random downscale factor")
    t.add_argument("--p-native", type=_fraction, default=0.5, help="probability of a crop at native scale")
    t.add_argument("--vflip", action="store_true", help="also random vertical flips")
    t.add_argument("--rot90", action="store_true", help="also random transposes (90-degree rotations)")
    t.add_argument("--max-images", type=_positive_int, default=None, help="use at most N photos")
    t.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint every N minutes (0 = off)")
    t.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0 = off)")
    t.add_argument("--log-every", type=_positive_int, default=20, help="log.csv row every N steps")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument(
        "--init-from",
        metavar="PATH",
        default=None,
        help="start from weights (an exported prior.safetensors or a run folder) instead of random",
    )
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    t.set_defaults(func=_cmd_prior)

    _register_resshift(sub)

    e = sub.add_parser(
        "export",
        help="export a run's EMA weights as fp16 safetensors + JSON (prior.json / resshift.json)",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("out_dir", metavar="OUT_DIR")
    e.add_argument(
        "--name",
        default=None,
        help="file stem (default: prior for a prior run, resshift for a ResShift run)",
    )
    e.add_argument("--raw", action="store_true", help="export the raw (non-EMA) weights instead")
    e.set_defaults(func=_cmd_export)


def _cmd_prior(args: argparse.Namespace) -> int:
    from diffrestore.train.prior import TrainConfig, train_prior

    if args.t_low_frac > 0 and args.t_low_max <= 0:
        raise UserError("--t-low-max must be > 0")
    cfg = TrainConfig(
        data=list(args.data),
        out=args.out,
        size=args.size,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        grad_clip=args.grad_clip,
        ema=args.ema,
        t_low_frac=args.t_low_frac,
        t_low_max=args.t_low_max,
        arch=args.arch,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        min_scale=args.min_scale,
        p_native=args.p_native,
        vflip=args.vflip,
        rot90=args.rot90,
        max_images=args.max_images,
        ckpt_minutes=args.ckpt_minutes,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        resume=args.resume,
        init_from=args.init_from,
        progress=args.progress,
    )
    meta = train_prior(cfg)
    print(f"{meta['step']} steps, {meta['images_seen']} images, {meta['wall_hours']:.2f} h -> {args.out}")
    return 0


def _register_resshift(sub: Any) -> None:
    r = sub.add_parser(
        "resshift",
        help="train or resume a ResShift SR model (Swin-UNet, pixel or VQ-latent space)",
        description="ResShift training (loss |f(x_t, y0, t) - x0|^2) on random HR crops with LR made on the "
        "fly. Checkpoints go to OUT every --ckpt-minutes and on exit (Ctrl-C / SIGTERM); --resume "
        "continues exactly.",
    )
    r.add_argument("--data", nargs="+", required=True, metavar="DIR", help="folders of HR photos")
    r.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoints, train.json)")
    r.add_argument("--scale", type=_positive_int, default=4, help="SR factor (default 4)")
    r.add_argument("--degradation", choices=["bicubic", "realistic"], default="bicubic",
                   help="bicubic: MATLAB bicubic, 8-bit; realistic: second-order blur/resize/noise/JPEG")
    r.add_argument("--latent", action="store_true", help="train in the VQ-f4 latent space (needs --vq)")
    r.add_argument("--vq", metavar="PATH", default=None, help="VQ-f4 checkpoint or the name vq-f4")
    r.add_argument("--size", type=_positive_int, default=64, help="HR crop size in pixels (default 64)")
    r.add_argument("--steps", type=_positive_int, default=100_000, help="total optimizer steps to reach")
    r.add_argument("--batch", type=_positive_int, default=16)
    r.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 2e-4; with --resume: change it from here on)")
    r.add_argument("--warmup", type=int, default=200, help="linear learning-rate warmup steps")
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    r.add_argument("--ema", type=float, default=0.999, help="EMA decay (warmed up as (1+n)/(10+n))")
    r.add_argument("--diffusion-steps", type=_positive_int, default=4, help="T (default 4)")
    r.add_argument("--kappa", type=float, default=2.0, help="noise scale kappa (default 2)")
    r.add_argument("--power", type=float, default=0.3, help="schedule power p (default 0.3)")
    r.add_argument("--min-noise-level", type=float, default=0.2, help="sqrt(eta_1) = min(this/kappa, this)")
    r.add_argument("--etas-end", type=float, default=0.99, help="sqrt(eta_T) (default 0.99)")
    r.add_argument("--arch", default="small",
                   help="small | light | tiny | JSON object/file of UNetModelSwin arguments")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--min-scale", type=float, default=0.0, help="smallest random downscale of a photo")
    r.add_argument("--p-native", type=_fraction, default=0.5, help="probability of a crop at native scale")
    r.add_argument("--vflip", action="store_true", help="also random vertical flips")
    r.add_argument("--rot90", action="store_true", help="also random transposes")
    r.add_argument("--max-images", type=_positive_int, default=None, help="use at most N photos")
    r.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint every N minutes (0 = off)")
    r.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0 = off)")
    r.add_argument("--log-every", type=_positive_int, default=20, help="log.csv row every N steps")
    r.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    r.add_argument("--init-from", metavar="PATH", default=None,
                   help="start from weights: an exported resshift.safetensors, a run folder or a model name")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    r.set_defaults(func=_cmd_resshift)


def _cmd_resshift(args: argparse.Namespace) -> int:
    from diffrestore.train.resshift import ResShiftTrainConfig, train_resshift

    if args.latent and not args.vq:
        raise UserError("--latent needs --vq PATH (the VQ-f4 checkpoint, or the name vq-f4)")
    keys = ("scale", "degradation", "latent", "vq", "size", "steps", "batch", "lr", "weight_decay", "warmup",
            "grad_clip", "ema", "diffusion_steps", "kappa", "power", "min_noise_level", "etas_end", "arch",
            "precision", "device", "threads", "seed", "min_scale", "p_native", "vflip", "rot90", "max_images",
            "ckpt_minutes", "ckpt_every", "log_every", "resume", "init_from", "progress")
    cfg = ResShiftTrainConfig(data=list(args.data), out=args.out, **{k: getattr(args, k) for k in keys})
    meta = train_resshift(cfg)
    print(f"{meta['step']} steps, {meta['images_seen']} images, {meta['wall_hours']:.2f} h -> {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from diffrestore.train.export import export_run

    paths = export_run(args.run_dir, args.out_dir, name=args.name, use_ema=not args.raw)
    for p in paths:
        print(p)
    return 0
