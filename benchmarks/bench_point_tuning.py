"""Tuning thresholds from clicked centres: how close does it come to tuning on full labels?

Reads ``*_image.tif`` / ``*_labels.tif`` pairs from ``--data``, runs the default model once
per volume (raw voxels, scale 1, its own normalisation; auto tiles) and keeps the cached
output (``InstanceSolver``). Per volume, ``--clicks`` clicks are simulated from the labels
(seeded): a random nucleus, an axis-aligned box grown around its centroid one voxel per side
at a time until it holds ``--clicks`` nucleus centroids (or all), then a click at the centroid
(rounded; the nearest voxel of the nucleus if that voxel is not in it) of every nucleus whose
centroid lies in the box, so every nucleus inside the clicks' bounding box is clicked, as the
matching rule (``analysis.point_tuning``) asks of a user. Then, all scored with the mean
matching accuracy (IoU 0.1-0.9, pooled over the folder, against the full labels):

* ``shipped``: the model's own thresholds;
* ``labels``: the thresholds ``tune_thresholds_on_outputs`` chooses with the full labels;
* ``points_pooled``: the thresholds ``tune_thresholds_on_points`` chooses with the clicks of
  all volumes (point F1 pooled);
* ``points_per_volume``: each volume at the thresholds its own 20 clicks choose;
* ``search_128``: seconds of one point-based search (fresh solver, 20 simulated clicks) on an
  AS-Mix volume synthesised at 128^3, and of the label-based search on it for comparison.

Every search starts at the Segment widget's floor (``train.thresholds.candidate_floor``: no
probability that keeps more than 5% of the grid points as candidates), over the searched
volumes (``min_prob``).

Usage: python benchmarks/bench_point_tuning.py --data /work/shared/data/bbbc050-dev [--limit N]
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


def simulate_clicks(labels: np.ndarray, n_clicks: int, rng: np.random.Generator) -> np.ndarray:
    """Voxel clicks (n, 3) on every nucleus in a box grown around a random one (see above)."""
    from scipy import ndimage

    from napari_anystar.analysis.evaluate import object_centroids

    ids, centres = object_centroids(labels)
    if not len(ids):
        raise SystemExit("a labels volume without nuclei")
    lo = hi = centres[rng.integers(len(ids))]
    upper = np.array(labels.shape, float) - 1
    while True:
        inside = np.all((centres >= lo) & (centres <= hi), axis=1)
        if inside.sum() >= min(n_clicks, len(ids)):
            break
        lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, upper)
    boxes = ndimage.find_objects(labels)
    clicks = []
    for i, centre in zip(ids[inside], centres[inside], strict=True):
        voxel = np.floor(centre + 0.5).astype(int)
        if labels[tuple(voxel)] != i:  # a non-convex nucleus: its voxel nearest the centroid
            box = boxes[i - 1]
            own = np.argwhere(labels[box] == i) + [s.start for s in box]
            voxel = own[np.argmin(((own - centre) ** 2).sum(axis=1))]
        clicks.append(voxel)
    return np.array(clicks, float)


def search_floor(solvers) -> float:
    """Lowest probability searched: the Segment widget's (``_segment_tune.search_floor``)."""
    from napari_anystar.train.thresholds import candidate_floor

    return max(candidate_floor(solvers), *(s.output.min_prob for s in solvers))


def accuracy(solvers, truth, thresholds) -> float:
    """Pooled mean accuracy with ``thresholds[i] = (prob, nms)`` for volume ``i``."""
    from napari_anystar.analysis import pooled_scores

    predicted = [s.labels(*t) for s, t in zip(solvers, thresholds, strict=True)]
    return round(pooled_scores(truth, predicted).mean("accuracy"), 4)


