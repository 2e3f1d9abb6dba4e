"""Zero-shot accuracy on real volumes with reference labels, against a classical baseline.

Reads ``*_image.tif`` / ``*_labels.tif`` pairs from ``--data`` and scores, with the AnyStar
paper's protocol (``stardist.matching`` at IoU 0.1 ... 0.9, true/false positives pooled over
the folder, then averaged over the IoU thresholds: ``mean_accuracy`` etc.):

* ``default``: the model as a new user meets it in the Segment widget and ``anystar
  segment``: its shipped ``thresholds.json``, its own normalisation, the default scale
  policy per volume (``model.object_size.auto_scale``: *Suggest* from raw voxels, no labels
  used; the fallback scale where it finds too few objects, listed in ``fallback_volumes``)
  and outlines refined to the image (``model.refine``; ``default_unrefined`` without);
* ``default_raw_voxels``: the same at scale 1 (a TIFF opened without voxel size);
  ``voxel_size_scale``: at the scale from the voxel size (voxel size / X voxel size:
  isotropic voxels; the widget's earlier default);
Every row but ``default_unrefined`` refines outlines unless ``--no-refine`` is given. The
untuned rows give ``mean_accuracy_ci95``: a bootstrap interval over the volumes
(``analysis.bootstrap``; ``compare_real.py`` compares two models on the same volumes).

* ``tuned``: probability/NMS thresholds and the scale chosen on this folder (scales
  ``factor * (z_ratio, 1, 1)`` over ``--scale-factors`` x ``--z-ratios``; an upper bound for
  what slider and scale tuning can reach), ``tuned_per_scale`` the best thresholds per scale;
  ``tuned_at_auto``: thresholds chosen on this folder at the ``default`` row's own scales
  and polarities per volume (an upper bound for the sliders after a default Run);
* ``voronoi_otsu``: Voronoi-Otsu labelling (Gaussian blur, local-maxima seeds, Otsu mask,
  seeded watershed) with its two sigmas chosen on this folder.

``--resample F`` first resamples every volume by ``F`` per axis (images linearly, labels by
nearest neighbour): the same specimens as a microscope sampling ``F`` times finer would record
them (the voxel size is divided by ``F``), to check that the rows do not depend on the
sampling. ``--z-slices N`` keeps only the middle ``N`` slices of each volume (after any
resampling): a thinner stack of the same specimens, whose top and bottom cut nuclei that stay
labelled.

Usage: python benchmarks/bench_real.py --data /work/shared/data/bbbc050-dev
       --voxel-size 1.75 0.8 0.8 [--model as-mix-lite] [--resample 2] [--z-slices 24]
Prints one JSON object on the last line.
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

SCALE_FACTORS = (0.5, 0.625, 0.75, 1.0)
SPOT_SIGMAS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
OUTLINE_SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def read_pairs(data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) for every ``X_image.tif`` with an ``X_labels.tif`` beside it."""
    import tifffile

    pairs = []
    for image_path in sorted(data.glob("*_image.tif")):
        label_path = image_path.with_name(image_path.name.replace("_image.tif", "_labels.tif"))
        if label_path.is_file():
            image = tifffile.imread(image_path).astype(np.float32)
            labels = tifffile.imread(label_path).astype(np.int32)
            if image.ndim != 3 or image.shape != labels.shape:
                raise SystemExit(f"{image_path.name}: need matching 3D image and labels, got "
                                 f"{image.shape} and {labels.shape}")
            pairs.append((image_path.name[: -len("_image.tif")], image, labels))
    if not pairs:
        raise SystemExit(f"no *_image.tif / *_labels.tif pairs in {data}")
    return pairs


def resampled(pairs, factor: float):
    """``pairs`` with images zoomed by ``factor`` (linear) and labels (nearest neighbour)."""
    if factor == 1:
        return pairs
    from scipy import ndimage as ndi

    return [(name, ndi.zoom(image, factor, order=1), ndi.zoom(labels, factor, order=0))
            for name, image, labels in pairs]


