"""Where a model loses accuracy: its probabilities or its rays (a diagnostic; needs labels).

Runs the model as ``bench_real.py``'s default row does (its thresholds; on a real folder the
*auto* scale per volume, StarDist's outlines and refined ones), then again with the rays of
the candidates inside an object replaced by the reference labels' (``analysis.ray_oracle``):
all of them, only each object's size, or only its shape. Also scores clean synthetic volumes
(issue 11's protocol: AS-Mix 128^3 from seed 9300, raw voxels, StarDist's outlines), where
the true probability map (StarDist's ``edt_prob``) can replace the network's at its
candidates too (``probability``, and ``both`` with the true rays). Reports the
rays' mean absolute error against the labels (candidates above the threshold inside an
object, the ray scale taken out) beside a guess that knows each object's median ray.

Usage: python benchmarks/ray_oracle.py [--model as-mix-lite] [--synthetic 6]
       [--data /work/shared/data/bbbc050-dev]
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real import auto_scale_outputs, read_pairs
from napari_anystar._generators import result_of

SYNTHETIC_SEED = 9300
SYNTHETIC_SIZE = 128


def _mean_accuracy(truth, predicted) -> float:
    from napari_anystar.analysis import pooled_scores

    return round(pooled_scores(truth, predicted).mean("accuracy"), 4)


def _pooled_error(errors: list[dict]) -> dict:
    n = sum(e["n"] for e in errors)
    if not n:
        return {"mae": None, "median_ray_guess_mae": None, "n": 0}
    return {key: round(sum(e[key] * e["n"] for e in errors) / n, 3)
            for key in ("mae", "median_ray_guess_mae")} | {"n": n}


def synthetic_rows(model, rays, prob: float, nms: float, n: int) -> dict:
    """Clean synthetic volumes at raw voxels: network, true rays/probabilities, both."""
    from stardist.utils import edt_prob

    from napari_anystar.analysis.ray_oracle import ray_error, reference_rays, with_reference_rays
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import predict_network
    from napari_anystar.synth import SynthSettings, generate

    rows: dict[str, list] = {k: [] for k in ("network", "rays", "probability", "both")}
    truth, errors = [], []
    settings = SynthSettings(size=SYNTHETIC_SIZE, augment=False)
    for i in range(n):
        sample = generate("as-mix", SYNTHETIC_SEED + i, settings)
        labels = sample.labels.astype(np.int32)
        truth.append(labels)
        out = result_of(predict_network(model, sample.image))
        ref = reference_rays(out, labels, rays)
        errors.append(ray_error(out, ref, prob, model.anystar_ray_scale))
        true_prob = edt_prob(labels)[tuple(slice(None, None, g) for g in out.grid)]
        cells = out.points // np.asarray(out.grid)
        by_edt = dataclasses.replace(out, cand_prob=true_prob[tuple(cells.T)].astype(np.float32))
        for key, o in (("network", out), ("rays", with_reference_rays(out, ref)),
                       ("probability", by_edt), ("both", with_reference_rays(by_edt, ref))):
            rows[key].append(InstanceSolver(o, model).labels(prob, nms))
    return {"n_volumes": n, "size": SYNTHETIC_SIZE,
            "seeds": [SYNTHETIC_SEED, SYNTHETIC_SEED + n - 1],
            "mean_accuracy": {k: _mean_accuracy(truth, v) for k, v in rows.items()},
            "ray_error": _pooled_error(errors)}


def real_rows(model, rays, prob: float, nms: float, folder: Path) -> dict:
    """A labelled folder at the *auto* scales: network rays, reference rays, size, shape."""
    from napari_anystar.analysis.ray_oracle import (
        RAY_PARTS,
        ray_error,
        reference_rays,
        with_reference_rays,
    )
    from napari_anystar.model.instances import InstanceSolver

    pairs = read_pairs(folder)
    *_, solvers, refiners = auto_scale_outputs(model, prob, nms, pairs, refine=True)
    keys = ("network", *RAY_PARTS)
    plain: dict[str, list] = {k: [] for k in keys}
    refined: dict[str, list] = {k: [] for k in keys}
    errors = []
    for (_, _, labels), solver, refiner in zip(pairs, solvers, refiners, strict=True):
        out = solver.output
        ref = reference_rays(out, labels, rays)
        errors.append(ray_error(out, ref, prob, model.anystar_ray_scale))
        for key in keys:
            s = solver if key == "network" else InstanceSolver(
                with_reference_rays(out, ref, key), model)
            lbl = s.labels(prob, nms)
            plain[key].append(lbl)
            refined[key].append(refiner(lbl))
    truth = [labels for _, _, labels in pairs]
    return {"data": str(folder), "n_volumes": len(pairs),
            "mean_accuracy": {k: _mean_accuracy(truth, v) for k, v in plain.items()},
            "mean_accuracy_refined": {k: _mean_accuracy(truth, v) for k, v in refined.items()},
            "ray_error": _pooled_error(errors)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--synthetic", type=int, default=6, metavar="N",
                    help="clean synthetic volumes to score (0: none)")
    ap.add_argument("--data", type=Path, default=None, help="folder of *_image/_labels.tif")
    args = ap.parse_args(argv)

    from stardist.rays3d import rays_from_json

    from napari_anystar.model import registry

    entry = registry.resolve_model(args.model) if args.model else registry.default_model()
    if entry is None:
        raise SystemExit("no model available")
    model = registry.load_model(entry)
    rays = rays_from_json(model.config.rays_json)
    prob, nms = registry.model_thresholds(entry)
    result = {"model": entry.name, "prob": prob, "nms": nms,
              "ray_scale": model.anystar_ray_scale}
    if args.synthetic:
        result["synthetic"] = synthetic_rows(model, rays, prob, nms, args.synthetic)
        print(json.dumps(result["synthetic"]), file=sys.stderr, flush=True)
    if args.data is not None:
        result["real"] = real_rows(model, rays, prob, nms, args.data)
        print(json.dumps(result["real"]), file=sys.stderr, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
