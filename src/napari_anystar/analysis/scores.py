"""Instance matching scores pooled over a set of volumes (the AnyStar paper's protocol).

Objects are matched one-to-one at each IoU threshold with ``stardist.matching``; true and
false positives and false negatives are summed over all volumes before the ratios are taken
(as ``matching_dataset(..., by_image=False)``), then averaged over the IoU thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The paper's IoU thresholds, 0.1 ... 0.9.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))
METRICS = ("accuracy", "f1", "precision", "recall")


@dataclass(frozen=True)
class MatchScores:
    """Pooled scores per IoU threshold, and the object counts behind them."""

    iou_thresholds: tuple[float, ...]
    accuracy: tuple[float, ...]
    f1: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    n_true: int
    n_pred: int

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over the IoU thresholds."""
        return float(np.mean(getattr(self, metric)))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"iou_thresholds": list(self.iou_thresholds)}
        for metric in METRICS:
            out[metric] = [round(v, 4) for v in getattr(self, metric)]
        for metric in METRICS:
            out[f"mean_{metric}"] = round(self.mean(metric), 4)
        out["n_true"], out["n_pred"] = self.n_true, self.n_pred
        return out


def match_counts(y_true: Sequence[np.ndarray], y_pred: Sequence[np.ndarray],
                 iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """(volumes, thresholds, 3) true positives, false positives and false negatives of each
    volume (``stardist.matching``, the IoUs computed once per volume)."""
    from stardist.matching import matching

    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError(f"need equally many reference and predicted volumes (at least one), "
                         f"got {len(y_true)} and {len(y_pred)}")
    counts = np.zeros((len(y_true), len(iou_thresholds), 3), np.int64)
    for v, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        if np.shape(t) != np.shape(p):
            raise ValueError(f"label volumes differ in shape: {np.shape(t)} vs {np.shape(p)}")
        stats = matching(np.asarray(t), np.asarray(p), thresh=list(iou_thresholds))
        counts[v] = [(s.tp, s.fp, s.fn) for s in stats]
    return counts


def scores_from_counts(counts: np.ndarray,
                       iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> MatchScores:
    """Pooled scores of per-volume counts (:func:`match_counts`): summed over the volumes,
    then the ratios, as ``matching_dataset(..., by_image=False)`` (0 without true positives)."""
    tp, fp, fn = (np.asarray(c, np.float64) for c in np.asarray(counts).sum(axis=0).T)

    def ratio(den: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in np.divide(tp, den, out=np.zeros_like(tp), where=tp > 0))

    return MatchScores(
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        accuracy=ratio(tp + fp + fn),
        f1=tuple(2 * v for v in ratio(2 * tp + fp + fn)),
        precision=ratio(tp + fp),
        recall=ratio(tp + fn),
        n_true=int(tp[0] + fn[0]),
        n_pred=int(tp[0] + fp[0]),
    )


def pooled_scores(
    y_true: Sequence[np.ndarray],
    y_pred: Sequence[np.ndarray],
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> MatchScores:
    """Scores of predicted label volumes against reference ones, pooled over all pairs."""
    return scores_from_counts(match_counts(y_true, y_pred, iou_thresholds), iou_thresholds)
