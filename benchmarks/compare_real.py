"""Two models as a new user meets them, on the same real volumes: does the difference rank them?

Each model runs ``bench_real.py``'s ``default`` row (its shipped thresholds, the *auto* scale
per volume, outlines refined unless ``--no-refine``). Prints each model's pooled mean accuracy
(IoU 0.1 ... 0.9) with a bootstrap interval over the volumes, and the paired difference A - B
with its interval (``napari_anystar.analysis.bootstrap``: each resample takes the same volumes
for both). An interval that holds 0 does not rank the two on data like this folder.

Usage: python benchmarks/compare_real.py --data /work/shared/data/bbbc050-dev A B
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real import auto_scale_outputs, labels_functions, read_pairs


def default_counts(name: str, pairs, refine: bool):
    """Match counts (``match_counts``) of model ``name``'s default row on ``pairs``."""
    from napari_anystar.analysis.scores import match_counts
    from napari_anystar.model.registry import load_model, model_thresholds, resolve_model

    entry = resolve_model(name)
    model = load_model(entry)
    prob, nms = model_thresholds(entry)
    *_, solvers, refiners = auto_scale_outputs(model, prob, nms, pairs, refine)
    predicted = [f(prob, nms) for f in labels_functions(solvers, refiners)]
    return match_counts([labels for _, _, labels in pairs], predicted)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of *_image/_labels.tif")
    ap.add_argument("model_a", help="model name or folder")
    ap.add_argument("model_b", help="model name or folder")
    ap.add_argument("--no-refine", action="store_true", help="StarDist's own outlines")
    args = ap.parse_args(argv)

    from napari_anystar.analysis.bootstrap import accuracy_interval, paired_difference

    pairs = read_pairs(args.data)
    a, b = (default_counts(m, pairs, not args.no_refine) for m in (args.model_a, args.model_b))
    print(json.dumps({
        "data": str(args.data), "n_volumes": len(pairs), "refined": not args.no_refine,
        "a": {"model": args.model_a, **accuracy_interval(a).to_dict()},
        "b": {"model": args.model_b, **accuracy_interval(b).to_dict()},
        "a_minus_b": paired_difference(a, b).to_dict(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
