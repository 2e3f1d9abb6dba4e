"""The paper's AnyStar-mix folder format loads through the registry and predicts.

The official weights are a StarDist 0.8 folder (config.json, thresholds.json,
weights_best.h5) of a depth-5, 32-filter, batch-norm U-Net with 96 rays and grid 1. A
random-weight replica of exactly that architecture, with config.json keys as StarDist 0.8
wrote them, must load with its weights intact and run on a small volume.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_anystar.model import registry

# Config3D keys StarDist 0.9 added after 0.8.5 (0.8 configs lack them; defaults match 0.8).
KEYS_NEW_SINCE_0_8 = ("unet_expansion",)


@pytest.fixture
def paper_replica(tmp_path):
    """(folder, keras weights) of a random-weight AnyStar-mix replica, as saved by StarDist."""
    from stardist import Rays_GoldenSpiral
    from stardist.models import Config3D, StarDist3D

    registry.clear_caches()
    np.random.seed(0)
    config = Config3D(  # the authors' training configuration
        rays=Rays_GoldenSpiral(96, anisotropy=(1, 1, 1)),
        grid=(1, 1, 1),
        anisotropy=(1, 1, 1),
        use_gpu=False,
        n_channel_in=1,
        train_patch_size=(64, 64, 64),
        train_batch_size=1,
        unet_batch_norm=True,
        train_reduce_lr=None,
        train_dist_loss="mae",
        unet_n_depth=5,
        unet_n_filter_base=32,
    )
    model = StarDist3D(config, name="anystar-mix", basedir=str(tmp_path))
    folder = tmp_path / "anystar-mix"
    model.keras_model.save_weights(str(folder / "weights_best.h5"))
    weights = model.keras_model.get_weights()
    del model
    saved = json.loads((folder / "config.json").read_text())
    for key in KEYS_NEW_SINCE_0_8:
        saved.pop(key)
    (folder / "config.json").write_text(json.dumps(saved))
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.5, "nms": 0.3}))
    yield folder, weights
    registry.clear_caches()


def test_paper_architecture_loads_through_registry_and_predicts(paper_replica):
    folder, weights = paper_replica
    config = json.loads((folder / "config.json").read_text())
    assert "unet_expansion" not in config  # written the StarDist 0.8 way
    assert (config["n_rays"], config["grid"], config["n_dim"]) == (96, [1, 1, 1], 3)

    entry = registry.remember_model_folder(folder)
    assert (entry.name, entry.source) == ("anystar-mix", "folder")
    assert registry.default_model() == entry
    assert registry.model_thresholds(entry) == (0.5, 0.3)
    model = registry.load_model(entry)

    conf = model.config
    assert conf.n_rays == 96
    assert tuple(conf.grid) == (1, 1, 1)
    assert (conf.unet_n_depth, conf.unet_n_filter_base, conf.unet_batch_norm) == (5, 32, True)
    assert conf.unet_expansion == 2  # the 0.8 default for the missing key
    assert (model.thresholds.prob, model.thresholds.nms) == (0.5, 0.3)
    loaded = model.keras_model.get_weights()
    assert len(loaded) == len(weights)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, weights, strict=True))

    # smallest volume a depth-5 U-Net takes: 2**5 = 32 voxels per axis
    image = np.random.default_rng(0).random((32, 32, 32)).astype(np.float32)
    prob, dist = model.predict(image)
    assert prob.shape == (32, 32, 32)
    assert dist.shape == (32, 32, 32, 96)
    assert np.isfinite(prob).all() and np.isfinite(dist).all()
    # instance pipeline end to end, with a threshold that keeps the 10 most likely voxels
    thresh = float(np.sort(prob.ravel())[-10]) - 1e-6
    labels, details = model.predict_instances(image, prob_thresh=thresh, nms_thresh=0.3)
    assert labels.shape == image.shape
    assert 1 <= len(details["prob"]) <= 10
    assert len(np.unique(labels)) - 1 <= len(details["prob"])
