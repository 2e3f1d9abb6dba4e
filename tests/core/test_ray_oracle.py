"""The ray-oracle diagnostic: reference rays at the network's candidates, at its scale."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.analysis.ray_oracle import (
    labels_at_network_scale,
    ray_error,
    reference_rays,
    with_reference_rays,
)
from napari_anystar.model.predict import NetworkOutput

SHAPE = (40, 40, 40)
CENTRES = ((12, 12, 12), (26, 28, 26))
RADII = (6, 8)


@pytest.fixture(scope="module")
def rays():
    from stardist.rays3d import Rays_GoldenSpiral

    return Rays_GoldenSpiral(64)


def _balls() -> np.ndarray:
    zz, yy, xx = np.indices(SHAPE)
    labels = np.zeros(SHAPE, np.int32)
    for i, (c, r) in enumerate(zip(CENTRES, RADII, strict=True), start=1):
        labels[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = i
    return labels


def _output(points, dist, prob, scale=None, grid=(2, 2, 2)) -> NetworkOutput:
    scaled = SHAPE if scale is None else tuple(round(s * f) for s, f in zip(SHAPE, scale,
                                                                             strict=True))
    return NetworkOutput(
        image_shape=SHAPE, scaled_shape=scaled, scale=scale, n_tiles=(1, 1, 1), tiles_total=1,
        grid=grid, min_prob=0.1, points=np.asarray(points, np.int64),
        cand_prob=np.asarray(prob, np.float32), cand_dist=np.asarray(dist, np.float32),
        prob=np.zeros(tuple(s // g for s, g in zip(scaled, grid, strict=True)), np.float32))


def test_reference_rays_are_the_radius_at_centres_and_zero_on_background(rays):
    points = [*CENTRES, (2, 36, 2)]   # two ball centres (even: on the grid), one background
    out = _output(points, np.full((3, len(rays)), 2.0), [0.9, 0.8, 0.7])
    ref = reference_rays(out, _balls(), rays)
    assert ref.shape == (3, len(rays))
    for row, r in zip(ref[:2], RADII, strict=True):
        assert np.median(row) == pytest.approx(r, abs=1.0)
        assert np.all(np.abs(row - r) <= 1.5)
    assert np.all(ref[2] == 0)


def test_reference_rays_follow_the_scale_the_network_ran_at(rays):
    scale = (0.5, 0.5, 0.5)
    points = [tuple(c // 2 for c in CENTRES[1])]   # the big ball's centre in scaled voxels
    out = _output(points, np.full((1, len(rays)), 2.0), [0.9], scale=scale)
    assert labels_at_network_scale(out, _balls()).shape == out.scaled_shape
    ref = reference_rays(out, _balls(), rays)
    assert np.median(ref[0]) == pytest.approx(RADII[1] / 2, abs=1.0)
    with pytest.raises(ValueError, match="do not match"):
        reference_rays(out, _balls()[:-1], rays)


def test_each_part_replaces_what_it_says(rays):
    rng = np.random.default_rng(0)
    net = rng.uniform(2, 4, (3, len(rays)))
    out = _output([*CENTRES, (2, 36, 2)], net, [0.9, 0.8, 0.7])
    ref = reference_rays(out, _balls(), rays)
    full = with_reference_rays(out, ref, "rays").cand_dist
    np.testing.assert_allclose(full[:2], ref[:2], atol=1e-5)
    np.testing.assert_allclose(full[2], net[2], rtol=1e-6)   # background keeps its rays
    size = with_reference_rays(out, ref, "size").cand_dist[:2]
    np.testing.assert_allclose(size.mean(1), ref[:2].mean(1), rtol=1e-5)
    np.testing.assert_allclose(size / size.mean(1, keepdims=True),
                               net[:2] / net[:2].mean(1, keepdims=True), rtol=1e-5)
    shape = with_reference_rays(out, ref, "shape").cand_dist[:2]
    np.testing.assert_allclose(shape.mean(1), net[:2].mean(1), rtol=1e-5)
    np.testing.assert_allclose(shape / shape.mean(1, keepdims=True),
                               ref[:2] / ref[:2].mean(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="part must be"):
        with_reference_rays(out, ref, "probability")


def test_ray_error_takes_the_ray_scale_out_and_skips_background_and_weak_candidates(rays):
    out = _output([*CENTRES, (2, 36, 2)], np.zeros((3, len(rays))), [0.9, 0.3, 0.9])
    ref = reference_rays(out, _balls(), rays)
    scaled = with_reference_rays(out, ref * 1.2, "rays")   # predicted 1.2 x too long ...
    exact = ray_error(scaled, ref, prob_thresh=0.5, ray_scale=1.2)   # ... by the ray scale
    assert exact["n"] == 1 and exact["mae"] == pytest.approx(0.0, abs=1e-4)
    off = ray_error(scaled, ref, prob_thresh=0.5)
    assert off["mae"] == pytest.approx(0.2 * ref[0].mean(), rel=1e-4)
    assert off["median_ray_guess_mae"] < 1.0   # a ball: its median ray is nearly every ray
    assert ray_error(scaled, ref, prob_thresh=0.95)["n"] == 0
