"""``anystar segment`` for volumes larger than memory, and many volumes on several workers.

Used when an input or ``--out`` is a ``.zarr`` store, or ``--block-size``, ``--workers`` or
``--scheduler`` is given: each volume is labelled block by block
(:mod:`napari_anystar.model.blockwise`) into a zarr store, ``<stem>_labels.zarr`` in an
output folder. A store is written as a hidden ``.<name>.partial`` beside its destination and
renamed when complete; running the same command again after an interruption resumes it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from napari_anystar._cli.common import UserError, run_notes

#: Suffix of the label stores big-volume mode writes.
STORE_SUFFIX = ".zarr"


def add_options(parser: argparse.ArgumentParser) -> None:
    """The block-wise options of ``anystar segment``."""
    group = parser.add_argument_group(
        "large volumes and many volumes",
        "any of these, or a .zarr input or --out, labels each volume block by block into a "
        ".zarr store (memory bounded by the block size; an interrupted run resumes when the "
        "same command is run again)")
    group.add_argument("--block-size", type=int, nargs="+", metavar="N",
                       help="block core edge in input voxels: N or Z Y X (default: 128 voxels "
                       "after scaling)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local Dask worker processes, each loading the model once; 0 runs "
                       "in this process (default: one per 2 CPU cores when there is more "
                       "than one block or volume, else this process)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://host:8786 (its "
                       "workers must be able to import napari-anystar)")


def wanted(args: argparse.Namespace) -> bool:
    """Does this command line ask for block-wise segmentation?"""
    stores = [*args.inputs, args.out]
    return (args.block_size is not None or args.workers not in (None, 0)
            or args.scheduler is not None
            or any(str(p).rstrip("/\\").lower().endswith(STORE_SUFFIX) for p in stores))


def _stem(path: Path) -> str:
    from napari_anystar.volume_io import split_suffix

    return split_suffix(path)[0]


def output_paths(inputs: list[Path], out: str) -> list[Path]:
    """``out`` for one input (a ``.zarr`` name), else ``out/<stem>_labels.zarr`` each."""
    folder = Path(out)
    if out.rstrip("/\\").lower().endswith(STORE_SUFFIX):
        if len(inputs) > 1:
            raise UserError(f"--out {out} is a zarr store; several inputs need an output folder")
        return [folder]
    if len(inputs) == 1 and not folder.is_dir() and not out.endswith(("/", "\\")):
        raise UserError(f"--out {out}: block-wise labels are written as a zarr store; "
                        f"name a path ending in {STORE_SUFFIX} or a folder")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file; several inputs need an output folder")
    paths = [folder / f"{_stem(p)}_labels{STORE_SUFFIX}" for p in inputs]
    names = [p.name for p in paths]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"two inputs would both write {duplicate}; segment them separately")
    return paths


def partial_path(dst: Path) -> Path:
    """Where the store of ``dst`` is written until it is complete."""
    return dst.parent / f".{dst.name}.partial"


def _check_paths(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    from napari_anystar._cli.segment import check_outputs
    from napari_anystar.model.block_io import SOURCE_SUFFIXES

    for path in inputs:
        if not path.name.lower().endswith(SOURCE_SUFFIXES):
            raise UserError(f"{path.name}: unsupported file type (use "
                            f"{', '.join(SOURCE_SUFFIXES)})")
        if not path.exists():
            raise UserError(f"input {path} does not exist")
    check_outputs(inputs, outputs, overwrite)


def _block_size(args: argparse.Namespace) -> tuple[int, int, int] | None:
    if args.block_size is None:
        return None
    from napari_anystar.model.blocks import MIN_BLOCK_EDGE

    if len(args.block_size) not in (1, 3):
        raise UserError("--block-size takes one value or three (Z Y X)")
    if min(args.block_size) < MIN_BLOCK_EDGE:
        raise UserError(f"--block-size must be at least {MIN_BLOCK_EDGE} voxels per axis")
    return tuple(args.block_size * (3 if len(args.block_size) == 1 else 1))


def _workers(args: argparse.Namespace, inputs: list[Path],
             block_size: tuple[int, int, int] | None, scale: Any) -> int:
    """``--workers``, or when not given the automatic choice for these inputs' blocks (at
    the given scale; scale 1 stands in for an automatic one)."""
    if args.workers is not None or args.scheduler is not None:
        return args.workers or 0
    from napari_anystar.model.block_exec import auto_workers
    from napari_anystar.model.block_io import open_source
    from napari_anystar.model.blocks import plan_grid

    if len(inputs) > 1:
        return auto_workers(len(inputs))
    try:
        grid = plan_grid(open_source(inputs[0]).shape, scale or (1.0, 1.0, 1.0), block_size)
    except ValueError:  # reported when the volume is prepared
        return 0
    return auto_workers(len(grid))


def _finish(dst: Path, partial: Path) -> None:
    """Move a complete store to ``dst`` (replacing an old one, which --overwrite allowed)."""
    old = dst.parent / f".{dst.name}.old"
    if dst.exists():
        os.replace(dst, old)
    os.replace(partial, dst)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def run(args: argparse.Namespace) -> int:
    """Segment every input block-wise; UserError on anything the user can fix (a volume of
    several that fails is reported and skipped, exit status 1)."""
    from napari_anystar._cli.segment import drive, load_model, prepare_model
    from napari_anystar.model.block_exec import block_executor
    from napari_anystar.model.block_io import voxel_size
    from napari_anystar.model.blockwise import VolumeJob, segment_many

    inputs = [Path(p) for p in args.inputs]
    outputs = output_paths(inputs, args.out)
    _check_paths(inputs, outputs, args.overwrite)
    block_size = _block_size(args)
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    entry, settings, prob, nms = prepare_model(args)
    workers = _workers(args, inputs, block_size, settings.scale)
    if workers == 0 and args.scheduler is None:
        load_model(entry, settings)  # fail early: this process runs the network
    else:
        print(f"model: {entry.name} ({entry.path}); normalisation "
              f"{settings.norm.describe()}", file=sys.stderr)
    partials = [partial_path(dst) for dst in outputs]
    if args.overwrite:
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
    jobs = [VolumeJob(src, partial, voxel_size(src))
            for src, partial in zip(inputs, partials, strict=True)]
    try:
        with block_executor(workers, args.scheduler) as executor:
            results = drive(segment_many(entry, jobs, settings, (prob, nms), block_size,
                                         auto_scaled=args.scale == ["auto"], executor=executor,
                                         refine=args.refine, polarity=args.objects),
                            "blocks", unit="block")
    except ValueError as err:  # the executor could not start
        raise UserError(str(err)) from None
    except KeyboardInterrupt:
        started = [p for p in partials if p.exists()]
        if started:
            print("anystar segment: run the same command again to resume "
                  f"{', '.join(str(p) for p in started)}", file=sys.stderr)
        raise
    return _report(inputs, outputs, partials, results, args.objects)


def _report(inputs: list[Path], outputs: list[Path], partials: list[Path],
            results: list[Any], polarity: str) -> int:
    failed = []
    for src, dst, partial, result in zip(inputs, outputs, partials, results, strict=True):
        if isinstance(result, Exception):
            reason = (str(result).strip() or type(result).__name__).splitlines()[0]
            if len(inputs) == 1:
                raise UserError(f"{src}: {reason}")
            print(f"anystar segment: {src}: {reason} (skipped)", file=sys.stderr)
            failed.append(src.name)
            continue
        _finish(dst, partial)
        for note in run_notes(src.name, result, polarity):
            print(note, file=sys.stderr)
        if result.blocks_resumed:
            print(f"{src.name}: resumed ({result.blocks_resumed} of {result.n_blocks} blocks "
                  "were done)", file=sys.stderr)
        if result.clipped:
            print(f"{src.name}: warning: {result.clipped} object(s) larger than the blocks' "
                  "reach were clipped; use a larger --block-size", file=sys.stderr)
        print(f"{dst}\t{result.n_objects} objects")
    if failed:
        print(f"anystar segment: {len(inputs) - len(failed)} of {len(inputs)} volumes "
              f"segmented; {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
