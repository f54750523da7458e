"""``diffrestore serve``: the browser UI (Gradio), an optional extra so the core stays light.

Gradio is imported only when the command runs: without the ``ui`` extra every other command works and
this one says in one line how to install it. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse

from diffrestore.errors import UserError

INSTALL_HINT = 'the browser UI needs the "ui" extra: pip install -e ".[ui]" (from a checkout)'


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="open the browser UI (drop a photo, pick a task, compare before/after)",
                       description="Serve the browser UI. It listens on 127.0.0.1 (this machine only) "
                                   "unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--models-dir", default=None, help="where named checkpoints live")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--max-megapixels", type=float, default=36.0,
                   help="largest photo the page accepts, in megapixels (default 36)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffrestore.methods.options import check_device

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if not args.max_megapixels > 0:
        raise UserError("--max-megapixels must be > 0")
    check_device(args.device)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    from diffrestore.ui.app import serve

    serve(args.host, args.port, device=args.device, models_dir=args.models_dir,
          max_megapixels=args.max_megapixels)
    return 0
