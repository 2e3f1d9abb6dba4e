"""Pooled matching scores over IoU 0.1 ... 0.9."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.analysis import IOU_THRESHOLDS, pooled_scores


def _cubes(shape, corners, size=10):
    labels = np.zeros(shape, np.int32)
    for k, (z, y, x) in enumerate(corners, start=1):
        labels[z:z + size, y:y + size, x:x + size] = k
    return labels


def test_thresholds_are_the_papers():
    assert IOU_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_identical_labels_score_one_everywhere():
    truth = _cubes((32, 32, 32), [(1, 1, 1), (15, 15, 15)])
    scores = pooled_scores([truth], [truth.copy()])
    for metric in ("accuracy", "f1", "precision", "recall"):
        assert getattr(scores, metric) == (1.0,) * 9
        assert scores.mean(metric) == 1.0
    assert (scores.n_true, scores.n_pred) == (2, 2)


def test_iou_of_a_shifted_cube_decides_which_thresholds_match():
    truth = _cubes((32, 32, 32), [(5, 5, 5)])
    shifted = _cubes((32, 32, 32), [(5, 5, 10)])  # overlap 500, union 1500: IoU 1/3
    scores = pooled_scores([truth], [shifted])
    assert scores.accuracy == (1.0, 1.0, 1.0, 0, 0, 0, 0, 0, 0)
    assert scores.mean("accuracy") == pytest.approx(3 / 9)


def test_counts_are_pooled_over_volumes_not_averaged():
    perfect = _cubes((32, 32, 32), [(1, 1, 1), (15, 1, 1), (1, 15, 15)])
    missed = _cubes((32, 32, 32), [(5, 5, 5)])
    scores = pooled_scores([perfect, missed], [perfect, np.zeros_like(missed)])
    assert scores.recall[4] == pytest.approx(3 / 4)  # per-volume mean would be 0.5
    assert scores.precision[4] == 1.0
    assert scores.accuracy[4] == pytest.approx(3 / 4)
    assert scores.f1[4] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert (scores.n_true, scores.n_pred) == (4, 3)


def test_dict_has_means_and_lists():
    truth = _cubes((20, 20, 20), [(2, 2, 2)])
    out = pooled_scores([truth], [truth]).to_dict()
    assert out["iou_thresholds"] == list(IOU_THRESHOLDS)
    assert out["mean_f1"] == 1.0 and len(out["recall"]) == 9


def test_mismatched_inputs_are_refused():
    a = np.zeros((8, 8, 8), np.int32)
    with pytest.raises(ValueError, match="shape"):
        pooled_scores([a], [np.zeros((8, 8, 9), np.int32)])
    with pytest.raises(ValueError, match="equally many"):
        pooled_scores([a, a], [a])


def test_pooled_scores_equal_stardists_matching_dataset():
    """Counting per volume and pooling the counts gives ``matching_dataset(by_image=False)``'s
    scores, including volumes without predictions or without reference objects."""
    from stardist.matching import matching_dataset

    from napari_anystar.analysis.scores import match_counts, scores_from_counts

    rng = np.random.default_rng(3)

    def blobs(n: int) -> np.ndarray:
        labels = np.zeros((20, 32, 32), np.int32)
        for k in range(1, n + 1):
            z, y, x = rng.integers(0, 14), rng.integers(0, 24), rng.integers(0, 24)
            d = rng.integers(3, 8, 3)
            labels[z:z + d[0], y:y + d[1], x:x + d[2]] = k
        return labels

    truth = [blobs(6), blobs(9), blobs(4), np.zeros((20, 32, 32), np.int32)]
    shifted = np.roll(truth[0], 2, axis=2)  # IoUs between 0 and 1: scores fall with t
    pred = [shifted, truth[1], np.zeros((20, 32, 32), np.int32), blobs(3)]
    ours = scores_from_counts(match_counts(truth, pred))
    theirs = matching_dataset(truth, pred, thresh=list(IOU_THRESHOLDS), by_image=False,
                              show_progress=False)
    for metric in ("accuracy", "f1", "precision", "recall"):
        assert getattr(ours, metric) == pytest.approx([getattr(s, metric) for s in theirs],
                                                      abs=1e-12), metric
    assert (ours.n_true, ours.n_pred) == (theirs[0].n_true, theirs[0].n_pred)
    assert 0 < ours.accuracy[0] < 1 and ours.accuracy[-1] < ours.accuracy[0]
