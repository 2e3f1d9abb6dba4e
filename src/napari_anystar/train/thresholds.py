"""Probability/NMS threshold tuning on validation volumes (StarDist's own optimiser).

Same procedure as ``StarDist3D.optimize_thresholds`` (golden-section search of the
probability threshold for each NMS threshold, maximising mean matching accuracy over
IoU 0.3/0.5/0.7), split per NMS value so progress can be reported and the run cancelled.
The probability bracket is StarDist's (half the maximum to the maximum), raised where
needed so at most :data:`MAX_CANDIDATE_SHARE` of the grid points are NMS candidates.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Generator, Sequence

import numpy as np

NMS_THRESHOLDS = (0.3, 0.4, 0.5)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
#: The search never tries probability thresholds that keep more than this share of the
#: grid points as candidates (a badly trained network would make NMS take minutes).
MAX_CANDIDATE_SHARE = 0.05


def tune_thresholds(
    model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, maxiter: int = 8
) -> Generator[int, None, dict[str, float]]:
    """Yield the number of NMS values done; return ``{"prob": p, "nms": n}`` with p, n in (0, 1)."""
    from stardist.utils import optimize_threshold

    with contextlib.redirect_stdout(io.StringIO()):
        predictions = [
            model.predict(x, n_tiles=model._guess_n_tiles(x), show_tile_progress=False)[:2]
            for x in images
        ]
    all_probs = np.concatenate([p.ravel() for p, _ in predictions])
    max_prob = float(all_probs.max())
    low = max(max_prob / 2, float(np.quantile(all_probs, 1 - MAX_CANDIDATE_SHARE)))
    bracket = (min(low, 0.99 * max_prob), max_prob)
    best = (-np.inf, 0.5, 0.4)
    labels = [np.maximum(y, 0).astype(np.int32) for y in labels]
    for done, nms in enumerate(NMS_THRESHOLDS, start=1):
        if max_prob > 0:
            with contextlib.redirect_stdout(io.StringIO()):
                prob, score = optimize_threshold(
                    labels, predictions, model=model, nms_thresh=nms,
                    iou_threshs=list(IOU_THRESHOLDS), bracket=bracket, maxiter=maxiter, verbose=0,
                )
            if score > best[0]:
                best = (score, float(np.clip(prob, *bracket)), nms)
        yield done
    prob = float(np.clip(best[1], 1e-3, 0.999))
    return {"prob": prob, "nms": float(best[2])}
