"""Training health: how well the distance regression is learnt, next to a trivial guess.

The masked mean absolute error of the predicted ray distances on validation patches is
reported beside the error of a constant guess (one median ray vector per patch, over its
object voxels): a network that barely beats the guess has not learnt object shapes.
"""

from __future__ import annotations

import numpy as np


def distance_mae(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(network MAE, constant-guess MAE)`` in voxels over object voxels of the batch.

    ``pred``: (n, z, y, x, rays) predicted distances; ``target``: (n, z, y, x, rays + 1) true
    distances with the object mask (probability > 0) as last channel, as StarDist's targets.
    """
    dist, mask = target[..., :-1], target[..., -1] > 0
    errors, guess_errors = [], []
    for p, d, m in zip(pred, dist, mask, strict=True):
        if not m.any():
            continue
        true = d[m]
        errors.append(np.abs(p[m] - true).ravel())
        guess_errors.append(np.abs(np.median(true, axis=0)[None] - true).ravel())
    if not errors:
        return float("nan"), float("nan")
    return float(np.concatenate(errors).mean()), float(np.concatenate(guess_errors).mean())
