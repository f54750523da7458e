"""``diffrestore index``: build / query the image retrieval index ADIR adapts on (``diffrestore.io.index``).

``index build DIR --out INDEX`` embeds every image under DIR once (re-running only embeds new or changed
files); ``index query INDEX IMAGE --k N`` prints the N nearest indexed files with their spherical
distance, nearest first (tab-separated, so it pipes into other tools).
"""

from __future__ import annotations

import argparse
import sys


def _build(args: argparse.Namespace) -> int:
    from diffrestore.io.index import build_index

    def progress(done: int, todo: int) -> None:
        if not args.quiet and (done == todo or done % 20 == 0):
            print(f"embedded {done}/{todo}", file=sys.stderr, flush=True)

    idx = build_index(args.dir, args.out, args.embed, progress=progress)
    s = idx.stats
    print(f"index {args.out}: {s['total']} images ({s['embedded']} embedded, {s['reused']} reused, "
          f"{s['removed']} removed), embedding {idx.embed}")
    return 0


def _query(args: argparse.Namespace) -> int:
    from diffrestore.errors import UserError
    from diffrestore.io.index import query

    if args.k < 1:
        raise UserError("--k must be at least 1")
    for path, dist in query(args.index, args.image, k=args.k):
        print(f"{dist:.6f}\t{path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("index", help="build or query an image retrieval index (ADIR neighbours)")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    b = sub.add_parser("build", help="embed the images of a folder (incremental)")
    b.add_argument("dir", help="folder of images (searched recursively)")
    b.add_argument("--out", required=True, help="index file to write/update (.safetensors)")
    b.add_argument("--embed", default=None,
                   help="embedding: 'prior' (default; the diffusion prior's own features), 'prior:MODEL' or "
                        "'python:module:function' (your own code, [B,3,H,W] in [0,1] -> [B,D])")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.set_defaults(func=_build)
    q = sub.add_parser("query", help="nearest indexed images of an image")
    q.add_argument("index", help="index file made by 'index build'")
    q.add_argument("image", help="query image")
    q.add_argument("--k", type=int, default=5, help="number of neighbours (default 5)")
    q.set_defaults(func=_query)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
