"""Train recipe variants under one fixed budget and score them side by side.

Every variant trains the ``lite`` network from scratch (or, with ``--from MODEL``, fine-tunes
that model) with the same steps, seed, batch and learning-rate schedule; only its recipe
differs (issue 11's fixes alone and together, a faster pool refresh, and three
appearance/size ideas; and two with A(.)'s first crop as the November model was trained).
A short budget from scratch ranks nothing (at 1,000 steps no variant
learns distances better than a constant guess); fine-tuning the shipped weights for the same
few hundred steps compares recipes on a network that already segments. Each trained model
is then scored on:

* ``synthetic``: clean held-out AS-Mix volumes (no A(.), 128^3, so StarDist's border rule
  drops almost nothing), the model's own thresholds, mean accuracy over IoU 0.1-0.9;
* ``dist_mae`` / ``dist_mae_guess``: validation distance MAE of the last epoch and of a
  constant guess (``train.health``);
* ``real_default``: real volumes (``--data``) at raw voxels with the model's own
  (synthetic-only) thresholds (the scale policy is measured on the final model only, with
  ``bench_real.py``: its Suggest rounds would dominate the cost here);
* ``real_tuned``: the same network outputs with thresholds tuned on the real folder;
* ``real_auto_refined``: real volumes as a new user meets them: the model's own thresholds,
  the default scale policy (``object_size.auto_scale``) and refined outlines.

Variants trained without the normalisation fix record none, so they are scored with the
earlier prediction default (``LEGACY``), as before; ``current`` is also scored with
``ANYSTAR`` (``current_norm_fix``): the normalisation fix alone needs no retraining.

Usage: python benchmarks/ablate.py --out RUNS_DIR [--steps 1000] [--from MODEL]
       [--learning-rate LR] [--data DIR] [--train-only] [--eval-only] [--variants NAME ...]
       [--score NAME=MODEL_DIR ...]
Prints one table (stderr) and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from napari_anystar._generators import result_of
from napari_anystar.train.recipe import FRAGMENT_IGNORE_VOXELS

#: fragments as ignore, set explicitly: fine-tunes (``--from``) leave it off by default
FIXES = {"fragment_ignore": FRAGMENT_IGNORE_VOXELS}
#: name -> (TrainSettings overrides, SynthSettings overrides)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "current": ({"fragment_ignore": 0, "normalize": False, "pool_refresh": 20},
                {"aligned_zoom": False}),
    "aligned": ({"fragment_ignore": 0, "normalize": False, "pool_refresh": 20}, {}),
    "fragments": ({**FIXES, "normalize": False, "pool_refresh": 20}, {"aligned_zoom": False}),
    "fixes": ({**FIXES, "pool_refresh": 20}, {}),
    "fixes_refresh": ({**FIXES, "pool_refresh": 2}, {}),
    "fixes_refresh_axial": ({**FIXES, "pool_refresh": 2}, {"axial_blur": 0.3}),
    "fixes_refresh_small": ({**FIXES, "pool_refresh": 2}, {"zoom_range": (0.4, 0.9)}),
    "fixes_refresh_psf": ({**FIXES, "pool_refresh": 2}, {"psf_blur": 0.8}),
    # the first crop of A(.) as the November model was trained (fixed size^3, before 2957b69)
    "current_fixed_crop": ({"fragment_ignore": 0, "normalize": False, "pool_refresh": 20},
                           {"aligned_zoom": False, "random_crop": False}),
    "fixes_fixed_crop": ({**FIXES, "pool_refresh": 20}, {"random_crop": False}),
}
SYNTH_SEEDS = 9300
SYNTH_VOLUMES = 6
POOL_SIZE = 64
TUNE_MIN_PROB = 0.2


def train_variant(name: str, out: Path, steps: int, seed: int, base_model: str | None = None,
                  learning_rate: float | None = None) -> Path:
    from napari_anystar.synth import SynthSettings
    from napari_anystar.train import TrainSettings, train

    train_kw, synth_kw = VARIANTS[name]
    folder = out / name
    if (folder / "training.json").is_file() and \
            json.loads((folder / "training.json").read_text())["status"] == "finished":
        return folder
    settings = TrainSettings(
        out_dir=folder, config="lite", generator="as-mix", steps=steps, seed=seed,
        steps_per_epoch=min(200, steps), val_samples=8, pool_size=POOL_SIZE, workers=1,
        base_model=base_model, learning_rate=learning_rate,
        resume=folder.exists(), synth_settings=SynthSettings(**synth_kw),
        optimize_thresholds=False, **train_kw,
    )
    start = time.perf_counter()
    for event in train(settings):
        if event.kind == "epoch":
            print(f"{name}: step {event.step} val_loss {event.val_loss:.4f}", file=sys.stderr,
                  flush=True)
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return folder


def synthetic_score(model, norm, prob: float, nms: float) -> float:
    from napari_anystar.analysis import pooled_scores
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import PredictSettings, predict_network
    from napari_anystar.synth import SynthSettings, generate

    settings = SynthSettings(size=128, augment=False)
    truth, predicted = [], []
    for j in range(SYNTH_VOLUMES):
        sample = generate("as-mix", SYNTH_SEEDS + j, settings)
        output = result_of(predict_network(model, sample.image, PredictSettings(norm=norm)))
        truth.append(sample.labels.astype(np.int32))
        predicted.append(InstanceSolver(output, model).labels(prob, nms))
    return pooled_scores(truth, predicted).mean("accuracy")


def real_scores(model, norm, prob: float, nms: float, pairs) -> dict:
    """Raw voxels (where the default scale policy starts), the model's own thresholds and
    thresholds tuned on the folder (probabilities from :data:`TUNE_MIN_PROB`, and none that
    keeps more than ``MAX_CANDIDATE_SHARE`` of the grid points: they only make a weak
    variant's NMS take minutes); and the new user's row (own thresholds, *auto* scale,
    refined outlines)."""
    from bench_real import auto_scale_result
    from napari_anystar.analysis import pooled_scores, tune_thresholds_on_outputs
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import PredictSettings, predict_network
    from napari_anystar.train.thresholds import candidate_floor

    truth = [labels for _, _, labels in pairs]
    solvers = [InstanceSolver(result_of(predict_network(model, image, PredictSettings(norm=norm))),
                              model) for _, image, _ in pairs]
    own = pooled_scores(truth, [s.labels(prob, nms) for s in solvers])
    tuned = result_of(tune_thresholds_on_outputs(
        [s.labels for s in solvers], truth,
        min_prob=max(TUNE_MIN_PROB, candidate_floor(solvers))))
    auto, *_ = auto_scale_result(model, prob, nms, pairs, refine=True)
    return {"real_auto_refined": auto["mean_accuracy"],
            "real_default": round(own.mean("accuracy"), 4),
            "real_default_f1_at_0.5": round(own.f1[4], 4),
            "real_tuned": round(tuned.objective, 4),
            "real_tuned_thresholds": [round(tuned.prob, 3), tuned.nms]}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def evaluate(folder: Path, pairs, norm_override=None) -> dict:
    from napari_anystar.model.registry import load_model, resolve_model

    model = load_model(resolve_model(str(folder)))
    norm = norm_override or model.anystar_normalization
    own_norm = model.anystar_normalization
    model.anystar_normalization = norm  # also for the default scale policy's rounds
    try:
        row = _scores(model, folder, norm, pairs)
    finally:
        model.anystar_normalization = own_norm  # the loaded model is cached
    return row


def _scores(model, folder: Path, norm, pairs) -> dict:
    from napari_anystar.train.thresholds import recipe_thresholds

    chosen = result_of(recipe_thresholds(model, folder))  # as training chooses them
    prob, nms = chosen["prob"], chosen["nms"]
    last = json.loads((folder / "training.json").read_text())["epochs"][-1]
    row = {"prob": round(prob, 3), "nms": nms, "norm": norm.describe(),
           # runs from before the training-health figures have no distance MAE
           "dist_mae": _rounded(last.get("val_dist_mae")),
           "dist_mae_guess": _rounded(last.get("val_dist_mae_constant_guess")),
           "synthetic": round(synthetic_score(model, norm, prob, nms), 4)}
    if pairs:
        row.update(real_scores(model, norm, prob, nms, pairs))
    return row


def cached_row(folder: Path, file_name: str, compute) -> dict:
    """A variant's scores, computed once and kept in its folder (reruns only assemble)."""
    path = folder / file_name
    if path.is_file():
        return json.loads(path.read_text())
    row = compute()
    path.write_text(json.dumps(row))
    print(json.dumps({folder.name: row}), file=sys.stderr, flush=True)
    return row


def print_table(rows: dict[str, dict]) -> None:
    cols = ("synthetic", "dist_mae", "dist_mae_guess", "real_default", "real_tuned",
            "real_auto_refined")
    print("| variant | " + " | ".join(cols) + " |", file=sys.stderr)
    print("|---" * (len(cols) + 1) + "|", file=sys.stderr)
    for name, row in rows.items():
        cells = ("-" if row.get(c) is None else str(row[c]) for c in cols)
        print(f"| {name} | " + " | ".join(cells) + " |", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the variants' models")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from", dest="base_model", default=None, metavar="MODEL",
                    help="fine-tune this model (name or folder) instead of training from scratch")
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="initial learning rate (default: the training default)")
    ap.add_argument("--data", type=Path, help="real *_image.tif/*_labels.tif folder (optional)")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=tuple(VARIANTS))
    ap.add_argument("--score", nargs="+", default=(), metavar="NAME=DIR",
                    help="also score these trained model folders (e.g. the full-length run)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)

    for name in args.variants if not args.eval_only else ():
        train_variant(name, args.out, args.steps, args.seed, args.base_model,
                      args.learning_rate)
    if args.train_only:
        return 0
    from bench_real import read_pairs
    from napari_anystar.normalization import ANYSTAR

    pairs = read_pairs(args.data) if args.data else []
    rows = {}
    for name in args.variants:
        rows[name] = cached_row(args.out / name, "ablation.json",
                                lambda n=name: evaluate(args.out / n, pairs))
        if name == "current":
            rows["current_norm_fix"] = cached_row(
                args.out / name, "ablation_norm_fix.json",
                lambda n=name: evaluate(args.out / n, pairs, ANYSTAR))
    for item in args.score:
        name, _, folder = item.partition("=")
        rows[name] = cached_row(Path(folder), "ablation.json",
                                lambda f=folder: evaluate(Path(f), pairs))
    print_table(rows)
    trained = None if args.eval_only else {"steps": args.steps, "seed": args.seed,
                                           "from": args.base_model}
    print(json.dumps({"trained": trained, "variants": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
