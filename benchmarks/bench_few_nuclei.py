"""The default row on volumes that hold only one or a few nuclei, as early embryos do.

BBBC050 follows mouse embryos from the zygote on: early time points hold one to four large
nuclei in the same field of view as later ones. This benchmark makes such volumes from
labelled ones (``--data``, ``*_image.tif`` / ``*_labels.tif``; ``--match`` selects by name):
in each it keeps the ``--keep`` nuclei nearest the largest one and erases the others (their
voxels, grown by 3, are replaced by background voxels drawn at random: voxels over 6 from
any nucleus), then resamples the volume by ``--zoom`` per axis (larger nuclei; images
linearly, labels by nearest neighbour). Only the kept nuclei are labelled.

Each volume then goes through the pipeline core as a new user meets it (``anystar segment``
defaults: shipped thresholds, *auto* scale and polarity, refined outlines), and is scored
with ``bench_real.py``'s protocol. Keys: ``mean_accuracy`` (pooled over the volumes),
``per_volume_mean_accuracy``, ``fallback_volumes`` (where the *auto* scale found nothing to
measure and used the fallback scale), and ``volumes`` (name, objects found, scale, accuracy).

Usage: python benchmarks/bench_few_nuclei.py --data /work/shared/data/bbbc050-dev
       --match t301 --keep 1 --zoom 1.5
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
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from bench_real import read_pairs

#: erased nuclei grow by this many voxels (their blurred rim goes too)
ERASE_GROW = 3
#: background voxels to draw from lie at least this far from every nucleus
BACKGROUND_GAP = 6


def few_nuclei(image: np.ndarray, labels: np.ndarray, keep: int, zoom: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``labels`` with only the ``keep`` nuclei nearest the largest one left,
    resampled by ``zoom``."""
    image, labels = image.astype(np.float32), labels.copy()
    ids = np.unique(labels)[1:]
    centres = np.array(ndi.center_of_mass(labels > 0, labels, ids))
    largest = centres[np.argmax(ndi.sum(labels > 0, labels, ids))]
    kept = ids[np.argsort(((centres - largest) ** 2).sum(axis=1), kind="stable")[:keep]]
    inside = np.isin(labels, kept)
    erased = (ndi.binary_dilation((labels > 0) & ~inside, iterations=ERASE_GROW)
              & ~ndi.binary_dilation(inside, iterations=1))
    background = image[~ndi.binary_dilation(labels > 0, iterations=BACKGROUND_GAP)]
    image[erased] = rng.choice(background, int(erased.sum()))
    labels[~inside] = 0
    if zoom != 1:
        image, labels = ndi.zoom(image, zoom, order=1), ndi.zoom(labels, zoom, order=0)
    return image, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of image/label pairs")
    ap.add_argument("--match", default="", help="only volumes whose name contains this")
    ap.add_argument("--keep", type=int, default=1, help="nuclei kept per volume (default 1)")
    ap.add_argument("--zoom", type=float, default=1.5, help="resampling factor (default 1.5)")
    ap.add_argument("--model", default=None, help="model name or folder (default: bundled)")
    ap.add_argument("--seed", type=int, default=0, help="background draw seed (default 0)")
    args = ap.parse_args(argv)

    from napari_anystar._generators import result_of
    from napari_anystar.analysis.scores import match_counts, scores_from_counts
    from napari_anystar.model.cache import PredictionCache
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.model.registry import default_model, model_thresholds, resolve_model
    from napari_anystar.model.segmenter import network_job

    entry = resolve_model(args.model) if args.model else default_model()
    thresholds = model_thresholds(entry)
    pairs = [p for p in read_pairs(args.data) if args.match in p[0]]
    if not pairs:
        ap.error(f"no image/label pairs matching {args.match!r} in {args.data}")
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    counts, rows = [], []
    for name, image, labels in pairs:
        image, labels = few_nuclei(image, labels, args.keep, args.zoom, rng)
        run = result_of(network_job(entry, image, PredictSettings(), thresholds,
                                    PredictionCache(1), auto_scaled=True))
        counts.append(match_counts([labels], [run.labels]))
        accuracy = scores_from_counts(counts[-1]).mean("accuracy")
        rows.append({"name": name, "nuclei": int(len(np.unique(labels)) - 1),
                     "found": run.n_objects, "scale": list(run.settings.scale),
                     "fallback": bool(run.auto is not None and run.auto.fell_back),
                     "mean_accuracy": round(float(accuracy), 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    pooled = scores_from_counts(np.concatenate(counts)).mean("accuracy")
    print(json.dumps({
        "model": entry.name, "keep": args.keep, "zoom": args.zoom, "volumes": rows,
        "mean_accuracy": round(float(pooled), 4),
        "per_volume_mean_accuracy": round(float(np.mean([r["mean_accuracy"] for r in rows])), 4),
        "fallback_volumes": [r["name"] for r in rows if r["fallback"]],
        "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
