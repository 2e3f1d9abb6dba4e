"""Building blocks of the label-map synthesis: Perlin noise, spheres, padding, relabelling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_anystar.synth.labels import (
    density_pad,
    grid_centres,
    make_unique,
    random_spheres,
    spheres_label_map,
)
from napari_anystar.synth.perlin import fractal_perlin, perlin3d


def _fade(t):
    return t * t * t * (t * (t * 6 - 15) + 10)


def test_perlin_matches_textbook_definition():
    """The separable evaluation equals the per-voxel 8-corner Perlin sum."""
    shape, periods = (9, 11, 7), (2.5, 3.0, 1.5)
    noise = perlin3d(shape, periods, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    lattice = tuple(math.floor(p) + 2 for p in periods)
    grads = rng.standard_normal((3, *lattice)).astype(np.float32)
    grads /= np.linalg.norm(grads, axis=0, keepdims=True) + np.float32(1e-12)
    for idx in np.ndindex(*shape):
        pos = [(i + 0.5) * p / n for i, p, n in zip(idx, periods, shape, strict=True)]
        cell = [math.floor(x) for x in pos]
        frac = [x - c for x, c in zip(pos, cell, strict=True)]
        value = 0.0
        for corner in np.ndindex(2, 2, 2):
            weight = 1.0
            for a in range(3):
                weight *= _fade(frac[a]) if corner[a] else 1 - _fade(frac[a])
            g = grads[(slice(None), *[c + o for c, o in zip(cell, corner, strict=True)])]
            value += weight * sum(g[a] * (frac[a] - corner[a]) for a in range(3))
        assert noise[idx] == pytest.approx(value, abs=1e-5)


def test_perlin_properties():
    rng = np.random.default_rng(0)
    noise = perlin3d((32, 32, 32), 4, rng)
    assert noise.dtype == np.float32 and noise.shape == (32, 32, 32)
    assert np.abs(noise).max() <= math.sqrt(3) / 2
    assert noise.std() > 0.05
    # smooth: neighbouring voxels differ much less than the field's range
    assert np.abs(np.diff(noise, axis=0)).mean() < 0.2 * noise.std() * 4
    octaves = fractal_perlin((16, 16, 16), (2, 4, 8), rng)
    assert octaves.shape == (16, 16, 16) and np.isfinite(octaves).all()
    a = perlin3d((8, 8, 8), 2, np.random.default_rng(5))
    b = perlin3d((8, 8, 8), 2, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_grid_centres_follow_recipe():
    centres = grid_centres(128, 12.0)
    assert len(centres) == 64
    assert sorted(set(centres[:, 0].tolist())) == [24, 48, 72, 96]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_spheres_recipe(seed):
    grid = grid_centres(128, 12.0)
    centres, radii = random_spheres(np.random.default_rng(seed), 128, 12.0)
    assert 2 * len(grid) // 3 <= len(centres) < len(grid)
    assert len(radii) == len(centres)
    assert radii.min() >= 0.6 * 12 - 1e-4 and radii.max() <= 1.2 * 12 + 1e-4
    # each centre lies within U(-0.5, 0.5) r_mean of a distinct grid point
    dist = np.abs(centres[:, None, :] - grid[None]).max(-1)
    nearest = dist.argmin(1)
    assert dist.min(1).max() <= 6.0 + 1e-4
    assert len(set(nearest.tolist())) == len(centres)


def test_local_label_map_equals_dense_rule():
    """Per-sphere boxes give exactly the dense rule: closest of the spheres with d_i < r_i."""
    rng = np.random.default_rng(7)
    shape, radius = (48, 48, 48), 6.0
    centres, radii = random_spheres(rng, 48, radius)
    noise = perlin3d(shape, 4, rng)
    labels = spheres_label_map(shape, centres, radii, noise, radius)
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    coords = coords.reshape(-1, 1, 3).astype(np.float32)
    dist = np.linalg.norm(coords - centres[None], axis=-1) + 0.9 * radius * noise.reshape(-1, 1)
    qualifying = np.where(dist < radii[None], dist, np.inf)
    arg = qualifying.argmin(1)
    dense = np.where(np.isfinite(qualifying.min(1)), arg + 1, 0).reshape(shape)
    np.testing.assert_array_equal(labels, dense)
    assert labels.dtype == np.uint16 and labels.max() > 0


def test_density_pad_constant_and_reflect():
    labels = np.zeros((32, 32, 32), np.uint16)
    labels[4:12, 4:12, 4:12] = 1
    labels[20:28, 18:26, 16:24] = 2
    same = density_pad(labels, (0, 0, 0), "reflect")
    np.testing.assert_array_equal(same, labels)
    shrunk = density_pad(labels, (16, 16, 16), "constant")
    assert shrunk.shape == labels.shape
    assert set(np.unique(shrunk).tolist()) == {0, 1, 2}
    assert (shrunk > 0).sum() < (labels > 0).sum()  # objects got smaller
    mirrored = make_unique(density_pad(labels, (16, 0, 0), "reflect"))
    assert mirrored.shape == labels.shape
    assert mirrored.max() > 2  # reflection adds instances
    with pytest.raises(ValueError):
        density_pad(labels, (1, 1, 1), "wrap")


def test_make_unique_splits_same_label_components():
    labels = np.zeros((10, 10, 10), np.uint16)
    labels[0:3, 0:3, 0:3] = 5
    labels[6:9, 6:9, 6:9] = 5  # same id, not touching
    labels[3:6, 0:3, 0:3] = 9  # touches the first block, other id
    out = make_unique(labels)
    assert out.dtype == np.uint16
    assert sorted(np.unique(out).tolist()) == [0, 1, 2, 3]
    assert len(np.unique(out[0:3, 0:3, 0:3])) == 1
    assert out[0, 0, 0] != out[7, 7, 7] != out[4, 0, 0]
    np.testing.assert_array_equal(out > 0, labels > 0)
