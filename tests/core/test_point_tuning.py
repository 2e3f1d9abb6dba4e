"""Point matching rule, its scoring region and F1, and the threshold search on clicked points."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import drain
from napari_anystar.analysis.evaluate import object_centroids
from napari_anystar.analysis.point_tuning import (
    PointCounts,
    clicked_points,
    point_counts,
    pooled_point_counts,
    tune_thresholds_on_points,
)
from napari_anystar.analysis.tuning import NMS_GRID, PROB_GRID, search_thresholds

SHAPE = (20, 30, 40)


def _objects():
    """Five boxes: 1 and 2 are clicked (2 twice), 3 and 4 are not; 5 lies far away."""
    labels = np.zeros(SHAPE, np.int32)
    labels[2:6, 2:6, 2:6] = 1  # centroid (3.5, 3.5, 3.5)
    labels[2:6, 10:14, 10:14] = 2
    labels[8:12, 4:8, 4:8] = 3  # centroid (9.5, 5.5, 5.5): inside the clicks' box
    labels[2:4, 20:26, 2:4] = 4  # centroid (2.5, 22.5, 2.5): outside it (y > 12)
    labels[15:19, 25:29, 35:39] = 5  # far from every click
    return labels


CLICKS = np.array([[3.0, 3.0, 3.0],  # object 1: true positive
                   [3.0, 11.0, 11.0], [4.0, 12.0, 12.0],  # object 2: 1 TP + 1 FN (merge)
                   [12.0, 1.0, 1.0]])  # background: false negative


def test_matching_rule_counts_hits_merges_misses_and_unclicked_objects_in_the_box():
    points = clicked_points(CLICKS, SHAPE)
    assert (points.region.lo, points.region.hi) == ((3, 1, 1), (12, 12, 12))
    counts = point_counts(_objects(), points)
    # TP: objects 1 and 2; FN: the merge and the background click; FP: object 3 only
    assert counts == PointCounts(tp=2, fp=1, fn=2)
    assert counts.f1 == pytest.approx(4 / 7)


def test_whole_volume_region_counts_every_unclicked_object():
    points = clicked_points(CLICKS, SHAPE, whole_volume=True)
    assert (points.region.lo, points.region.hi) == ((0, 0, 0), (19, 29, 39))
    assert point_counts(_objects(), points) == PointCounts(tp=2, fp=3, fn=2)


def test_a_perfect_segmentation_scores_one_and_an_empty_one_zero():
    labels = _objects()
    points = clicked_points(object_centroids(labels)[1], SHAPE, whole_volume=True)
    assert point_counts(labels, points) == PointCounts(tp=5, fp=0, fn=0)
    assert point_counts(labels, points).f1 == 1.0
    empty = point_counts(np.zeros(SHAPE, np.int32), points)
    assert empty == PointCounts(tp=0, fp=0, fn=5) and empty.f1 == 0.0


def test_points_round_to_the_nearest_voxel():
    labels = np.zeros(SHAPE, np.int32)
    labels[5, 5, 5] = 1
    assert point_counts(labels, clicked_points([[4.6, 5.4, 5.0]], SHAPE)).tp == 1
    assert point_counts(labels, clicked_points([[4.4, 5.0, 5.0]], SHAPE)).tp == 0


@pytest.mark.parametrize("coords, message", [
    ([[-0.6, 1.0, 1.0]], "1 of 1 points lie outside the volume"),
    ([[1.0, 1.0, 1.0], [19.5, 1.0, 1.0], [1.0, 1.0, 40.0]], "2 of 3 points lie outside"),
    (np.zeros((0, 3)), "no points"),
    ([[1.0, 1.0]], "must be 3D"),
    ([[1.0, np.nan, 1.0]], "non-finite"),
])
def test_bad_points_are_refused_with_a_message(coords, message):
    with pytest.raises(ValueError, match=message):
        clicked_points(coords, SHAPE)


def test_counts_pool_over_volumes_before_the_ratio():
    labels = _objects()
    a = clicked_points(CLICKS, SHAPE)
    b = clicked_points(CLICKS[:1], SHAPE)  # one click in object 1, a one-voxel box: TP only
    assert point_counts(labels, b) == PointCounts(tp=1)
    pooled = pooled_point_counts([labels, labels], [a, b])
    assert pooled == PointCounts(tp=3, fp=1, fn=2)
    assert pooled.f1 == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="one set of points per label volume"):
        pooled_point_counts([labels], [a, b])


def _scene():
    """Objects 1 and 2 are real (probability 0.45 and 0.7); 3 and 4 false (0.35 and 0.32).
    With NMS above 0.45, objects 1 and 2 merge into one."""
    objects = [(0.45, (slice(2, 8), slice(2, 8), slice(2, 8))),
               (0.7, (slice(2, 8), slice(8, 14), slice(2, 8))),
               (0.35, (slice(12, 18), slice(2, 8), slice(2, 8))),
               (0.32, (slice(12, 18), slice(20, 26), slice(30, 36)))]

    def labels_for(prob, nms):
        out = np.zeros(SHAPE, np.int32)
        for k, (p, box) in enumerate(objects, start=1):
            if p > prob:
                out[box] = 1 if nms > 0.45 and k == 2 else k
        return out

    clicks = clicked_points([[5.0, 5.0, 5.0], [5.0, 11.0, 5.0]], SHAPE, whole_volume=True)
    return labels_for, clicks


def test_search_on_points_keeps_exactly_the_clicked_objects_unmerged():
    labels_for, clicks = _scene()
    progress, choice = drain(tune_thresholds_on_points([labels_for], [clicks]))
    assert 0.35 <= choice.prob < 0.45 and choice.nms <= 0.45
    assert choice.counts == PointCounts(tp=2) and choice.objective == 1.0
    assert progress == list(range(1, len(progress) + 1)) and len(progress) >= 5 * 7
    # the box region ignores object 4 (outside the clicks' box) but not object 3 ...
    box = clicked_points(clicks.voxels, SHAPE)
    counts = point_counts(labels_for(0.3, 0.3), box)
    assert counts == PointCounts(tp=2, fp=0, fn=0)  # object 3's centroid (14.5, ...) is out
    assert point_counts(labels_for(0.3, 0.3), clicks) == PointCounts(tp=2, fp=2, fn=0)


def test_search_maximises_any_score_and_respects_the_floor():
    tried = []

    def score(prob, nms):
        tried.append((prob, nms))
        return -abs(prob - 0.43) - abs(nms - 0.5)

    _, (prob, nms) = drain(search_thresholds(score))
    assert nms == 0.5 and prob == pytest.approx(0.425)
    assert len(tried) == len(set(tried))  # each pair scored once
    assert {n for _, n in tried} == set(NMS_GRID) and 0.9 in {p for p, _ in tried}
    assert 0.2 in {p for p, _ in tried} and 0.1 not in {p for p, _ in tried}  # early stop
    tried.clear()
    drain(search_thresholds(score, min_prob=0.45))
    assert min(p for p, _ in tried) >= 0.45 and len(tried) < len(NMS_GRID) * len(PROB_GRID)
