"""Training targets and health: fragments as ignore, distance MAE against a constant guess."""

from __future__ import annotations

import numpy as np

from napari_anystar.train.data import make_targets, mark_fragments
from napari_anystar.train.health import distance_mae


def _two_objects():
    labels = np.zeros((32, 32, 32), np.int32)
    labels[4:16, 4:16, 4:16] = 1       # 1728 voxels: an object
    labels[24:27, 24:27, 24:27] = 2    # 27 voxels: a fragment
    return labels


def test_fragments_become_ignore_and_objects_stay():
    labels = _two_objects()
    marked = mark_fragments(labels, 100)
    assert set(np.unique(marked)) == {-1, 0, 1}
    assert np.array_equal(marked == -1, labels == 2)
    assert np.array_equal(marked == 1, labels == 1)
    assert mark_fragments(labels, 0) is labels
    assert np.array_equal(mark_fragments(labels, 10), labels)


def test_ignored_fragments_carry_no_loss_in_the_targets():
    from stardist import Rays_GoldenSpiral

    labels = mark_fragments(_two_objects(), 100)
    prob, dist = make_targets([labels], Rays_GoldenSpiral(16), (2, 2, 2))
    fragment = (slice(12, 14),) * 3  # grid-2 cells of voxels 24..26
    assert (prob[0][fragment] == -1).all()
    assert (dist[0][fragment][..., -1] == 0).all()  # no distance loss there
    assert prob[0][2:8, 2:8, 2:8].max() > 0.5  # the object is still taught


def test_distance_mae_against_a_constant_guess():
    rng = np.random.default_rng(0)
    true = rng.uniform(2, 8, (1, 4, 4, 4, 16)).astype(np.float32)
    mask = np.zeros((1, 4, 4, 4, 1), np.float32)
    mask[0, :2] = 1
    target = np.concatenate([true, mask], axis=-1)
    mae, guess = distance_mae(true, target)
    assert mae == 0.0
    inside = true[0, :2].reshape(-1, 16)
    expected = np.abs(inside - np.median(inside, axis=0)).mean()
    assert np.isclose(guess, expected, rtol=1e-6)
    mae, _ = distance_mae(true + 1.5, target)
    assert np.isclose(mae, 1.5)
    assert np.isnan(distance_mae(true, np.concatenate([true, 0 * mask], -1))[0])
