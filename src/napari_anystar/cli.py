"""The ``anystar`` command: argument parsing and dispatch only.

Each sub-command lives in ``napari_anystar._cli.<name>`` and provides
``register(subparsers)`` and ``run(args) -> int``. Failures that are the user's
to fix raise :class:`napari_anystar._cli.common.UserError`; they end with a
one-line reason on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_anystar import __version__
from napari_anystar._cli.common import UserError

SUBCOMMANDS = ("synth", "segment", "train", "models", "measure", "evaluate", "timeseries")


def build_parser() -> argparse.ArgumentParser:
    """The full ``anystar`` argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="anystar",
        description="AnyStar: zero-shot 3D star-convex instance segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"anystar {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"napari_anystar._cli.{name}")
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anystar`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"anystar {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anystar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
