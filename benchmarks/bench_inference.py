"""Inference time of the default model on a 128^3 volume (the Segment widget's full path).

Times ``segment_volume`` (the model's own normalisation, tiled network, NMS, label
rendering) with the model's own thresholds on an AS-Mix volume synthesised at 128^3 (no
rescaling, automatic tiles), as a user would run it after loading the model:

* ``load_s``: building the network and loading its weights;
* ``first_s``: the first run in the process (includes TensorFlow's graph set-up);
* ``median_s`` over ``--repeats`` further runs, and ``runs_s`` each of them;
* ``n_objects``: objects in the labels (sanity: the volume has nuclei to find);
* ``auto_scale_s``: what the default *auto* scale adds before a Run (the Suggest rounds,
  ``model.object_size.auto_scale``), and the ``auto_scale`` it picks;
* ``default_median_s`` / ``default_runs_s``: a Run as the widget and ``anystar segment`` do
  it by default (``model.segmenter.network_job``: *auto* scale, network at that scale, labels
  with refined outlines), each with an empty cache, model loaded; ``default_n_objects``.

Usage: python benchmarks/bench_inference.py [--model NAME_OR_DIR] [--repeats 5]
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def run_once(model, image, prob, nms) -> tuple[float, np.ndarray]:
    from napari_anystar._generators import result_of
    from napari_anystar.model.segment import segment_volume

    start = time.perf_counter()
    labels = result_of(segment_volume(model, image, None, prob, nms))
    return time.perf_counter() - start, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--size", type=int, default=128, help="volume edge length (default 128)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from napari_anystar.model.predict import auto_n_tiles
    from napari_anystar.model.registry import (
        default_model,
        load_model,
        model_thresholds,
        resolve_model,
    )
    from napari_anystar.synth import SynthSettings, generate

    image = generate("as-mix", 0, SynthSettings(size=args.size, grid_size=args.size)).image
    entry = resolve_model(args.model) if args.model else default_model()
    if entry is None:
        raise SystemExit("no model available")
    start = time.perf_counter()
    model = load_model(entry)
    load_s = time.perf_counter() - start
    prob, nms = model_thresholds(entry)
    first_s, labels = run_once(model, image, prob, nms)
    runs = [run_once(model, image, prob, nms)[0] for _ in range(args.repeats)]
    from napari_anystar._generators import result_of
    from napari_anystar.model.object_size import auto_scale

    start = time.perf_counter()
    chosen = result_of(auto_scale(model, image, None, prob)).scale
    auto_s = time.perf_counter() - start
    from napari_anystar.model.cache import PredictionCache
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.model.segmenter import network_job

    default_runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = result_of(network_job(entry, image, PredictSettings(), (prob, nms),
                                       PredictionCache(), auto_scaled=True))
        default_runs.append(time.perf_counter() - start)
    print(json.dumps({
        "model": entry.name, "shape": list(image.shape),
        "n_tiles": list(auto_n_tiles(image.shape)), "threads": os.cpu_count(),
        "load_s": round(load_s, 3), "first_s": round(first_s, 3),
        "median_s": round(statistics.median(runs), 3), "runs_s": [round(r, 3) for r in runs],
        "n_objects": int(len(np.unique(labels)) - 1),
        "auto_scale_s": round(auto_s, 3), "auto_scale": list(chosen),
        "default_median_s": round(statistics.median(default_runs), 3),
        "default_runs_s": [round(r, 3) for r in default_runs],
        "default_n_objects": int(result.n_objects),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
