"""``anystar segment``: label volumes for .tif/.tiff and .nii/.nii.gz images (block-wise
into .zarr stores for large volumes: :mod:`._cli.segment_big`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_anystar._cli import segment_big
from napari_anystar._cli.common import UserError, run_notes
from napari_anystar._generators import mapped
from napari_anystar.volume_io import (
    SUPPORTED_SUFFIXES,
    check_writable,
    split_suffix,
    volume_format,
)

#: tqdm unit of each stage of the pipeline core's progress
STAGE_UNITS = {"size": "round", "tiles": "tile"}

__all__ = [
    "add_model_options",
    "check_outputs",
    "drive",
    "load_model",
    "output_paths",
    "prepare_model",
    "register",
    "run",
    "segment_image",
]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``segment`` sub-command."""
    parser = subparsers.add_parser(
        "segment",
        help="segment 3D volumes with a StarDist3D (AnyStar) model",
        description=(
            "Segment star-convex objects in 3D volumes (.tif/.tiff, .nii/.nii.gz). Writes one "
            "label volume per input with the input's shape (NIfTI keeps the input's affine). "
            "Volumes larger than memory (.zarr, or any input with --block-size, --workers or "
            "--scheduler) are labelled block by block into .zarr stores."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image volume(s)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="output file for one input, or a folder (one <name>_labels file per input)",
    )
    add_model_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segment_big.add_options(parser)
    return parser


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The segmentation options (model, thresholds, scale, tiles, normalisation, device) that
    :func:`prepare_model` reads; shared with ``anystar timeseries``."""
    from napari_anystar.model.object_size import (
        DEFAULT_SCALE_POLICY,
        FALLBACK_SCALE,
        TRAINING_DIAMETER,
    )
    from napari_anystar.model.polarity import DEFAULT_POLARITY, POLARITIES
    from napari_anystar.model.predict import DEFAULT_DEVICE, DEVICES
    from napari_anystar.model.refine import DEFAULT_REFINE

    fallback = " ".join(f"{s:g}" for s in FALLBACK_SCALE)
    parser.add_argument(
        "--model", metavar="NAME_OR_DIR", help="model name (see 'anystar models') or folder"
    )
    parser.add_argument(
        "--prob-thresh", type=float, metavar="P", help="probability threshold (default: model's)"
    )
    parser.add_argument(
        "--nms-thresh", type=float, metavar="N", help="NMS overlap threshold (default: model's)"
    )
    parser.add_argument(
        "--scale",
        nargs="+",
        default=[DEFAULT_SCALE_POLICY],
        metavar="S",
        help=f"rescale before the network so objects are ~{TRAINING_DIAMETER:g} voxels across "
        "(the training size): S or Z Y X, or "
        "'auto' to measure the objects the network finds from raw voxels and rescale them to "
        f"its training size (a volume where it finds no object keeps {fallback}, with a warning) "
        f"(default: {DEFAULT_SCALE_POLICY})",
    )
    parser.add_argument(
        "--n-tiles", type=int, nargs=3, metavar=("Z", "Y", "X"), help="tiles per axis"
    )
    parser.add_argument(
        "--norm",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="intensity normalisation: these percentiles map to 0 and 1 (default: the model's "
        "recorded normalisation, see 'anystar models')",
    )
    parser.add_argument(
        "--norm-clip",
        action=argparse.BooleanOptionalAction,
        help="clip normalised intensities to [0, 1] (default: as the model's normalisation)",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default=DEFAULT_DEVICE,
        help="where to run (default: %(default)s)"
    )
    parser.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_REFINE,
        help="redraw each object's outline where the image puts its edge (half-way between "
        "the object's intensity and the background around it); --no-refine keeps StarDist's "
        "star-convex shapes (default: %(default)s)",
    )
    parser.add_argument(
        "--objects", choices=POLARITIES, default=DEFAULT_POLARITY,
        help="bright: objects brighter than their surroundings (fluorescence); dark: darker "
        "(e.g. micro-CT), the volume is segmented negated; auto: segment as given and, if the "
        "objects found are darker than their surroundings, again negated "
        "(default: %(default)s)",
    )


def output_paths(inputs: list[Path], out: str) -> list[Path]:
    """Where each input's labels go: ``out`` itself for one input, else ``out/<stem>_labels``.

    For one input, ``out`` is a folder if it exists as one or ends with a path separator.
    """
    folder = Path(out)
    if len(inputs) == 1 and not folder.is_dir() and not out.endswith(("/", "\\")):
        try:
            volume_format(folder)
        except ValueError:
            supported = ", ".join(SUPPORTED_SUFFIXES)
            raise UserError(f"--out {out}: name a folder or a file ending in {supported}") from None
        return [folder]
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; several inputs need an output folder")
    paths = []
    for path in inputs:
        stem, suffix = split_suffix(path)
        paths.append(folder / f"{stem}_labels{suffix.lower()}")
    names = [p.name for p in paths]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"two inputs would both write {duplicate}; segment them separately")
    return paths


def _check_paths(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    for path in inputs:
        try:
            volume_format(path)
        except ValueError as err:
            raise UserError(str(err)) from None
        if not path.is_file():
            raise UserError(f"input {path} does not exist")
    check_outputs(inputs, outputs, overwrite)


def check_outputs(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    """UserError if an output would replace its input, exists without ``overwrite``, or
    lies in a folder that cannot be written (checked before any work)."""
    for src, dst in zip(inputs, outputs, strict=True):
        if dst.exists() and dst.resolve() == src.resolve():
            raise UserError(f"output {dst} would replace its input image")
        if dst.exists() and not overwrite:
            raise UserError(f"output {dst} already exists (use --overwrite to replace it)")
    for folder in dict.fromkeys(dst.parent for dst in outputs):
        try:
            check_writable(folder)
        except ValueError as err:  # one output: name the file the user asked for
            raise UserError(f"{outputs[0]}: {err}" if len(outputs) == 1 else str(err)) from None


def _settings(args: argparse.Namespace, entry: Any) -> Any:
    """The prediction settings (normalisation resolved: the model's own unless overridden)."""
    from napari_anystar.model.model_settings import model_normalization
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.normalization import Normalization

    kwargs: dict[str, Any] = {"device": args.device}
    if args.scale != ["auto"]:
        if len(args.scale) not in (1, 3):
            raise UserError("--scale takes one value, three (Z Y X) or 'auto'")
        try:
            scale = tuple(float(s) for s in args.scale)
        except ValueError:
            given = " ".join(args.scale)
            raise UserError(f"--scale takes numbers or 'auto', got {given}") from None
        kwargs["scale"] = scale * (3 if len(scale) == 1 else 1)
    if args.n_tiles is not None:
        kwargs["n_tiles"] = tuple(args.n_tiles)
    try:
        norm = model_normalization(entry.path)
    except ValueError as err:
        raise UserError(str(err)) from None
    low, high = args.norm if args.norm is not None else (norm.low, norm.high)
    clip = args.norm_clip if args.norm_clip is not None else norm.clip
    kwargs["norm"] = Normalization(float(low), float(high), bool(clip))
    for flag, value in (("--prob-thresh", args.prob_thresh), ("--nms-thresh", args.nms_thresh)):
        if value is not None and not 0 < value < 1:
            raise UserError(f"{flag} must be between 0 and 1, got {value:g}")
    try:
        settings = PredictSettings(**kwargs)
        settings.validate()
    except ValueError as err:
        raise UserError(str(err)) from None
    return settings


def _model_entry(name_or_dir: str | None) -> Any:
    from napari_anystar.model import registry

    if name_or_dir is None:
        entry = registry.default_model()
        if entry is None:
            raise UserError(registry.NO_MODELS_MESSAGE)
        return entry
    try:
        return registry.resolve_model(name_or_dir)
    except registry.InvalidModelError as err:
        raise UserError(str(err)) from None


class ModelLoadError(UserError):
    """The model cannot be loaded: no volume can be segmented."""


def load_model(entry: Any, settings: Any) -> Any:
    """The model of ``entry`` (ModelLoadError if it cannot be loaded); says which on stderr."""
    from napari_anystar.model import registry

    try:
        model = registry.load_model(entry)
    except registry.InvalidModelError as err:
        raise ModelLoadError(str(err)) from None
    print(f"model: {entry.name} ({entry.path}); normalisation {settings.norm.describe()}",
          file=sys.stderr)
    return model


def drive(job: Generator[tuple[int, int], None, Any], desc: str, unit: str = "tile") -> Any:
    """Run a (done, total) generator with a tqdm bar on stderr; its result."""
    return drive_stages(mapped(job, lambda progress: (unit, *progress)), desc,
                        units={unit: unit})


def drive_stages(job: Generator[tuple, None, Any], desc: str,
                 units: dict[str, str] = STAGE_UNITS) -> Any:
    """Run a ``(stage, done, total)`` generator with a tqdm bar per stage on stderr (the
    pipeline core's ``"size"`` rounds of the auto scale, then ``"tiles"``); its result."""
    from tqdm import tqdm

    bar, stage = None, None
    try:
        while True:
            now, done, total = next(job)
            if now != stage:
                if bar is not None:
                    bar.close()
                stage = now
                label = desc if len(units) == 1 else f"{desc} {now}"
                bar = tqdm(desc=label, total=total, unit=units.get(now, now), file=sys.stderr,
                           dynamic_ncols=True)
            bar.total = total
            bar.update(done - bar.n)
    except StopIteration as stop:
        return stop.value
    finally:
        job.close()
        if bar is not None:
            bar.close()


def prepare_model(args: argparse.Namespace) -> tuple[Any, Any, float, float]:
    """(model entry, prediction settings, probability and NMS thresholds) from the options
    :func:`add_model_options` adds; UserError for a bad model or option."""
    from napari_anystar.model.registry import model_thresholds

    entry = _model_entry(args.model)
    settings = _settings(args, entry)
    prob, nms = model_thresholds(entry)
    prob = args.prob_thresh if args.prob_thresh is not None else prob
    nms = args.nms_thresh if args.nms_thresh is not None else nms
    return entry, settings, prob, nms


def segment_image(
    entry: Any, image: Any, settings: Any, args: argparse.Namespace, prob: float, nms: float,
    name: str,
) -> Any:
    """Labels of one checked volume through the pipeline core the Segment widget uses
    (``model.segmenter.network_job``: the auto scale first if ``--scale auto``), with progress
    on stderr; ValueError from the pipeline passes through."""
    from napari_anystar.model.cache import PredictionCache
    from napari_anystar.model.segmenter import network_job

    job = network_job(entry, image, settings, (prob, nms), PredictionCache(max_entries=1),
                      auto_scaled=args.scale == ["auto"], refine=args.refine,
                      polarity=args.objects)
    result = drive_stages(job, name)
    for note in run_notes(name, result, args.objects):
        print(note, file=sys.stderr)
    return result.labels


def run(args: argparse.Namespace) -> int:
    """Segment every input and write its labels; UserError on anything the user can fix.

    With several inputs, a volume that cannot be read, segmented or written is reported and
    skipped; the others are written and the exit status is 1 with a summary line.
    """
    if segment_big.wanted(args):
        return segment_big.run(args)
    inputs = [Path(p) for p in args.inputs]
    outputs = output_paths(inputs, args.out)
    _check_paths(inputs, outputs, args.overwrite)
    entry, settings, prob, nms = prepare_model(args)
    model: list[Any] = []  # loaded once, after the first input passed its checks
    failed = []
    for src, dst in zip(inputs, outputs, strict=True):
        try:
            n_objects = _segment_file(src, dst, model, entry, settings, args, prob, nms)
        except UserError as err:
            if len(inputs) == 1 or isinstance(err, ModelLoadError):
                raise
            print(f"anystar segment: {err} (skipped)", file=sys.stderr)
            failed.append(src.name)
            continue
        print(f"{dst}\t{n_objects} objects")
    if failed:
        print(f"anystar segment: {len(inputs) - len(failed)} of {len(inputs)} volumes "
              f"segmented; {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _segment_file(src: Path, dst: Path, model: list[Any], entry: Any, settings: Any,
                  args: argparse.Namespace, prob: float, nms: float) -> int:
    """Read, segment and write one volume; its number of objects. ``model`` holds the loaded
    model once there is one (a model that fails to load ends the whole run)."""
    import numpy as np

    from napari_anystar.model.predict import check_volume
    from napari_anystar.volume_io import read_volume, write_labels

    try:
        image, meta = read_volume(src)
    except Exception as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise UserError(f"cannot read {src}: {reason}") from None
    try:
        check_volume(image, scale=settings.scale)
    except ValueError as err:
        raise UserError(f"{src}: {err}") from None
    if not model:
        model.append(load_model(entry, settings))
    try:
        labels = segment_image(entry, image, settings, args, prob, nms, src.name)
    except ValueError as err:
        raise UserError(f"{src}: {err}") from None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_labels(dst, labels, meta, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        raise UserError(str(err)) from None
    except OSError as err:  # its own text may name the temporary file: name the output
        reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot write {dst}: {reason}") from None
    return int(np.count_nonzero(np.unique(labels)))
