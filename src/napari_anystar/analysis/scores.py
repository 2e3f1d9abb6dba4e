"""Instance matching scores pooled over a set of volumes (the AnyStar paper's protocol).

Objects are matched one-to-one at each IoU threshold with ``stardist.matching``; true and
false positives and false negatives are summed over all volumes before the ratios are taken
(``matching_dataset(..., by_image=False)``), then averaged over the IoU thresholds.
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


def pooled_scores(
    y_true: Sequence[np.ndarray],
    y_pred: Sequence[np.ndarray],
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> MatchScores:
    """Scores of predicted label volumes against reference ones, pooled over all pairs."""
    from stardist.matching import matching_dataset

    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError(f"need equally many reference and predicted volumes (at least one), "
                         f"got {len(y_true)} and {len(y_pred)}")
    for t, p in zip(y_true, y_pred, strict=True):
        if t.shape != p.shape:
            raise ValueError(f"label volumes differ in shape: {t.shape} vs {p.shape}")
    stats = matching_dataset(
        [np.asarray(t) for t in y_true], [np.asarray(p) for p in y_pred],
        thresh=list(iou_thresholds), by_image=False, show_progress=False,
    )
    return MatchScores(
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        accuracy=tuple(float(s.accuracy) for s in stats),
        f1=tuple(float(s.f1) for s in stats),
        precision=tuple(float(s.precision) for s in stats),
        recall=tuple(float(s.recall) for s in stats),
        n_true=int(stats[0].n_true),
        n_pred=int(stats[0].n_pred),
    )
