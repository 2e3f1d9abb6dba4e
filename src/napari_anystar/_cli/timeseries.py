"""``anystar timeseries``: each object's mean intensity per frame of a 4D (T, Z, Y, X) file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_anystar._cli.common import UserError
from napari_anystar._cli.segment import (
    add_model_options,
    drive,
    load_model,
    prepare_model,
    segment_image,
)

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``timeseries`` sub-command."""
    from napari_anystar.analysis.timeseries import DEFAULT_SIGMA

    parser = subparsers.add_parser(
        "timeseries",
        help="per-object mean intensity in every frame of a 4D (T, Z, Y, X) volume",
        description=(
            "Measure each object's mean intensity in every frame of a 4D image (.tif/.tiff "
            "T, Z, Y, X; .nii/.nii.gz X, Y, Z, T). The objects come from --labels (3D, the "
            "frames' shape) or, without it, from segmenting the mean over time (or frame K) "
            "as 'anystar segment' does. Writes a tidy CSV: object, frame (from 0), value."
        ),
    )
    parser.add_argument("input", metavar="IMAGE4D", help="4D image volume")
    parser.add_argument("--out", required=True, metavar="CSV", help="output .csv file")
    parser.add_argument(
        "--labels", metavar="LABELS", help="3D label volume of the objects (skips segmenting)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--frame", type=int, metavar="K", help="segment frame K (from 0) instead of the mean"
    )
    which.add_argument(
        "--mean", action="store_true", help="segment the mean over time (the default)"
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=DEFAULT_SIGMA,
        metavar="S",
        help=f"temporal Gaussian smoothing in frames, 0 for none (default: {DEFAULT_SIGMA:g})",
    )
    parser.add_argument(
        "--save-labels",
        metavar="PATH",
        help="also write the labels it segmented (.tif/.tiff/.nii/.nii.gz; not with --labels)",
    )
    add_model_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def _check_args(args: argparse.Namespace) -> tuple[Path, Path, Path | None, Path | None]:
    """(image, csv, labels, labels to save) paths, checked before anything is computed."""
    from napari_anystar.analysis.timeseries import check_sigma
    from napari_anystar.volume_io import check_writable, volume_format

    image, out = Path(args.input), Path(args.out)
    labels = Path(args.labels) if args.labels else None
    save = Path(args.save_labels) if args.save_labels else None
    if labels is not None and (args.frame is not None or args.mean):
        raise UserError("--frame/--mean choose what to segment; leave them out with --labels")
    if labels is not None and save is not None:
        raise UserError("--save-labels writes segmented labels; leave it out with --labels")
    for path in filter(None, (image, labels, save)):
        try:
            volume_format(path)
        except ValueError as err:
            raise UserError(str(err)) from None
    for path in filter(None, (image, labels)):
        if not path.is_file():
            raise UserError(f"input {path} does not exist")
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: name a file ending in .csv")
    inputs = {path.resolve() for path in (image, labels) if path is not None}
    for path in filter(None, (out, save)):
        if path.exists() and path.resolve() in inputs:
            raise UserError(f"output {path} would replace an input")
        if path.exists() and not args.overwrite:
            raise UserError(f"output {path} already exists (use --overwrite to replace it)")
        if not path.parent.is_dir():
            raise UserError(f"folder {path.parent} does not exist")
        try:
            check_writable(path.parent)
        except ValueError as err:
            raise UserError(str(err)) from None
    try:
        check_sigma(args.sigma)
    except ValueError as err:
        raise UserError(f"--sigma: {err}") from None
    return image, out, labels, save


def _read(path: Path) -> tuple[Any, Any]:
    from napari_anystar.volume_io import read_volume

    try:
        return read_volume(path)
    except Exception as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UserError(f"cannot read {path}: {reason}") from None


def _segment(args: argparse.Namespace, image: Any, name: str) -> Any:
    """Labels of the mean over time (or frame ``--frame``), as ``anystar segment`` makes them."""
    import numpy as np

    from napari_anystar.analysis.timeseries import iter_projection
    from napari_anystar.model.predict import check_volume

    entry, settings, prob, nms = prepare_model(args)
    what = "mean over time" if args.frame is None else f"frame {args.frame}"
    try:
        volume = drive(iter_projection(image, args.frame), f"{name} {what}", unit="frame")
        check_volume(volume, scale=settings.scale)
        load_model(entry, settings)  # a model that cannot load: one clear message
        labels = segment_image(entry, volume, settings, args, prob, nms, f"{name} {what}")
    except ValueError as err:
        raise UserError(f"{name} ({what}): {err}") from None
    if not np.any(labels):
        raise UserError(f"segmenting the {what} of {name} found no objects; nothing written "
                        "(try a lower --prob-thresh or another --scale)")
    return labels


def run(args: argparse.Namespace) -> int:
    """Measure every object in every frame and write the CSV; UserError for what the user
    can fix (then nothing is written)."""
    from dataclasses import replace

    from napari_anystar.analysis.timeseries import check_inputs, iter_time_series, write_csv
    from napari_anystar.volume_io import write_labels

    image_path, out, labels_path, save = _check_args(args)
    image, meta = _read(image_path)
    try:
        check_inputs(tuple(image.shape))
    except ValueError as err:
        raise UserError(f"{image_path}: {err}") from None
    if labels_path is not None:
        labels = _read(labels_path)[0]
        try:
            check_inputs(tuple(image.shape), labels)
        except ValueError as err:
            raise UserError(f"{labels_path}: {err} ({image_path.name})") from None
    else:
        labels = _segment(args, image, image_path.name)
    try:
        ids, values = drive(iter_time_series(image, labels, args.sigma), "frames", unit="frame")
    except ValueError as err:
        raise UserError(f"{image_path}: {err}") from None
    try:
        write_csv(out, ids, values, overwrite=args.overwrite)
        if save is not None:
            write_labels(save, labels, replace(meta, shape=labels.shape), args.overwrite)
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from None
    smoothing = f"smoothed, sigma {args.sigma:g} frames" if args.sigma else "not smoothed"
    print(f"{ids.size} objects x {values.shape[1]} frames ({smoothing})", file=sys.stderr)
    print(f"{out}\t{ids.size} objects")
    if save is not None:
        print(f"{save}\tlabels")
    return 0
