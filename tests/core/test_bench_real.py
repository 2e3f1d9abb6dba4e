"""``benchmarks/bench_real.py``'s row of scores: one matching per volume gives the pooled
scores, per-volume F1 and the bootstrap interval that separate calls would give."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_anystar.analysis import pooled_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_real import untuned_result, z_cropped


def _cubes(n: int, shift: int = 0) -> np.ndarray:
    labels = np.zeros((20, 40, 40), np.int32)
    for k in range(n):
        z, y, x = 2 + 8 * (k % 2), 2 + 9 * (k // 2 % 4), 2 + 9 * (k // 8)
        labels[z:z + 7, y:y + 7, x + shift:x + shift + 7] = k + 1
    return labels


class _Solver:
    """Stands in for an InstanceSolver: the same labels at every threshold pair."""

    def __init__(self, labels: np.ndarray) -> None:
        self._labels = labels

    def labels(self, prob: float, nms: float) -> np.ndarray:
        return self._labels


def test_untuned_row_equals_separate_scores():
    truth = [_cubes(10), _cubes(6), _cubes(4)]
    pred = [_cubes(9, 1), _cubes(6, 3), _cubes(4)]
    pairs = [(name, None, t) for name, t in zip("abc", truth, strict=True)]
    refined = []

    def refine(labels):  # a refiner is applied to the solver's labels
        refined.append(labels)
        return labels

    row = untuned_result(0.5, 0.3, pairs, [_Solver(p) for p in pred], [None, refine, None])
    assert len(refined) == 1 and refined[0] is pred[1]
    expected = pooled_scores(truth, pred).to_dict()
    assert {k: row[k] for k in expected} == expected
    assert (row["prob"], row["nms"]) == (0.5, 0.3)
    assert row["per_volume_f1_at_iou_0.5"] == {
        name: round(pooled_scores([t], [p], (0.5,)).f1[0], 3)
        for name, t, p in zip("abc", truth, pred, strict=True)}
    assert row["per_volume_f1_at_iou_0.5"]["c"] == 1.0
    low, high = row["mean_accuracy_ci95"]
    assert low <= expected["mean_accuracy"] <= high and low < high
    assert row["mean_accuracy"] == pytest.approx(expected["mean_accuracy"])


def test_z_slices_keep_the_middle_of_each_stack_with_its_labels():
    image = np.arange(20)[:, None, None] * np.ones((20, 40, 40))
    labels = _cubes(3)
    short = (np.ones((5, 4, 4)), np.ones((5, 4, 4), np.int32))
    cropped = z_cropped([("a", image, labels), ("b", *short)], 8)
    (name, im, lb), (_, im_short, lb_short) = cropped
    assert name == "a" and im.shape == lb.shape == (8, 40, 40)
    assert np.array_equal(im[:, 0, 0], np.arange(6, 14))  # slices 6..13 of 20
    assert np.array_equal(lb, labels[6:14])
    assert im_short.shape == (5, 4, 4) and lb_short.shape == (5, 4, 4)  # fewer: kept whole
    assert z_cropped(cropped, None) is cropped
