"""Choose a model's ``ray_scale`` (``anystar.json``) on held-out synthetic volumes.

The network's predicted ray lengths run systematically short (tight outlines, also on clean
synthetic data). This script runs the model (with its own normalisation) once on ``--n``
held-out samples of ``--generator`` from ``--seed`` on, made like the threshold-tuning
volumes (``train.thresholds``: A(.)'s intensity steps only, whole objects, 96^3), then
scores the model's own thresholds with the ray lengths multiplied by each factor (pooled
mean accuracy over IoU 0.1 ... 0.9, the paper's protocol) and reports the best factor.
At that factor it also reports the size of the objects the model predicts there, measured
as the *auto* scale measures a user's volume (per axis, the volume-weighted median extent
of the kept objects): the ``object_diameter`` that makes *auto* compare like with like.
No real image is used.

Usage: python benchmarks/calibrate_ray_scale.py [--model as-mix-lite] [--generator as-mix]
       [--n 16] [--seed 9100] [--psf-blur P] [--axial-blur P]
(give the blur probabilities the model was trained with, so its volumes look like its
training data)
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

FACTORS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--generator", default="as-mix")
    ap.add_argument("--n", type=int, default=16, help="number of held-out samples")
    ap.add_argument("--seed", type=int, default=9100, help="first sample seed")
    ap.add_argument("--psf-blur", type=float, default=0.0, metavar="P",
                    help="PSF blur probability of the volumes (the model's training recipe)")
    ap.add_argument("--axial-blur", type=float, default=0.0, metavar="P",
                    help="axial blur probability of the volumes (the model's training recipe)")
    args = ap.parse_args(argv)

    from napari_anystar._generators import result_of
    from napari_anystar.analysis import pooled_scores
    from napari_anystar.model import registry
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.object_size import object_extents, weighted_median
    from napari_anystar.model.predict import predict_network
    from napari_anystar.synth import SynthSettings, generate
    from napari_anystar.train.thresholds import TUNING_SIZE, tuning_settings

    entry = registry.resolve_model(args.model) if args.model else registry.default_model()
    if entry is None:
        raise SystemExit("no model available")
    model = registry.load_model(entry)
    prob, nms = registry.model_thresholds(entry)
    current = registry.ray_scale(entry.path)
    settings = tuning_settings(SynthSettings(psf_blur=args.psf_blur, axial_blur=args.axial_blur))
    samples = [generate(args.generator, args.seed + i, settings) for i in range(args.n)]
    outputs = [result_of(predict_network(model, sample.image)) for sample in samples]
    truth = [s.labels.astype(np.int32) for s in samples]
    scores = {}
    for factor in FACTORS:
        relative = np.float32(factor / current)  # outputs already carry the current factor
        predicted = [InstanceSolver(dataclasses.replace(o, cand_dist=o.cand_dist * relative),
                                    model).labels(prob, nms) for o in outputs]
        scores[factor] = pooled_scores(truth, predicted).mean("accuracy")
        print(json.dumps({"ray_scale": factor, "mean_accuracy": round(scores[factor], 4)}),
              file=sys.stderr, flush=True)
    best = max(scores, key=scores.get)
    relative = np.float32(best / current)
    extents = np.concatenate([
        object_extents(dataclasses.replace(o, cand_dist=o.cand_dist * relative), model, prob)
        for o in outputs])
    predicted_size = weighted_median(extents, np.prod(extents, axis=1))
    print(json.dumps({"model": entry.name, "normalization": model.anystar_normalization.describe(),
                      "generator": args.generator, "n": args.n, "size": TUNING_SIZE,
                      "seeds": [args.seed, args.seed + args.n - 1], "prob": prob, "nms": nms,
                      "current_ray_scale": current, "best_ray_scale": best,
                      "mean_accuracy": {str(k): round(v, 4) for k, v in scores.items()},
                      "predicted_object_size_zyx": [round(float(v), 2) for v in predicted_size],
                      "predicted_object_diameter": round(float(np.mean(predicted_size)), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
