"""``anystar models``: list the usable models, remember a folder, or download one."""

from __future__ import annotations

import argparse
from typing import Any

from napari_anystar._cli.common import UserError

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``models`` sub-command."""
    parser = subparsers.add_parser(
        "models",
        help="list, add or download StarDist3D models",
        description=(
            "Without options: list the models 'anystar segment --model' accepts (name, "
            "source, thresholds, normalisation, folder, note; * marks the default)."
        ),
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--add", metavar="DIR", help="remember a StarDist3D model folder")
    action.add_argument("--fetch", metavar="URL", help="download a zipped model folder")
    parser.add_argument("--sha256", metavar="HASH", help="checksum of the zip (with --fetch)")
    parser.add_argument("--name", help="name of the downloaded model (with --fetch)")
    return parser


def run(args: argparse.Namespace) -> int:
    """List, add or fetch models; UserError for invalid folders and failed downloads."""
    from napari_anystar.model import registry

    if args.fetch is None and (args.sha256 or args.name):
        raise UserError("--sha256 and --name go with --fetch URL")
    try:
        if args.add is not None:
            entry = registry.remember_model_folder(args.add)
            print(f"added {entry.name} ({entry.source}): {entry.path}")
        elif args.fetch is not None:
            entry = _fetch(args)
            print(f"downloaded {entry.name} ({entry.source}): {entry.path}")
        else:
            _print_table(registry)
    except ValueError as err:  # InvalidModelError, DownloadError
        raise UserError(str(err)) from None
    return 0


def _fetch(args: argparse.Namespace) -> Any:
    from napari_anystar.model.download import fetch_model

    if not args.sha256:
        raise UserError("--fetch needs --sha256 HASH (the zip's checksum)")
    return fetch_model(args.fetch, args.sha256, name=args.name, progress=True)


def _print_table(registry: Any) -> None:
    entries = registry.list_models()
    if not entries:
        print(registry.NO_MODELS_MESSAGE)
        return
    default = registry.default_model()
    rows = [("", "NAME", "SOURCE", "PROB", "NMS", "NORMALISATION", "PATH", "NOTE")]
    for entry in entries:
        prob, nms = registry.model_thresholds(entry)
        norm = registry.model_normalization(entry.path).describe()
        mark = "*" if entry == default else ""
        rows.append((mark, entry.name, entry.source, f"{prob:.3g}", f"{nms:.3g}", norm,
                     str(entry.path), registry.model_note(entry.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