def z_cropped(pairs, n_slices: int | None):
    """``pairs`` cut to their middle ``n_slices`` slices (all of a volume that has fewer)."""
    if n_slices is None:
        return pairs
    cropped = []
    for name, image, labels in pairs:
        z0 = max(0, (image.shape[0] - n_slices) // 2)
        cropped.append((name, image[z0:z0 + n_slices], labels[z0:z0 + n_slices]))
    return cropped


def network_outputs(model, images, scale, invert=False):
    """Network outputs of all volumes at ``scale`` (auto tiles; negated with ``invert``) and
    the seconds it took."""
    from napari_anystar.model.predict import PredictSettings, predict_network

    start = time.perf_counter()
    settings = PredictSettings(scale=scale, invert=invert)
    outputs = [result_of(predict_network(model, image, settings)) for image in images]
    return outputs, time.perf_counter() - start


def labels_functions(solvers, refiners):
    """``f(prob, nms)`` per volume: the solver's labels, refined where a refiner is given."""
    return [s.labels if r is None else (lambda p, n, s=s, r=r: r(s.labels(p, n)))
            for s, r in zip(solvers, refiners, strict=True)]


def refiners_for(model, images, scales, refine: bool):
    """An outline refiner per volume at its scale (None each without ``refine``)."""
    from napari_anystar.model.object_size import training_diameter
    from napari_anystar.model.refine import OutlineRefiner

    if not refine:
        return [None] * len(images)
    return [OutlineRefiner.at_scale(image, scale, training_diameter(model))
            for image, scale in zip(images, scales, strict=True)]


def untuned_result(prob, nms, pairs, solvers, refiners):
    """Scores at the model's own thresholds, with an F1 at IoU 0.5 per volume."""
    from napari_anystar.analysis.bootstrap import accuracy_interval
    from napari_anystar.analysis.scores import IOU_THRESHOLDS, match_counts, scores_from_counts

    truth = [labels for _, _, labels in pairs]
    predicted = [f(prob, nms) for f in labels_functions(solvers, refiners)]
    counts = match_counts(truth, predicted)  # the volumes are matched once
    at_half = IOU_THRESHOLDS.index(0.5)
    per_volume = {name: round(scores_from_counts(c[None, at_half:at_half + 1], (0.5,)).f1[0], 3)
                  for (name, _, _), c in zip(pairs, counts, strict=True)}
    interval = accuracy_interval(counts)
    return {"prob": prob, "nms": nms, **scores_from_counts(counts).to_dict(),
            "mean_accuracy_ci95": [round(interval.low, 4), round(interval.high, 4)],
            "per_volume_f1_at_iou_0.5": per_volume}


def auto_scale_outputs(model, prob, nms, pairs, refine):
    """The default policies' choices per volume (``auto_scale`` and the *auto* object
    polarity, as ``segmenter.network_job`` makes them): the scales, the volumes that fell
    back, those segmented negated, and a solver and a refiner (None without ``refine``) per
    volume as chosen."""
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.object_size import auto_scale, training_diameter
    from napari_anystar.model.polarity import DEFAULT_POLARITY, choose_polarity, object_contrast
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.model.refine import OutlineRefiner

    def run(image, invert):
        settings = PredictSettings(invert=invert)
        choice = result_of(auto_scale(model, image, settings, prob))
        (output,), _ = network_outputs(model, [image], choice.scale, invert)
        refiner = OutlineRefiner.at_scale(image, choice.scale, training_diameter(model), invert)
        yield from ()
        return choice, InstanceSolver(output, model), refiner, invert

    def contrast(ran):
        _, solver, refiner, _ = ran
        return object_contrast(refiner.smoothed, solver.labels(prob, nms), refiner.diameter)

    scales, fallbacks, negated, solvers, refiners = {}, [], [], [], []
    for name, image, _ in pairs:
        choice, solver, refiner, invert = result_of(choose_polarity(
            lambda invert, image=image: run(image, invert), contrast, DEFAULT_POLARITY))
        scales[name] = list(choice.scale)
        fallbacks += [name] if choice.fell_back else []
        negated += [name] if invert else []
        solvers.append(solver)
        refiners.append(refiner if refine else None)
    return scales, fallbacks, negated, solvers, refiners


def tuned_thresholds(solvers, refiners, pairs):
    """The probability/NMS thresholds (a ``tune_thresholds_on_outputs`` choice) that score
    best on ``pairs`` with these solvers' labels, refined where a refiner is given."""
    from napari_anystar.analysis import tune_thresholds_on_outputs

    return result_of(tune_thresholds_on_outputs(
        labels_functions(solvers, refiners), [labels for _, _, labels in pairs],
        min_prob=min(solver.output.min_prob for solver in solvers)))


def auto_scale_result(model, prob, nms, pairs, refine, tune=False):
    """Shipped thresholds at the default policies' choices per volume (*auto* scale and
    object polarity), with and without refined outlines; with ``tune``, also the thresholds
    that score best on ``pairs`` at those choices (else None)."""
    scales, fallbacks, negated, solvers, refiners = auto_scale_outputs(model, prob, nms, pairs,
                                                                       refine)
    tuned = None
    if tune:
        choice = tuned_thresholds(solvers, refiners, pairs)
        tuned = {"prob": round(choice.prob, 4), "nms": choice.nms, "refined": refine,
                 **choice.scores.to_dict()}
    return {**untuned_result(prob, nms, pairs, solvers, refiners), "refined": refine,
            "scale_per_volume": scales,
            "median_scale": [float(v) for v in np.median(list(scales.values()), axis=0)],
            "fallback_volumes": fallbacks, "negated_volumes": negated}, untuned_result(
                prob, nms, pairs, solvers, [None] * len(solvers)), tuned


def evaluate_model(model, prob, nms, pairs, scales, untuned_scales, tune=True, refine=True):
    """(untuned results by scale, best tuned result or None, per-scale summaries).

    ``scales`` are tried with threshold tuning (unless ``tune`` is false); at those in
    ``untuned_scales`` the model's own thresholds are scored too.
    """
    from napari_anystar.model.instances import InstanceSolver

    images = [image for _, image, _ in pairs]
    untuned, best, per_scale = {}, None, []
    for scale in scales:
        outputs, seconds = network_outputs(model, images, scale)
        solvers = [InstanceSolver(out, model) for out in outputs]
        refiners = refiners_for(model, images, [scale] * len(images), refine)
        if scale in untuned_scales:
            untuned[scale] = {**untuned_result(prob, nms, pairs, solvers, refiners),
                              "scale": list(scale)}
        if not tune:
            continue
        choice = tuned_thresholds(solvers, refiners, pairs)
        summary = {"scale": list(scale), "network_s": round(seconds, 2),
                   "prob": round(choice.prob, 4), "nms": choice.nms,
                   "mean_accuracy": round(choice.objective, 4)}
        per_scale.append(summary)
        print(json.dumps(summary), file=sys.stderr, flush=True)
        if best is None or choice.objective > best[0]:
            best = (choice.objective, {"prob": round(choice.prob, 4), "nms": choice.nms,
                                       "scale": list(scale), **choice.scores.to_dict()})
    return untuned, best and best[1], per_scale


def scale_grid(voxel_size, z_ratios, factors):
    """Scales (Z, Y, X) = factor * (z_ratio, 1, 1); z_ratio defaults span voxel size .. 1."""
    voxel = np.asarray(voxel_size, dtype=float)
    natural = float(voxel[0] / voxel[-1])
    ratios = z_ratios or sorted({round(natural, 4), round(float(np.sqrt(natural)), 4), 1.0})
    return [(round(f * r, 4), round(float(f), 4), round(float(f), 4))
            for r in ratios for f in factors]


def evaluate_voronoi_otsu(pairs, voxel_size):
    """Voronoi-Otsu labelling with its sigmas chosen on the folder (full grid).

    Sigmas are tried both in space (scaled by the voxel size per axis) and in voxels (the
    same along every axis, as clEsperanto's ``voronoi_otsu_labeling`` does).
    """
    from napari_anystar.analysis import pooled_scores
    from napari_anystar.analysis.voronoi_otsu import blur, otsu_mask, seeded_watershed

    truth = [labels for _, _, labels in pairs]
    best = None
    for sigma_in, spacing in (("space", tuple(voxel_size)), ("voxels", (1.0, 1.0, 1.0))):
        masks = {o: [otsu_mask(blur(img, o, spacing)) for _, img, _ in pairs]
                 for o in OUTLINE_SIGMAS}
        for spot_sigma in SPOT_SIGMAS:
            spots = [blur(img, spot_sigma, spacing) for _, img, _ in pairs]
            for outline_sigma in OUTLINE_SIGMAS:
                predicted = [seeded_watershed(s, m)
                             for s, m in zip(spots, masks[outline_sigma], strict=True)]
                scores = pooled_scores(truth, predicted)
                if best is None or scores.mean("accuracy") > best[0]:
                    best = (scores.mean("accuracy"),
                            {"spot_sigma": spot_sigma, "outline_sigma": outline_sigma,
                             "sigma_in": sigma_in, **scores.to_dict()})
    return best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of *_image/_labels.tif")
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--voxel-size", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                    metavar=("Z", "Y", "X"), help="voxel size of the volumes (default 1 1 1)")
    ap.add_argument("--scale-factors", type=float, nargs="+", default=SCALE_FACTORS,
                    help="overall rescale factors tried in the tuning")
    ap.add_argument("--z-ratios", type=float, nargs="+", default=None,
                    help="Z/XY rescale ratios tried in the tuning (default: Z/X voxel size, "
                         "its square root, and 1)")
    ap.add_argument("--resample", type=float, default=1.0, metavar="F",
                    help="resample the volumes by F per axis first (default 1: as read)")
    ap.add_argument("--z-slices", type=int, default=None, metavar="N",
                    help="keep only the middle N slices of each volume (a thinner stack)")
    ap.add_argument("--no-baseline", action="store_true", help="skip Voronoi-Otsu")
    ap.add_argument("--no-refine", action="store_true",
                    help="StarDist's own outlines in every row (no outline refinement)")
    ap.add_argument("--no-tuning", action="store_true",
                    help="only the model's own thresholds (no threshold or scale search)")
    args = ap.parse_args(argv)

    from napari_anystar.model.registry import (
        default_model,
        load_model,
        model_thresholds,
        resolve_model,
    )

    entry = resolve_model(args.model) if args.model else default_model()
    if entry is None:
        raise SystemExit("no model available")
    model = load_model(entry)
    prob, nms = model_thresholds(entry)
    if not args.resample > 0:
        raise SystemExit(f"--resample must be positive, got {args.resample}")
    if args.z_slices is not None and args.z_slices < 1:
        raise SystemExit(f"--z-slices must be at least 1, got {args.z_slices}")
    pairs = z_cropped(resampled(read_pairs(args.data), args.resample), args.z_slices)
    voxel = np.asarray(args.voxel_size, dtype=float) / args.resample
    from_voxel_size = tuple(round(float(v), 4) for v in voxel / voxel[-1])
    raw_voxels = (1.0, 1.0, 1.0)
    scales = list(dict.fromkeys([from_voxel_size, raw_voxels]))
    if not args.no_tuning:
        scales = list(dict.fromkeys(
            [*scales, *scale_grid(voxel, args.z_ratios, args.scale_factors)]))

    start = time.perf_counter()
    untuned, tuned, per_scale = evaluate_model(model, prob, nms, pairs, scales,
                                               {from_voxel_size, raw_voxels},
                                               tune=not args.no_tuning,
                                               refine=not args.no_refine)
    default, default_unrefined, tuned_at_auto = auto_scale_result(
        model, prob, nms, pairs, not args.no_refine, tune=not args.no_tuning)
    result = {
        "data": str(args.data), "n_volumes": len(pairs),
        "n_objects": int(sum(len(np.unique(lbl)) - 1 for _, _, lbl in pairs)),
        "voxel_size": voxel.tolist(), "resample": args.resample, "z_slices": args.z_slices,
        "model": entry.name,
        "model_path": str(entry.path),
        "normalization": model.anystar_normalization.describe(),
        "default": default, "default_unrefined": default_unrefined,
        "default_raw_voxels": untuned[raw_voxels], "voxel_size_scale": untuned[from_voxel_size],
        "tuned": tuned, "tuned_per_scale": per_scale, "tuned_at_auto": tuned_at_auto,
        "model_eval_s": round(time.perf_counter() - start, 1),
    }
    if not args.no_baseline:
        start = time.perf_counter()
        result["voronoi_otsu"] = evaluate_voronoi_otsu(pairs, tuple(voxel))
        result["voronoi_otsu_eval_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
