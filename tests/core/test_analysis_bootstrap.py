"""Bootstrap intervals over volumes for pooled mean accuracy and paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.analysis.bootstrap import accuracy_interval, mean_accuracy, paired_difference
from napari_anystar.analysis.scores import match_counts, pooled_scores


def _cubes(corners, shape=(24, 24, 48), size=8):
    labels = np.zeros(shape, np.int32)
    for k, (z, y, x) in enumerate(corners, start=1):
        labels[z:z + size, y:y + size, x:x + size] = k
    return labels


TRUTH = _cubes([(2, 2, 2), (2, 12, 20), (12, 2, 36)])
SHIFTED = _cubes([(2, 2, 4), (2, 12, 20), (12, 2, 36)])   # first cube IoU 0.6
MISSED = _cubes([(2, 2, 2)])                                # two nuclei missed


def test_counts_pool_to_the_same_mean_accuracy_as_pooled_scores():
    truth, pred = [TRUTH, TRUTH, TRUTH], [TRUTH, SHIFTED, MISSED]
    counts = match_counts(truth, pred)
    assert counts.shape == (3, 9, 3)
    assert counts[0].tolist() == [[3, 0, 0]] * 9
    assert counts[2].tolist() == [[1, 0, 2]] * 9
    assert mean_accuracy(counts) == pytest.approx(pooled_scores(truth, pred).mean("accuracy"))


def test_identical_volumes_give_a_point_interval_and_mixed_ones_a_spread():
    same = match_counts([TRUTH] * 6, [SHIFTED] * 6)
    interval = accuracy_interval(same)
    assert interval.low == pytest.approx(interval.value) and \
        interval.high == pytest.approx(interval.value)
    mixed = match_counts([TRUTH] * 6, [TRUTH, SHIFTED, MISSED, TRUTH, MISSED, SHIFTED])
    interval = accuracy_interval(mixed)
    assert interval.low < interval.value < interval.high
    assert interval.low >= mean_accuracy(match_counts([TRUTH], [MISSED]))   # worst volume
    assert interval.high <= 1.0
    assert accuracy_interval(mixed) == interval                     # seeded


def test_paired_difference_ranks_only_a_consistent_gain():
    truth = [TRUTH] * 8
    better = match_counts(truth, [TRUTH] * 8)
    worse = match_counts(truth, [SHIFTED] * 4 + [MISSED] * 4)
    assert paired_difference(better, better).to_dict() == {"value": 0, "low": 0, "high": 0}
    gain = paired_difference(better, worse)
    assert gain.value > 0 and gain.low > 0             # A wins on every volume
    # A wins on two volumes by much, loses on six by a little: no ranking
    a = match_counts(truth, [TRUTH, TRUTH] + [SHIFTED] * 6)
    b = match_counts(truth, [MISSED, MISSED] + [TRUTH] * 6)
    mixed = paired_difference(a, b)
    assert mixed.low < 0 < mixed.high
    with pytest.raises(ValueError, match="same volumes"):
        paired_difference(better, better[:4])


def test_mismatched_volumes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        match_counts([TRUTH], [TRUTH[:, :, :40]])
    with pytest.raises(ValueError, match="equally many"):
        match_counts([TRUTH], [])
