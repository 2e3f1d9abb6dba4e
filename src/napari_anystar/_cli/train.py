"""``anystar train``: train or fine-tune a StarDist3D model on synthetic and/or real data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_anystar._cli.common import UserError

EPILOG = """examples:
  anystar train --generator as-mix --config lite --steps 6000 --seed 0 --out my-model
  anystar train --images imgs/ --labels masks/ --from anystar-mix --steps 500 --out tuned
  anystar train --generator as-mix --images imgs/ --labels masks/ --synthetic-fraction 0.5 \\
      --out mixed
  anystar train ... --resume      # continue an interrupted run in --out

Real pairs: X_image.tif with X_labels.tif (also .tiff/.nii/.nii.gz), or identical names in
the two folders. Configurations: paper (AnyStar paper), lite (about an hour on 2 CPU cores),
tiny (smoke tests only)."""


def register(subparsers) -> argparse.ArgumentParser:
    from napari_anystar.train.configs import CONFIGS

    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a StarDist3D model",
        description="Train a StarDist3D model on AnyStar synthetic data, on real image/label "
        "pairs, or on a mix; or fine-tune an existing model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR",
                   help="model folder to create (StarDist format + training.json)")
    data = p.add_argument_group("data")
    data.add_argument("--generator", metavar="NAME", help="synthetic generator, e.g. as-mix")
    data.add_argument("--images", type=Path, metavar="DIR", help="folder of real 3D images")
    data.add_argument("--labels", type=Path, metavar="DIR", help="folder of their label volumes")
    data.add_argument("--synthetic-fraction", type=float, metavar="F",
                      help="share of synthetic samples when mixing (default 0.5)")
    data.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                      help="share of real pairs held out for validation (default 0.15)")
    data.add_argument("--val-samples", type=int, metavar="N",
                      help="held-out synthetic validation volumes (default: per config)")
    data.add_argument("--pool-size", type=int, metavar="N",
                      help="synthetic samples kept in the training pool (default: per config)")
    data.add_argument("--pool-refresh", type=int, metavar="STEPS",
                      help="replace one pool sample every STEPS steps; 0 = never")
    data.add_argument("--fragment-ignore", type=int, metavar="VOXELS",
                      help="synthetic instances under VOXELS voxels are ignored in the targets "
                      "(default 100 when training from scratch; 0 = off)")
    data.add_argument("--zoom", type=float, nargs=2, metavar=("LOW", "HIGH"),
                      help="zoom range of the augmentation A(.) (default 0.4 1.4)")
    data.add_argument("--axial-blur", type=float, metavar="P",
                      help="probability of an extra blur along one axis, an elongated "
                      "point-spread function (default 0)")
    data.add_argument("--psf-blur", type=float, metavar="P",
                      help="probability of an isotropic point-spread-function blur of the "
                      "clean synthetic image, soft edges as in real microscopy (default 0)")
    data.add_argument("--fixed-crop", action="store_true",
                      help="A(.)'s first crop is a fixed window of the output size, as the "
                      "shipped model was trained (default: a random size between the output "
                      "size and the synthesis grid, as MONAI 1.1's defaults)")
    data.add_argument("--workers", type=int, default=1, metavar="N",
                      help="processes generating synthetic samples (default 1; 0 = in-line)")
    model = p.add_argument_group("model and optimisation")
    model.add_argument("--config", choices=tuple(CONFIGS), default="lite",
                       help="network configuration for training from scratch (default lite)")
    model.add_argument("--from", dest="base_model", metavar="MODEL",
                       help="fine-tune this model (registered name or model folder)")
    model.add_argument("--steps", type=int, metavar="N",
                       help="total training steps (default: per config; 1000 when fine-tuning)")
    model.add_argument("--batch-size", type=int, metavar="B", help="default: per config")
    model.add_argument("--steps-per-epoch", type=int, metavar="N",
                       help="validate and checkpoint every N steps")
    model.add_argument("--learning-rate", type=float, metavar="LR",
                       help="initial learning rate, decays linearly to 0 (default: per "
                       "config; a tenth of the base model's when fine-tuning)")
    model.add_argument("--patch-size", type=int, metavar="P",
                       help="cubic training patch edge in voxels (default: per config; 64)")
    model.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    model.add_argument("--no-thresholds", action="store_true",
                       help="skip probability/NMS threshold tuning at the end")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (same options)")
    return p


def _settings(args):
    from napari_anystar.synth import SynthSettings
    from napari_anystar.train import TrainSettings
    from napari_anystar.train.data import pair_folders

    if (args.images is None) != (args.labels is None):
        raise UserError("--images and --labels must be given together")
    if args.generator is None and args.images is None:
        raise UserError("no training data: give --generator and/or --images with --labels")
    synth = {}
    if args.zoom is not None:
        synth["zoom_range"] = tuple(args.zoom)
    if args.axial_blur is not None:
        synth["axial_blur"] = args.axial_blur
    if args.psf_blur is not None:
        synth["psf_blur"] = args.psf_blur
    if args.fixed_crop:
        synth["random_crop"] = False
    if synth and args.generator is None:
        raise UserError("--zoom, --axial-blur, --psf-blur and --fixed-crop need --generator")
    images, labels = [], []
    if args.images is not None:
        try:
            pairs = pair_folders(args.images, args.labels)
        except ValueError as err:
            raise UserError(str(err)) from None
        images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    return TrainSettings(
        out_dir=args.out,
        synth_settings=SynthSettings(**synth) if synth else None,
        fragment_ignore=args.fragment_ignore,
        config=args.config,
        base_model=args.base_model,
        generator=args.generator,
        images=images,
        labels=labels,
        synthetic_fraction=args.synthetic_fraction,
        steps=args.steps,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        patch_size=args.patch_size,
        seed=args.seed,
        resume=args.resume,
        val_samples=args.val_samples,
        val_fraction=args.val_fraction,
        pool_size=args.pool_size,
        pool_refresh=args.pool_refresh,
        workers=args.workers,
        optimize_thresholds=not args.no_thresholds,
        extra={"cli_args": {k: None if v is None else str(v) for k, v in vars(args).items()
                            if not k.startswith("_")}},
    )


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ log off stderr
    from tqdm import tqdm

    from napari_anystar.train import train

    settings = _settings(args)
    try:
        settings.validate()
    except ValueError as err:
        raise UserError(str(err)) from None
    run_ = train(settings)
    try:
        event = next(run_)  # everything that can be the user's fault fails before this
    except (ValueError, FileExistsError) as err:
        raise UserError(str(err)) from None
    bars: dict[str, tqdm] = {}

    def bar(kind: str, total: int, desc: str, initial: int = 0) -> tqdm:
        if kind not in bars:
            for other in bars.values():
                other.close()
            bars.clear()
            bars[kind] = tqdm(total=total, desc=desc, initial=initial, file=sys.stderr,
                              dynamic_ncols=True)
        return bars[kind]

    try:
        while True:
            if event.kind == "prepare" and event.total:
                b = bar("prepare", event.total, "synthetic samples")
                b.update(event.done - b.n)
                if event.done == event.total:
                    bars.pop("prepare").close()
            elif event.kind in ("step", "epoch"):
                b = bar("train", event.total_steps, "training", initial=event.step - 1)
                if event.kind == "step":
                    b.update(event.step - b.n)
                    b.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
                else:
                    b.set_postfix(loss=f"{event.loss:.4f}", val_loss=f"{event.val_loss:.4f}")
            elif event.kind == "thresholds":
                b = bar("thresholds", event.total, "tuning thresholds")
                b.update(event.done - b.n)
                if event.done == event.total:
                    bars.pop("thresholds").close()
            try:
                event = next(run_)
            except StopIteration as stop:
                folder = stop.value
                break
    except KeyboardInterrupt:
        run_.close()
        for b in bars.values():
            b.close()
        if (Path(args.out) / "config.json").is_file():
            print(f"anystar train: interrupted; the last checkpoint in {args.out} is a usable "
                  "model; continue with --resume", file=sys.stderr)
        else:
            print("anystar train: interrupted before the first checkpoint; nothing was saved",
                  file=sys.stderr)
        return 130
    for b in bars.values():
        b.close()
    print(folder)
    return 0
