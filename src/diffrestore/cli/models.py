"""``diffrestore models``: which checkpoints are known / present, and check our networks against the refs.

``models`` (= ``models list``) prints the registry with each file's status in the models directory;
``models verify --refs DIR`` runs every network test vector under DIR (``nets/*/`` of the official refs) and
prints one line per output — the same check the test suite makes, available to users of an installed copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffrestore.errors import UserError


def _human(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _list(args: argparse.Namespace) -> int:
    from diffrestore.io import registry

    root = registry.models_dir(getattr(args, "models_dir", None))
    rows = [("NAME", "FAMILY", "FILE", "STATUS", "SIZE", "TASKS")]
    specs = registry.known_models()
    for spec in specs:
        status = registry.file_status(spec, root)
        file = spec.file if not spec.embedded else "(embedded) " + spec.file
        tasks = ",".join(spec.tasks) if spec.tasks else spec.role
        rows.append((spec.name, spec.family or "-", file, status, _human(spec.size), tasks))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"models directory: {root}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if any(not s.embedded and registry.file_status(s, root) != "present" for s in specs):
        print(f"download missing files into {root} (URLs: diffrestore models --urls)")
    if getattr(args, "urls", False):
        for spec in specs:
            for url in spec.urls:
                print(f"{spec.name}  {url}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from diffrestore.nets.vectors import run_vector, vector_dirs

    refs = Path(args.refs)
    dirs = vector_dirs(refs)  # UserError (exit 2) when DIR has no vectors
    if args.only:
        dirs = [d for d in dirs if any(o in d.name for o in args.only)]
        if not dirs:
            raise UserError(f"no test vector under {refs} matches {', '.join(args.only)}")
    failed = 0
    total = 0
    for d in dirs:
        try:
            results = run_vector(d)
        except Exception as e:  # a broken network or vector fails this vector, the others still run
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"{d.name}  -  -  FAIL ({type(e).__name__}: {msg})")
            failed += 1
            total += 1
            continue
        for r in results:
            total += 1
            failed += not r.ok
            print(f"{r.name}  {r.max_abs_diff:.3g}  {r.tol:.3g}  {'PASS' if r.ok else 'FAIL'}")
        sys.stdout.flush()
    print(f"{total - failed}/{total} outputs pass")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` with sub-commands ``list`` (default) and ``verify``."""
    p = subparsers.add_parser(
        "models",
        help="list known checkpoints; verify networks against reference vectors",
        description="List the named checkpoints and whether their files are present.",
    )
    p.add_argument(
        "--models-dir", metavar="DIR", help="where checkpoints live (default: $DIFFRESTORE_MODELS or cache)"
    )
    p.add_argument("--urls", action="store_true", help="also print the download URLs")
    p.set_defaults(func=_list)
    sub = p.add_subparsers(dest="models_command", metavar="{list,verify}")
    lp = sub.add_parser("list", help="list named checkpoints (default)")
    lp.add_argument("--models-dir", metavar="DIR", default=argparse.SUPPRESS, help="where checkpoints live")
    lp.add_argument("--urls", action="store_true", default=argparse.SUPPRESS, help="also print download URLs")
    lp.set_defaults(func=_list)
    vp = sub.add_parser(
        "verify",
        help="run the network test vectors under --refs DIR",
        description="Build each network of DIR/nets/*/config.json, load its weights strictly and compare "
        "every output; exit 1 if any output is off, 2 if DIR holds no vectors.",
    )
    vp.add_argument("--refs", required=True, metavar="DIR", help="reference vectors (shared/refs or nets/)")
    vp.add_argument("--only", action="append", metavar="NAME", help="only vectors whose name contains NAME")
    vp.set_defaults(func=_verify)