def search_times(model, n_clicks: int, size: int, seed: int) -> dict[str, object]:
    """One point-based and one label-based search on a synthetic size^3 volume (fresh
    solvers on one network output)."""
    from napari_anystar.analysis import tune_thresholds_on_outputs
    from napari_anystar.analysis.point_tuning import clicked_points, tune_thresholds_on_points
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import PredictSettings, predict_network
    from napari_anystar.synth import SynthSettings, generate

    sample = generate("as-mix", seed, SynthSettings(size=size, grid_size=size))
    truth = sample.labels.astype(np.int32)
    output = result_of(predict_network(model, sample.image, PredictSettings()))
    clicks = clicked_points(simulate_clicks(truth, n_clicks, np.random.default_rng(seed)),
                            truth.shape)
    floor = search_floor([InstanceSolver(output, model)])
    start = time.perf_counter()
    choice = result_of(tune_thresholds_on_points(
        [InstanceSolver(output, model).labels], [clicks], min_prob=floor))
    points_s = time.perf_counter() - start
    start = time.perf_counter()
    result_of(tune_thresholds_on_outputs([InstanceSolver(output, model).labels], [truth],
                                         min_prob=floor))
    labels_s = time.perf_counter() - start
    return {"shape": list(truth.shape), "n_objects": int(len(np.unique(truth)) - 1),
            "n_candidates": output.n_candidates, "min_prob": round(floor, 4),
            "n_clicks": len(clicks.voxels), "points_search_s": round(points_s, 2),
            "labels_search_s": round(labels_s, 2), "prob": choice.prob, "nms": choice.nms}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of *_image/_labels.tif")
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N volumes")
    ap.add_argument("--clicks", type=int, default=20, help="simulated clicks per volume")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128, help="edge of the timed synthetic volume")
    args = ap.parse_args(argv)

    from bench_real import read_pairs
    from napari_anystar.analysis import tune_thresholds_on_outputs
    from napari_anystar.analysis.point_tuning import (
        clicked_points,
        pooled_point_counts,
        tune_thresholds_on_points,
    )
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import PredictSettings, predict_network
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
    shipped = model_thresholds(entry)
    pairs = read_pairs(args.data)[: args.limit]
    truth = [labels for _, _, labels in pairs]
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    solvers = [InstanceSolver(result_of(predict_network(model, image, PredictSettings())), model)
               for _, image, _ in pairs]
    network_s = time.perf_counter() - start
    clicks = [clicked_points(simulate_clicks(lbl, args.clicks, rng), lbl.shape) for lbl in truth]
    min_prob = search_floor(solvers)

    def point_choice(indices):
        chosen = [solvers[i] for i in indices]
        return result_of(tune_thresholds_on_points(
            [s.labels for s in chosen], [clicks[i] for i in indices],
            min_prob=search_floor(chosen)))

    start = time.perf_counter()
    by_labels = result_of(tune_thresholds_on_outputs([s.labels for s in solvers], truth,
                                                     min_prob=min_prob))
    search_s = time.perf_counter() - start
    pooled = point_choice(range(len(pairs)))
    per_volume = [point_choice([i]) for i in range(len(pairs))]

    def summary(prob, nms):
        n = len(pairs)
        return {"prob": round(prob, 4), "nms": nms,
                "mean_accuracy": accuracy(solvers, truth, [(prob, nms)] * n),
                "point_f1": round(pooled_point_counts(
                    [s.labels(prob, nms) for s in solvers], clicks).f1, 4)}

    label_choice = summary(by_labels.prob, by_labels.nms)
    point_pooled = summary(pooled.prob, pooled.nms)
    per_volume_accuracy = accuracy(solvers, truth, [(c.prob, c.nms) for c in per_volume])
    best = label_choice["mean_accuracy"]
    result = {
        "data": str(args.data), "n_volumes": len(pairs), "model": entry.name,
        "clicks_per_volume": [len(c.voxels) for c in clicks], "seed": args.seed,
        "network_s": round(network_s, 1), "labels_search_s": round(search_s, 1),
        "min_prob": round(min_prob, 4),
        "shipped": summary(*shipped),
        "labels": label_choice,
        "points_pooled": {**point_pooled,
                          "accuracy_gap": round(best - point_pooled["mean_accuracy"], 4)},
        "points_per_volume": {
            "mean_accuracy": per_volume_accuracy,
            "accuracy_gap": round(best - per_volume_accuracy, 4),
            "choices": {name: [round(c.prob, 4), c.nms, round(c.objective, 3)]
                        for (name, _, _), c in zip(pairs, per_volume, strict=True)},
        },
        "search_128": search_times(model, args.clicks, args.size, args.seed),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
