"""Evaluation of predicted labels against ground truth: scores, regions, errors, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from stardist.matching import matching, matching_dataset

from napari_anystar.analysis import IOU_THRESHOLDS, METRICS, pooled_scores
from napari_anystar.analysis.evaluate import (
    BOTH,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    Box,
    annotated_box,
    as_labels,
    box_from_points,
    check_pair,
    error_ids,
    evaluate_pair,
    object_centroids,
    restrict,
    restrict_pair,
)

SHAPE = (24, 40, 64)


def cube(labels, corner, value, size=10):
    z, y, x = corner
    labels[z:z + size, y:y + size, x:x + size] = value


def known_pair():
    """Truth ids 1-4; prediction: 1 exact (IoU 1), 2 shifted 5 in x (IoU 1/3), 3 shifted 2
    (IoU 2/3), 4 missed, and one object where there is none. Prediction ids are not 1..n."""
    truth = np.zeros(SHAPE, np.uint16)
    pred = np.zeros(SHAPE, np.int32)
    for value, corner in enumerate([(2, 2, 2), (2, 2, 20), (2, 20, 2), (12, 20, 40)], start=1):
        cube(truth, corner, value)
    cube(pred, (2, 2, 2), 7)
    cube(pred, (2, 2, 25), 42)
    cube(pred, (2, 20, 4), 3)
    cube(pred, (12, 2, 45), 100)
    return truth, pred


def test_known_counts_per_threshold():
    truth, pred = known_pair()
    result = evaluate_pair(truth, pred)
    scores = result.scores
    # TP at IoU <= 1/3: 3 (FP 1, FN 1); at 0.4-0.6: 2 (FP 2, FN 2); at 0.7-0.9: 1 (FP 3, FN 3)
    tp = [3, 3, 3, 2, 2, 2, 1, 1, 1]
    assert scores.accuracy == pytest.approx([t / (t + 2 * (4 - t)) for t in tp])
    assert scores.precision == pytest.approx([t / 4 for t in tp])
    assert scores.recall == pytest.approx([t / 4 for t in tp])
    assert (scores.n_true, scores.n_pred) == (4, 4)
    assert result.false_positives == (42, 100)
    assert result.false_negatives == (2, 4)
    assert (result.ignored_true, result.ignored_pred) == (0, 0)


def test_per_volume_scores_equal_stardist_matching():
    truth, pred = known_pair()
    scores = evaluate_pair(truth, pred).scores
    reference = matching(truth, pred, thresh=list(IOU_THRESHOLDS))
    for metric in METRICS:
        assert getattr(scores, metric) == tuple(float(getattr(s, metric)) for s in reference)


def test_pooled_scores_equal_matching_dataset_over_restricted_pairs():
    truth_a, pred_a = known_pair()
    truth_b = np.zeros(SHAPE, np.int32)
    cube(truth_b, (5, 5, 5), 1)
    cube(truth_b, (5, 25, 40), 2)
    pred_b = np.roll(truth_b, 3, axis=2)
    pairs = [restrict_pair(t, p) for t, p in ((truth_a, pred_a), (truth_b, pred_b))]
    pooled = pooled_scores([p.truth for p in pairs], [p.pred for p in pairs])
    reference = matching_dataset([truth_a, truth_b], [pred_a, pred_b], thresh=IOU_THRESHOLDS,
                                 by_image=False, show_progress=False)
    for metric in METRICS:
        assert getattr(pooled, metric) == pytest.approx([getattr(s, metric) for s in reference])
    assert pooled.n_true == 6


def test_error_map_colours_false_positives_negatives_and_overlaps():
    truth, pred = known_pair()
    errors = evaluate_pair(truth, pred).errors
    assert errors.dtype == np.uint8 and errors.shape == SHAPE
    assert errors[5, 5, 5] == 0  # matched
    assert errors[5, 5, 27] == BOTH  # truth 2 and its shifted prediction 42 overlap
    assert errors[5, 5, 21] == FALSE_NEGATIVE  # truth 2 only
    assert errors[5, 5, 33] == FALSE_POSITIVE  # prediction 42 only
    assert np.all(errors[12:22, 20:30, 40:50] == FALSE_NEGATIVE)  # missed truth 4
    assert np.all(errors[12:22, 2:12, 45:55] == FALSE_POSITIVE)  # spurious prediction 100
    assert errors[5, 25, 5] == 0  # truth 3 matched at IoU 2/3


def test_error_ids_follow_the_chosen_iou():
    truth, pred = known_pair()
    assert error_ids(truth, pred, 0.3) == ((100,), (4,))
    assert error_ids(truth, pred, 0.7) == ((3, 42, 100), (2, 3, 4))
    assert error_ids(truth, np.zeros_like(pred), 0.5) == ((), (1, 2, 3, 4))


def test_annotated_region_ignores_objects_whose_centre_lies_outside():
    truth = np.zeros(SHAPE, np.int32)
    cube(truth, (2, 2, 2), 1)
    cube(truth, (2, 2, 20), 2)  # annotated region: z 2-11, y 2-11, x 2-29
    pred = np.zeros(SHAPE, np.int32)
    cube(pred, (2, 2, 2), 1)
    cube(pred, (2, 2, 24), 2)  # centre x 28.5 inside: kept whole, IoU 6/14
    cube(pred, (2, 2, 34), 3)  # outside the annotated box in x: ignored
    cube(pred, (14, 20, 40), 4)  # outside in every axis: ignored
    assert annotated_box(truth) == Box((2.0, 2.0, 2.0), (11.0, 11.0, 29.0))
    result = evaluate_pair(truth, pred, "annotated")
    assert (result.ignored_true, result.ignored_pred) == (0, 2)
    assert (result.scores.n_true, result.scores.n_pred) == (2, 2)
    kept = np.where(pred > 2, 0, pred)
    reference = matching(truth, kept, thresh=list(IOU_THRESHOLDS))
    assert result.scores.accuracy == tuple(float(s.accuracy) for s in reference)
    assert result.false_positives == (2,) and result.false_negatives == (2,)
    assert np.all(result.errors[pred > 2] == 0)  # ignored objects are not errors
    assert evaluate_pair(truth, pred).scores.n_pred == 4  # the whole volume keeps them


def test_boxes_restrict_truth_and_prediction():
    truth, pred = known_pair()
    box = box_from_points(np.array([[0.0, 15.0], [30.0, 63.0]]), 3)  # y 0-30, x 15-63, any z
    assert box == Box((-np.inf, 0.0, 15.0), (np.inf, 30.0, 63.0))
    result = evaluate_pair(truth, pred, [box])
    # kept: truth 2 (centre x 24.5), 4 (x 44.5); prediction 42 (x 29.5), 100 (x 49.5)
    assert (result.ignored_true, result.ignored_pred) == (2, 2)
    assert result.scores.accuracy[0] == pytest.approx(1 / 3)  # 42 matches 2 at IoU 1/3
    assert result.false_negatives == (2, 4) and result.false_positives == (42, 100)


def test_box_from_points_leaves_flat_and_missing_axes_unrestricted():
    flat = box_from_points(np.array([[5.0, 1.0, 2.0], [5.3, 9.0, 20.0]]), 3)
    assert flat == Box((-np.inf, 1.0, 2.0), (np.inf, 9.0, 20.0))
    deep = box_from_points(np.array([[3.0, 1.0, 2.0], [8.0, 9.0, 20.0]]), 3)
    assert deep == Box((3.0, 1.0, 2.0), (8.0, 9.0, 20.0))
    assert list(deep.contains(np.array([[3, 1, 2], [8.5, 5, 5], [5, 5, 20]]))) == [
        True, False, True]
    with pytest.raises(ValueError, match="points"):
        box_from_points(np.zeros((0, 3)), 3)


@pytest.mark.parametrize("offset", [0, 10**9])
def test_centroids_match_scipy(offset):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, (7, 9, 11)).astype(np.uint64)
    labels[labels > 0] += offset
    ids, centroids = object_centroids(labels)
    assert list(ids) == [offset + k for k in range(1, 6)]
    expected = ndi.center_of_mass(np.ones(labels.shape), labels, ids)
    np.testing.assert_allclose(centroids, expected)


def test_restrict_never_changes_its_input():
    truth, _ = known_pair()
    before = truth.copy()
    kept, removed = restrict(truth, [Box((0, 0, 0), (23, 15, 15))])
    assert removed == 3 and set(np.unique(kept)) == {0, 1}
    np.testing.assert_array_equal(truth, before)
    assert kept.dtype == truth.dtype


def test_bad_input_gives_one_line_reasons():
    truth, pred = known_pair()
    with pytest.raises(ValueError, match=r"pred.tif has shape \(24, 40, 63\) but gt.tif"):
        check_pair(truth, pred[..., :-1], "gt.tif", "pred.tif")
    with pytest.raises(ValueError, match="whole numbers"):
        as_labels(np.full((4, 4), 0.5), "x")
    with pytest.raises(ValueError, match="negative"):
        as_labels(-np.ones((4, 4), np.int8), "x")
    with pytest.raises(ValueError, match="1D"):
        as_labels(np.ones(4, np.int8), "x")
    np.testing.assert_array_equal(as_labels(np.ones((2, 2), np.float32), "x"), 1)
    with pytest.raises(ValueError, match="prediction is empty"):
        evaluate_pair(truth, np.zeros_like(pred))
    with pytest.raises(ValueError, match="ground truth is empty"):
        evaluate_pair(np.zeros_like(truth), pred)
    with pytest.raises(ValueError, match="no annotated region"):
        restrict_pair(np.zeros_like(truth), pred, "annotated")
    with pytest.raises(ValueError, match="no object of the ground truth has its centre inside"):
        evaluate_pair(truth, pred, [Box((0, 30, 60), (23, 39, 63))])
    with pytest.raises(ValueError, match="unknown region"):
        evaluate_pair(truth, pred, "everywhere")
