"""Voronoi-Otsu labelling baseline."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.analysis import VoronoiOtsuSettings, voronoi_otsu_labels
from napari_anystar.analysis.voronoi_otsu import blur


def _two_blobs(rng):
    zz, yy, xx = np.mgrid[:40, :40, :60]
    truth = np.zeros(zz.shape, np.int32)
    for k, centre in enumerate([(20, 20, 15), (20, 20, 45)], start=1):
        dist2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
        truth[dist2 <= 8 ** 2] = k
    image = (truth > 0) * 100.0 + rng.normal(0, 10, truth.shape)
    return image.astype(np.float32), truth


def test_separate_blobs_get_one_label_each():
    image, truth = _two_blobs(np.random.default_rng(0))
    labels = voronoi_otsu_labels(image, VoronoiOtsuSettings(spot_sigma=3, outline_sigma=1))
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert len(np.unique(labels)) - 1 == 2
    for k in (1, 2):
        found = np.bincount(labels[truth == k]).argmax()
        assert found > 0
        inter = np.sum((labels == found) & (truth == k))
        union = np.sum((labels == found) | (truth == k))
        assert inter / union > 0.8


def test_constant_image_gives_no_objects():
    labels = voronoi_otsu_labels(np.full((16, 16, 16), 7.0))
    assert labels.shape == (16, 16, 16) and labels.max() == 0


def test_blur_is_isotropic_in_space():
    delta = np.zeros((41, 41, 41), np.float32)
    delta[20, 20, 20] = 1.0
    out = blur(delta, 4.0, voxel_size=(2.0, 1.0, 1.0))
    coords = np.arange(41) - 20
    var_z = np.sum(out.sum(axis=(1, 2)) * coords ** 2) / out.sum()
    var_x = np.sum(out.sum(axis=(0, 1)) * coords ** 2) / out.sum()
    assert np.sqrt(var_z) == pytest.approx(2.0, rel=0.05)  # 4 X-voxels = 2 Z-voxels
    assert np.sqrt(var_x) == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((8, 8)), "3D"),
    (np.full((8, 8, 8), np.nan), "NaN"),
])
def test_bad_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        voronoi_otsu_labels(image)


def test_negative_sigma_is_refused():
    with pytest.raises(ValueError, match="spot_sigma"):
        voronoi_otsu_labels(np.zeros((8, 8, 8)), VoronoiOtsuSettings(spot_sigma=-1))
