"""Live thresholds: how fast do labels follow the probability / NMS sliders?

Builds a 128^3 volume with ~100 nuclei from the BBBC050 dev volumes (three t501 volumes,
~51 x 125 x 125 each, stacked along z: 51 + 51 + the first 26 slices, each cropped or
reflect-padded to 128 x 128 in y/x), runs the network once, then measures

* ``predict_instances_s``: plain ``model.predict_instances`` (same model, tiles, thresholds;
  TensorFlow warmed up by one untimed network pass first),
* ``inference_s`` / ``inference_overhead``: our ``predict_network`` + first labels, relative
  to ``predict_instances`` (labels checked identical),
* ``threshold_update_median_s``: median time from a threshold change to updated labels over a
  slider sweep (probability 0.80 -> 0.30 in steps of 0.05 at the model's NMS threshold, then
  NMS 0.20 -> 0.60 in steps of 0.05 at the model's probability threshold, then the same
  positions once more), each a new threshold pair for the solver,
* ``speedup``: ``predict_instances_s / threshold_update_median_s``,
* ``warmup_s`` / ``warmup_chunk_max_s``: on a fresh solver, after the first labels, the
  Segment widget's background warm-up (``InstanceSolver.warm_up`` from the model's probability
  threshold down at its NMS threshold): total time and the longest chunk; a waiting slider
  request interrupts a chunk at its next check, ``warmup_preempt_max_s`` is the longest time
  between two such checks (or chunk ends), i.e. the most a slider request waits for the
  warm-up; then ``threshold_update_after_warmup_max_s`` /
  ``..._median_s``: the probability part of the sweep (0.80 -> 0.30) on that warmed solver.

``--verify`` sweep positions (spread over the sweep) are compared with StarDist's own
NMS + rendering.
Usage: python benchmarks/bench_thresholds.py --model /work/shared/models/bbbc050-supervised
       --data /work/shared/data/bbbc050-dev
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


def build_volume(data: Path, size: int = 128) -> tuple[np.ndarray, int]:
    """Stack t501 volumes along z into a size^3 volume; returns (image, number of nuclei)."""
    import tifffile

    names = sorted(p.name for p in data.glob("*_t501_image.tif"))
    if len(names) < 3:
        raise SystemExit(f"need three *_t501_image.tif volumes in {data}")
    images, labels, z = [], [], 0
    for name in names:
        if z >= size:
            break
        img = tifffile.imread(data / name).astype(np.float32)
        lbl = tifffile.imread(data / name.replace("_image", "_labels")).astype(np.int64)
        take = min(img.shape[0], size - z)
        img, lbl = img[:take], lbl[:take]
        pads = [(0, 0)] + [(0, max(0, size - s)) for s in img.shape[1:]]
        img = np.pad(img, pads, mode="reflect")[:, :size, :size]
        lbl = np.pad(lbl, pads, mode="reflect")[:, :size, :size]
        offset = sum(int(lb.max()) for lb in labels)
        images.append(img)
        labels.append(np.where(lbl > 0, lbl + offset, 0))
        z += take
    lab = np.concatenate(labels)
    return np.concatenate(images), len(np.unique(lab)) - 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="StarDist3D model folder")
    ap.add_argument("--data", required=True, type=Path, help="folder with *_t501_image.tif")
    ap.add_argument("--verify", type=int, default=4,
                    help="sweep positions checked against StarDist's own NMS (default 4)")
    args = ap.parse_args(argv)

    from napari_anystar._generators import result_of
    from napari_anystar._tf import stardist_models

    StarDist3D = stardist_models().StarDist3D

    from napari_anystar.model.instances import WARM_MAX_CANDIDATES, InstanceSolver
    from napari_anystar.model.model_settings import model_normalization
    from napari_anystar.model.predict import (
        EDGE_BAND,
        PredictSettings,
        auto_n_tiles,
        predict_network,
    )

    image, n_nuclei = build_volume(args.data)
    model = StarDist3D(None, name=args.model.name, basedir=str(args.model.parent))
    p0, n0 = float(model.thresholds.prob), float(model.thresholds.nms)
    settings = PredictSettings(norm=model_normalization(args.model))  # the model's own
    print(f"volume {image.shape}, {n_nuclei} nuclei, thresholds prob={p0:.3f} nms={n0:.2f}",
          file=sys.stderr)

    def network():
        return result_of(predict_network(model, image, settings))

    network()                                   # warm-up: TensorFlow traces the tile shape

    t = time.perf_counter()
    ref, _ = model.predict_instances(image, prob_thresh=p0, nms_thresh=n0,
                                     n_tiles=auto_n_tiles(image.shape),
                                     normalizer=settings.norm.csbdeep(),
                                     show_tile_progress=False,
                                     predict_kwargs={"b": EDGE_BAND})
    t_plain = time.perf_counter() - t

    t = time.perf_counter()
    out = network()
    t_net = time.perf_counter() - t
    solver = InstanceSolver(out, model)
    first = solver.labels(p0, n0)
    t_ours = time.perf_counter() - t
    first_identical = bool(np.array_equal(first, ref))
    print(f"network {t_net:.1f} s, ours {t_ours:.1f} s, predict_instances {t_plain:.1f} s, "
          f"identical={first_identical}", file=sys.stderr)

    probs = [round(0.80 - 0.05 * k, 2) for k in range(11)]
    nmss = [round(0.20 + 0.05 * k, 2) for k in range(9)]
    sweep = [(p, n0) for p in probs] + [(p0, n) for n in nmss]
    sweep = sweep + sweep
    times, kept = [], []
    for p, n in sweep:
        solver._results.clear()              # time NMS + rendering, not the result cache
        t = time.perf_counter()
        solver.labels(p, n)
        times.append(time.perf_counter() - t)
        kept.append(solver.last_n_kept)
        print(f"  prob {p:.2f} nms {n:.2f}: {solver.n_candidates(p)} candidates, "
              f"{solver.last_n_kept} kept, {times[-1] * 1000:.0f} ms", file=sys.stderr)

    warm_solver = InstanceSolver(out, model)      # as the widget: first labels, then warm up
    warm_solver.labels(p0, n0)
    marks: list[float] = []

    def checkpoint() -> bool:                     # never interrupts, records when asked
        marks.append(time.perf_counter())
        return False

    chunks, warm, floor = [], warm_solver.warm_up(p0, n0, interrupt=checkpoint), p0
    t = t_chunk = time.perf_counter()
    while True:
        checkpoint()
        try:
            floor = next(warm)
        except StopIteration as stop:
            reached_floor = stop.value
            break
        chunks.append(time.perf_counter() - t_chunk)
        t_chunk = time.perf_counter()
    t_warm = time.perf_counter() - t
    preempt = float(np.max(np.diff(marks))) if len(marks) > 1 else 0.0
    print(f"warm-up {t_warm:.1f} s, {len(chunks)} chunks, reached floor: {reached_floor}",
          file=sys.stderr)
    after = []
    for p in probs:
        warm_solver._results.clear()
        t = time.perf_counter()
        labels = warm_solver.labels(p, n0)
        after.append(time.perf_counter() - t)
        print(f"  after warm-up prob {p:.2f}: {after[-1] * 1000:.0f} ms", file=sys.stderr)
    after_identical = bool(np.array_equal(labels, solver.labels(probs[-1], n0)))

    verified = []
    half = len(sweep) // 2
    for p, n in sweep[: half: max(1, half // max(1, args.verify))][: args.verify]:
        verified.append(bool(np.array_equal(solver.labels(p, n),
                                            solver.reference_labels(p, n))))
    median = float(np.median(times))
    result = {
        "volume_shape": list(image.shape),
        "n_nuclei": n_nuclei,
        "n_tiles": list(out.n_tiles),
        "thresholds": {"prob": p0, "nms": n0},
        "predict_instances_s": round(t_plain, 3),
        "network_s": round(t_net, 3),
        "inference_s": round(t_ours, 3),
        "inference_overhead": round(t_ours / t_plain - 1, 4),
        "first_labels_identical": first_identical,
        "threshold_update_median_s": round(median, 4),
        "threshold_update_first_pass_median_s": round(float(np.median(times[:len(times) // 2])),
                                                      4),
        "threshold_update_second_pass_median_s": round(
            float(np.median(times[len(times) // 2:])), 4),
        "threshold_update_max_s": round(float(np.max(times)), 3),
        "speedup": round(t_plain / median, 1),
        "warmup_s": round(t_warm, 3),
        "warmup_chunks": len(chunks),
        "warmup_chunk_max_s": round(float(max(chunks, default=0.0)), 3),
        "warmup_preempt_max_s": round(preempt, 4),
        "warmup_lowest_prob": round(floor, 2),
        "warmup_reached_floor": reached_floor,
        "warmup_max_candidates": WARM_MAX_CANDIDATES,
        "threshold_update_after_warmup_max_s": round(float(np.max(after)), 4),
        "threshold_update_after_warmup_median_s": round(float(np.median(after)), 4),
        "after_warmup_identical": after_identical,
        "n_updates": len(times),
        "candidates_at_default": solver.n_candidates(p0),
        "candidates_at_0.3": solver.n_candidates(0.3),
        "candidates_stored": out.n_candidates,
        "kept_range": [int(min(kept)), int(max(kept))],
        "fallbacks": solver.n_fallbacks,
        "verified_identical": verified,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
