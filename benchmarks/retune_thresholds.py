"""Re-choose a synthetic model's probability/NMS thresholds as it predicts today.

Training tunes the thresholds once, at its end, with the recipe's normalisation and ray
lengths as the network predicts them. A model whose prediction changed since (the package's
one normalisation in ``anystar.json``, a ``ray_scale`` chosen later) is re-tuned here the
same way: on its recipe's held-out synthetic tuning volumes (``train.thresholds``: generator,
seed and synthesis settings from ``training.json``, A(.)'s intensity steps only), through the
plugin's prediction path, maximising pooled mean accuracy over IoU 0.1 ... 0.9. No real image
is used. It reports; writing ``thresholds.json`` is left to the model's maintainer.

Usage: python benchmarks/retune_thresholds.py [--model as-mix-lite]
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    args = ap.parse_args(argv)

    from napari_anystar._generators import result_of
    from napari_anystar.model import registry
    from napari_anystar.train.thresholds import recipe_thresholds

    entry = registry.resolve_model(args.model) if args.model else registry.default_model()
    model = registry.load_model(entry)
    start = time.perf_counter()
    chosen = result_of(recipe_thresholds(model, entry.path))
    print(json.dumps({
        "model": entry.name, "normalization": model.anystar_normalization.describe(),
        "ray_scale": model.anystar_ray_scale, "shipped": dict(zip(
            ("prob", "nms"), registry.model_thresholds(entry), strict=True)),
        "retuned": {"prob": round(chosen["prob"], 4), "nms": chosen["nms"]},
        "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
