"""``anystar synth``: write synthetic AnyStar training pairs to a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_anystar._cli.common import UserError


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command to the ``anystar`` parser."""
    from napari_anystar.synth.generators import GENERATOR_NAMES

    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic training volumes",
        description="Write N synthetic image/label pairs (DIR/00000_image.tif, "
        "DIR/00000_labels.tif, ...) from a named AnyStar generator.",
    )
    parser.add_argument("--generator", default="as-mix", metavar="NAME",
                        help=f"generator: {', '.join(GENERATOR_NAMES)} (default: as-mix)")
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the series (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", type=int, default=64, help="output edge length (default 64)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1); files do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in DIR")
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the samples with a progress bar on stderr; UserError for bad input."""
    from tqdm import tqdm

    from napari_anystar.synth import SynthSettings, export_samples

    try:
        steps = export_samples(
            args.generator,
            args.n,
            args.seed,
            args.out,
            SynthSettings(size=args.size),
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except FileExistsError as err:
        raise UserError(f"{err} (use --overwrite)") from None
    except ValueError as err:
        raise UserError(str(err)) from None
    with tqdm(total=args.n, unit="sample", desc=f"synth {args.generator}") as bar:
        try:
            for done in steps:
                bar.update(done - bar.n)
        finally:
            steps.close()
    print(f"wrote {args.n} samples to {args.out}")
    return 0
