"""``diffrestore`` entry point: discovers ``cli/<command>.py`` modules that define ``register``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from diffrestore import __version__
from diffrestore.errors import UserError


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``diffrestore CMD: error: ...``, exit 2), like every other user error;
    ``--help`` still prints the full usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="diffrestore", description="Restore photos of any size with diffusion models."
    )
    parser.add_argument("--version", action="version", version=f"diffrestore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    import diffrestore.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name in ("main", "common") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"diffrestore.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"diffrestore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffrestore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `diffrestore models | head`: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
