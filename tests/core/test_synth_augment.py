"""A(.): the hand-written steps equal MONAI's transforms; outputs keep the invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_anystar.synth import augment as aug


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).random((20, 24, 22)).astype(np.float32)


@pytest.fixture(scope="module")
def monai_transforms():
    from monai.data import get_track_meta, set_track_meta
    from monai.transforms import GaussianSmooth, GibbsNoise, Zoom

    previous = get_track_meta()
    set_track_meta(False)
    yield GaussianSmooth, GibbsNoise, Zoom
    set_track_meta(previous)


def test_steps_match_monai(volume, monai_transforms):
    smooth, gibbs, zoom = monai_transforms
    expected = np.asarray(gibbs(alpha=0.3)(torch.from_numpy(volume[None])))[0]
    np.testing.assert_allclose(aug._gibbs(volume, 0.3), expected, atol=1e-5)
    for factor in (0.6, 1.3):
        expected = np.asarray(zoom(zoom=factor, mode="trilinear", padding_mode="reflect",
                                   keep_size=True)(torch.from_numpy(volume[None])))[0]
        np.testing.assert_allclose(aug._zoom(volume, volume.copy(), factor)[0], expected,
                                   atol=1e-5)
    sigmas = (0.2, 0.3, 0.1)
    expected = np.asarray(smooth(sigma=sigmas)(torch.from_numpy(volume[None])))[0]
    np.testing.assert_allclose(aug._blur(volume, sigmas), expected, atol=1e-5)


def test_augment_invariants():
    rng = np.random.default_rng(1)
    labels = np.zeros((48, 48, 48), np.int32)
    labels[10:20, 10:20, 10:20] = 3
    labels[25:40, 22:36, 20:38] = 7
    image = np.where(labels > 0, 200.0, 20.0).astype(np.float32)
    for _ in range(3):
        out_image, out_labels = aug.augment(rng, image, labels, 24)
        assert out_image.shape == out_labels.shape == (24, 24, 24)
        assert out_image.dtype == np.float32 and np.isfinite(out_image).all()
        assert out_image.min() >= 0 and out_image.max() <= 1
        assert set(np.unique(out_labels).tolist()) <= {0, 3, 7}  # nearest: no new ids


def test_final_noise_only_on_nonzero_voxels():
    image = np.zeros((16, 16, 16), np.float32)
    image[4:12] = 0.5
    for seed in range(30):
        out = aug.final_noise(np.random.default_rng(seed), image)
        assert (out[image == 0] == 0).all()
        assert out.min() >= 0 and out.max() <= 1
