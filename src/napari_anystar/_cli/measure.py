"""``anystar measure``: one CSV row per object of a label volume (``analysis.measure``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_anystar._cli.common import UserError

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``measure`` sub-command."""
    from napari_anystar.analysis.measure import DEFAULT_VOXEL_SIZE

    default_size = " ".join(f"{v:g}" for v in DEFAULT_VOXEL_SIZE)
    parser = subparsers.add_parser(
        "measure",
        help="measure every object of a label volume and write a CSV table",
        description=(
            "Write one CSV row per object of a 3D label volume (.tif/.tiff, .nii/.nii.gz): "
            "label id, centroid and bounding box in voxels and micrometres, volume, "
            "equivalent diameter, elongation, whether it touches the border and, with "
            "--image, its mean/max/integrated intensity. Physical units use the labels "
            "file's voxel size (assumed in um) unless --voxel-size is given."
        ),
    )
    parser.add_argument("labels", metavar="LABELS", help="label volume (0 = background)")
    parser.add_argument("--image", metavar="IMG", help="image of the same shape for intensities")
    parser.add_argument("--out", required=True, metavar="CSV", help="output table (.csv)")
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help=f"voxel size in um (default: the labels file's, or {default_size} if it has none)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    return parser


def _read(path: Path, what: str) -> tuple[Any, Any]:
    from napari_anystar.volume_io import read_volume

    try:
        return read_volume(path)
    except Exception as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UserError(f"cannot read {what} {path}: {reason}") from None


def _check_out(out: Path, overwrite: bool) -> None:
    from napari_anystar.volume_io import check_writable

    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: name a file ending in .csv")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a .csv file")
    if out.exists() and not overwrite:
        raise UserError(f"output {out} already exists (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist")
    try:
        check_writable(out.parent)
    except ValueError as err:
        raise UserError(f"{out}: {err}") from None


def run(args: argparse.Namespace) -> int:
    """Measure the labels (and image) and write the table; UserError on bad input."""
    from napari_anystar.analysis.measure import DEFAULT_VOXEL_SIZE, measure_objects, write_csv

    out = Path(args.out)
    _check_out(out, args.overwrite)
    labels, meta = _read(Path(args.labels), "labels")
    image = None if args.image is None else _read(Path(args.image), "image")[0]
    voxel_size = args.voxel_size or meta.voxel_size or DEFAULT_VOXEL_SIZE
    try:
        table = measure_objects(labels, image, voxel_size)
    except ValueError as err:
        raise UserError(f"{args.labels}: {err}") from None
    if len(table) == 0:
        raise UserError(f"{args.labels} has no objects (every voxel is 0); nothing written")
    size = " x ".join(f"{v:g}" for v in table.voxel_size)
    print(f"voxel size (Z, Y, X): {size} um", file=sys.stderr)
    try:
        write_csv(table, out, overwrite=args.overwrite)
    except OSError as err:  # its own text may name the temporary file: name the output
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None
    print(f"{out}\t{len(table)} objects")
    return 0
