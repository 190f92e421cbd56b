"""The ``dbdetect`` command line: ``detect``, ``train``, ``eval``, ``tune``, ``export`` and ``serve``.

Each subcommand is a module of this package that registers itself through
``add_parser(subparsers)``; this file only wires them together and turns user
errors into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import UserError

# subcommand name -> module providing add_parser(subparsers) and run(args)
_SUBCOMMANDS = {
    "detect": "dbdetect.cli.detect",
    "train": "dbdetect.cli.train",
    "eval": "dbdetect.cli.eval",
    "tune": "dbdetect.cli.tune",
    "export": "dbdetect.cli.export",
    "serve": "dbdetect.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbdetect",
        description="Scene-text detection with DBNet: detect, train, evaluate and tune.",
    )
    parser.add_argument("--version", action="version", version=f"dbdetect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in _SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            _add_unavailable(sub, name, modname, exc)
            continue
        mod.add_parser(sub)
    return parser


def _add_unavailable(sub, name: str, modname: str, exc: ImportError) -> None:
    """Register a subcommand whose module failed to import, so that choosing it names the cause
    (a missing torch, a broken native build) instead of argparse's "invalid choice"."""
    reason = f"cannot import {modname} ({type(exc).__name__}: {exc})"
    # no option prefix: every argument, "--data" included, is taken as-is so the cause is reported
    p = sub.add_parser(name, help=f"unavailable: {reason}", add_help=False, prefix_chars="\x01")
    p.add_argument("rest", nargs="*")

    def run(args):
        raise UserError(f"{reason}; reinstall dbdetect (pip install .) or check its dependencies")

    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"dbdetect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
