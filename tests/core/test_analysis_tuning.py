"""Threshold search on cached outputs."""

from __future__ import annotations

import numpy as np

from conftest import drain
from napari_anystar.analysis import tune_thresholds_on_outputs


def _scene():
    """Reference: cubes with 'probability' 0.45 and 0.7; false objects at 0.35 and 0.32."""
    truth = np.zeros((30, 30, 30), np.int32)
    truth[2:10, 2:10, 2:10] = 1
    truth[15:25, 15:25, 15:25] = 2
    objects = [(0.45, (slice(2, 10),) * 3), (0.7, (slice(15, 25),) * 3),
               (0.35, (slice(2, 10), slice(20, 28), slice(2, 10))),
               (0.32, (slice(20, 28), slice(2, 10), slice(2, 10)))]

    def labels_for(prob, nms):
        out = np.zeros_like(truth)
        for k, (p, box) in enumerate(objects, start=1):
            if p > prob:
                out[box] = k
        return out

    return truth, labels_for


def test_finds_the_probability_that_keeps_exactly_the_true_objects():
    truth, labels_for = _scene()
    progress, choice = drain(tune_thresholds_on_outputs([labels_for], [truth]))
    assert 0.35 <= choice.prob < 0.45
    assert choice.objective == 1.0
    assert choice.scores.n_pred == 2
    assert progress == list(range(1, len(progress) + 1)) and len(progress) >= 5 * 7


def test_never_tries_probabilities_below_the_floor():
    truth, labels_for = _scene()
    tried = []

    def spy(prob, nms):
        tried.append(prob)
        return labels_for(prob, nms)

    drain(tune_thresholds_on_outputs([spy], [truth], min_prob=0.35))
    assert min(tried) >= 0.35


def test_descent_stops_once_accuracy_has_passed_its_peak():
    truth, labels_for = _scene()
    tried = []

    def spy(prob, nms):
        tried.append(round(prob, 3))
        return labels_for(prob, nms)

    drain(tune_thresholds_on_outputs([spy], [truth]))
    assert 0.3 in tried and 0.2 in tried  # two values below the peak (0.4) ...
    assert 0.1 not in tried  # ... and the descent stops
