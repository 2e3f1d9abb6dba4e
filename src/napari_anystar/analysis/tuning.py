"""Choose probability/NMS thresholds for a set of volumes with reference labels.

Works on cached network outputs (:class:`~napari_anystar.model.instances.InstanceSolver`),
so every threshold pair costs one NMS pass and one matching per volume, never a network run.
The objective is the pooled matching accuracy averaged over IoU 0.1 ... 0.9;
:func:`search_thresholds` runs the same search for any other score (e.g. clicked points,
:mod:`.point_tuning`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from .scores import IOU_THRESHOLDS, MatchScores, pooled_scores

NMS_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)
#: Probabilities tried, from high to low (low ones mean many candidates and a slow NMS).
PROB_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
#: Probability offsets tried around the best coarse value.
PROB_REFINE = (-0.075, -0.05, -0.025, 0.025, 0.05, 0.075)
#: The descent over PROB_GRID stops after this many values in a row score clearly
#: (DROP) below the best of this NMS value: accuracy has passed its peak.
PATIENCE, DROP = 2, 0.01


@dataclass(frozen=True)
class ThresholdChoice:
    """The best threshold pair found and its pooled scores."""

    prob: float
    nms: float
    scores: MatchScores

    @property
    def objective(self) -> float:
        return self.scores.mean("accuracy")


def search_thresholds(
    score: Callable[[float, float], float],
    *,
    min_prob: float = 0.05,
) -> Generator[int, None, tuple[float, float]]:
    """Grid search (then a finer probability search) maximising ``score(prob, nms)``.

    For each NMS value the probability threshold descends from 0.9 until the score has
    clearly passed its peak, so the slow, low thresholds are only tried where they help.
    Thresholds are rounded to 4 decimals; each pair is scored once; probabilities below
    ``min_prob`` are not tried; ties go to the pair tried first. Yields the number of
    threshold pairs evaluated so far; returns the best ``(prob, nms)``.
    """
    tried: dict[tuple[float, float], float] = {}

    def evaluate(prob: float, nms: float) -> float:
        key = (round(prob, 4), round(nms, 4))
        if key not in tried:
            tried[key] = score(*key)
        return tried[key]

    def best() -> tuple[float, float]:
        return max(tried.items(), key=lambda item: item[1])[0]

    for nms in NMS_GRID:
        best_here, worse = -1.0, 0
        for prob in (p for p in PROB_GRID if p >= min_prob):
            value = evaluate(prob, nms)
            yield len(tried)
            best_here = max(best_here, value)
            worse = worse + 1 if value < best_here - DROP else 0
            if worse == PATIENCE:
                break
    prob0, nms0 = best()
    for offset in PROB_REFINE:
        if min_prob <= prob0 + offset < 1.0:
            evaluate(prob0 + offset, nms0)
            yield len(tried)
    return best()


def tune_thresholds_on_outputs(
    labels_for: Sequence[Callable[[float, float], np.ndarray]],
    y_true: Sequence[np.ndarray],
    *,
    min_prob: float = 0.05,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> Generator[int, None, ThresholdChoice]:
    """:func:`search_thresholds` maximising mean pooled accuracy against ``y_true``.

    ``labels_for[i](prob, nms)`` returns the label volume of volume ``i`` (e.g. a bound
    ``InstanceSolver.labels``); probabilities below ``min_prob`` are not tried. Yields the
    number of threshold pairs evaluated so far; returns the best pair.
    """
    if len(labels_for) != len(y_true) or not y_true:
        raise ValueError("need one label function per reference volume (at least one)")
    scores: dict[tuple[float, float], MatchScores] = {}

    def score(prob: float, nms: float) -> float:
        predicted = [f(prob, nms) for f in labels_for]
        scores[prob, nms] = pooled_scores(y_true, predicted, iou_thresholds)
        return scores[prob, nms].mean("accuracy")

    prob, nms = yield from search_thresholds(score, min_prob=min_prob)
    return ThresholdChoice(prob=prob, nms=nms, scores=scores[prob, nms])
