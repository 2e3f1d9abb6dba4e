"""Live thresholds without the GUI: how fast does the solver answer each slider position?

Input as ``bench_widget.py``: a 128^3 AS-Mix volume, the default model, scale 1; the network
runs once (or its output is read from ``--cache``, a pickle this script writes if missing).
The sweep is the widget benchmark's: probability 0.10 -> 0.95 at the model's NMS threshold,
then NMS 0.10 -> 0.60 at probability 0.20 and at the model's probability (``--step``). An
update is ``InstanceSolver.labels(prob, nms)`` (NMS and label rendering, no GUI):

* ``cold``: a fresh solver, each position in sweep order (a user dragging at once);
* ``warm``: the same positions again on that solver, its label images dropped;
* ``after_warmup``: a fresh solver after its background warm-up (``segmenter.warm_job``, at
  most ``--warmup-limit`` seconds, ``warmup_s`` / ``warmup_done``), label images dropped.

Keys per mode: ``*_median_s``, ``*_max_s`` (all updates), ``*_prob_median_s`` /
``*_nms_median_s``; ``updates_s`` has every update. ``--verify N`` compares N positions spread
over the sweep with StarDist's own NMS and rendering (``identical``).
Usage: python benchmarks/bench_solver.py [--cache /tmp/out128.pkl] [--modes cold,warm]
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def _output(size: int, cache: Path | None, model):
    if cache is not None and cache.exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    from napari_anystar._generators import result_of
    from napari_anystar.model.predict import PredictSettings, predict_network
    from napari_anystar.synth import SynthSettings, generate

    image = generate("as-mix", 0, SynthSettings(size=size, grid_size=size)).image
    settings = PredictSettings(scale=(1.0, 1.0, 1.0)).for_model(model)
    out = result_of(predict_network(model, image, settings))
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(out, f)
        tmp.replace(cache)
    return out


def _sweep(prob0: float, nms0: float, step: float) -> list[tuple[str, float, float]]:
    grid = np.round(np.arange(0.1, 0.6 + 1e-9, step), 2)
    probs = np.round(np.arange(0.1, 0.95 + 1e-9, step), 2)
    points = [("prob", float(p), nms0) for p in probs]
    for p in (0.2, round(prob0, 2)):
        points += [("nms", p, float(n)) for n in grid]
    return points


def _run(solver, points) -> list[float]:
    times = []
    for _, p, n in points:
        solver._results.clear()
        start = time.perf_counter()
        solver.labels(p, n)
        times.append(time.perf_counter() - start)
        print(f"  prob {p:.2f} nms {n:.2f}: {solver.last_n_kept} kept, "
              f"{times[-1] * 1000:.0f} ms", file=sys.stderr, flush=True)
    return times


def _summary(mode: str, points, times) -> dict:
    prob = [t for (kind, _, _), t in zip(points, times, strict=True) if kind == "prob"]
    nms = [t for (kind, _, _), t in zip(points, times, strict=True) if kind == "nms"]
    return {f"{mode}_median_s": round(statistics.median(times), 4),
            f"{mode}_max_s": round(max(times), 4),
            f"{mode}_prob_median_s": round(statistics.median(prob), 4),
            f"{mode}_nms_median_s": round(statistics.median(nms), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="volume edge length (default 128)")
    ap.add_argument("--step", type=float, default=0.05, help="slider sweep step (default 0.05)")
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the network output")
    ap.add_argument("--modes", default="cold,warm,after_warmup")
    ap.add_argument("--warmup-limit", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--verify", type=int, default=0, help="positions checked against StarDist")
    args = ap.parse_args(argv)

    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.registry import default_model, load_model, model_thresholds
    from napari_anystar.model.segmenter import warm_job

    entry = default_model()
    model = load_model(entry)
    prob0, nms0 = model_thresholds(entry)
    out = _output(args.size, args.cache, model)
    points = _sweep(prob0, nms0, args.step)
    modes = args.modes.split(",")
    result: dict = {"model": entry.name, "n_candidates": int(out.n_candidates),
                    "positions": len(points), "updates_s": {}}
    solver = None
    if "cold" in modes or "warm" in modes:
        solver = InstanceSolver(out, model)
        for mode in ("cold", "warm"):
            if mode in modes:
                print(mode, file=sys.stderr)
                times = _run(solver, points)
                result.update(_summary(mode, points, times))
                result["updates_s"][mode] = [round(t, 4) for t in times]
    if "after_warmup" in modes:
        solver = InstanceSolver(out, model)
        solver.labels(prob0, nms0)
        job, start, done = warm_job(solver, prob0, nms0), time.perf_counter(), False
        while time.perf_counter() - start < args.warmup_limit:
            try:
                next(job)
            except StopIteration:
                done = True
                break
        job.close()
        result["warmup_s"] = round(time.perf_counter() - start, 2)
        result["warmup_done"] = done
        print("after_warmup", file=sys.stderr)
        times = _run(solver, points)
        result.update(_summary("after_warmup", points, times))
        result["updates_s"]["after_warmup"] = [round(t, 4) for t in times]
    if args.verify and solver is not None:
        picks = np.linspace(0, len(points) - 1, args.verify).round().astype(int)
        result["identical"] = all(
            np.array_equal(solver.labels(p, n), solver.reference_labels(p, n))
            for _, p, n in (points[k] for k in picks))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
