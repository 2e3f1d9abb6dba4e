"""Training data plumbing: pool schedule, patches, targets, pairing, settings (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_anystar.train import TrainSettings
from napari_anystar.train.configs import CONFIGS, FINETUNE_LR_FACTOR
from napari_anystar.train.data import load_pairs, make_targets, pair_folders, sample_patch
from napari_anystar.train.pool import PoolSchedule, SamplePool
from napari_anystar.train.recipe import make_recipe


def spheres_volume(shape=(32, 32, 32), n=3, seed=0):
    """A label volume of ``n`` non-overlapping balls and its bright noisy image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    zz, yy, xx = np.indices(shape)
    for i in range(1, n + 1):
        r = rng.uniform(4, 6)
        c = rng.uniform(r + 1, np.array(shape) - r - 1)
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r**2
        labels[ball & (labels == 0)] = i
    image = (labels > 0) * 0.8 + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), labels


def test_pool_schedule_refreshes_round_robin():
    schedule = PoolSchedule(size=3, refresh=2)
    assert schedule.indices_at(0) == [0, 1, 2]
    assert schedule.indices_at(1) == [0, 1, 2]
    assert schedule.indices_at(2) == [3, 1, 2]
    assert schedule.indices_at(4) == [3, 4, 2]
    assert schedule.indices_at(8) == [6, 4, 5]
    for step in range(40):
        current = schedule.indices_at(step)
        assert len(set(current)) == 3
        assert max(current) == 2 + step // 2
    assert schedule.upcoming(4, 2) == [5, 6]
    assert PoolSchedule(size=3, refresh=0).indices_at(1000) == [0, 1, 2]
    assert PoolSchedule(size=3, refresh=0).upcoming(10, 4) == []


def test_batches_depend_only_on_the_step(tmp_path):
    """A stream started at step k (resume) yields the batches an uninterrupted one does."""
    from stardist import Rays_GoldenSpiral

    from napari_anystar.synth import SynthSettings
    from napari_anystar.train.stream import BatchStream

    small = SynthSettings(size=32, grid_size=64, mean_radius=6.0, pad_choices=(0, 16))
    schedule = PoolSchedule(size=2, refresh=2)
    real = [spheres_volume(seed=s) for s in range(2)]

    def stream(start):
        pool = SamplePool("as-mix", 5, small, tmp_path / f"cache{start}", workers=0)
        return pool, BatchStream(start=start, total=6, seed=1, batch_size=2, patch=16,
                                 rays=Rays_GoldenSpiral(8), grid=(2, 2, 2),
                                 synthetic_fraction=0.5, pool=pool, schedule=schedule,
                                 real=real)

    pool_a, a = stream(0)
    pool_b, b = stream(4)
    try:
        batches = [a.next(step) for step in range(6)]
        for step in (4, 5):
            x, (prob, dist) = b.next(step)
            np.testing.assert_array_equal(x, batches[step][0])
            np.testing.assert_array_equal(prob, batches[step][1][0])
            np.testing.assert_array_equal(dist, batches[step][1][1])
        assert batches[0][0].shape == (2, 16, 16, 16, 1)
        assert batches[0][1][1].shape == (2, 8, 8, 8, 9)
        assert not np.array_equal(batches[0][0], batches[1][0])
    finally:
        for closing in (a, b, pool_a, pool_b):
            closing.close()


def test_targets_match_stardist_data_generator():
    from stardist import Rays_GoldenSpiral
    from stardist.models.model3d import StarDistData3D

    image, labels = spheres_volume()
    rays, grid = Rays_GoldenSpiral(16), (2, 2, 2)
    data = StarDistData3D([image], [labels], batch_size=1, rays=rays, length=1,
                          patch_size=(32, 32, 32), grid=grid)
    (x,), (prob_ref, dist_ref) = data[0]
    prob, dist = make_targets([labels], rays, grid)
    np.testing.assert_array_equal(x[0, ..., 0], image)
    assert prob.shape == prob_ref.shape == (1, 16, 16, 16, 1)
    assert dist.shape == dist_ref.shape == (1, 16, 16, 16, 17)
    np.testing.assert_allclose(prob, prob_ref, atol=1e-6)
    np.testing.assert_allclose(dist, dist_ref, atol=1e-5)


def test_negative_labels_switch_the_loss_off():
    from stardist import Rays_GoldenSpiral

    _, labels = spheres_volume()
    labels[:, :, :8] = -1
    prob, dist = make_targets([labels], Rays_GoldenSpiral(16), (2, 2, 2))
    assert np.all(prob[0, :, :, :4] == -1)
    assert np.all(prob[0, :, :, 4:] >= 0)
    assert np.all(dist[0, :, :, :4, -1] == 0)


def test_sample_patch_pads_crops_and_is_reproducible():
    image, labels = spheres_volume(shape=(20, 40, 40))
    x, y = sample_patch(image, labels, 32, np.random.default_rng(3), permute_all_axes=False)
    x2, y2 = sample_patch(image, labels, 32, np.random.default_rng(3), permute_all_axes=False)
    assert x.shape == y.shape == (32, 32, 32)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert (y == -1).sum() == 12 * 32 * 32  # padding of the short axis, no loss there
    assert set(np.unique(y[y >= 0])) <= set(np.unique(labels))
    x, y = sample_patch(image, labels, 16, np.random.default_rng(0), permute_all_axes=True,
                        foreground_prob=1.0)
    assert (y > 0).any()


def _write_pair(folder: Path, stem: str, shape=(32, 32, 32), seed=0, image_suffix="_image",
                label_suffix="_labels"):
    image, labels = spheres_volume(shape, seed=seed)
    tifffile.imwrite(folder / f"{stem}{image_suffix}.tif", image)
    tifffile.imwrite(folder / f"{stem}{label_suffix}.tif", labels.astype(np.uint16))


def test_pair_folders_by_suffix_and_by_name(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        image, lbl = spheres_volume(seed=i)
        tifffile.imwrite(images / f"s{i}_image.tif", image)
        tifffile.imwrite(labels / f"s{i}_labels.tif", lbl.astype(np.uint16))
    tifffile.imwrite(images / "same.tif", image)
    tifffile.imwrite(labels / "same.tif", lbl.astype(np.uint16))
    pairs = pair_folders(images, labels)
    assert [(a.name, b.name) for a, b in pairs] == [
        ("s0_image.tif", "s0_labels.tif"), ("s1_image.tif", "s1_labels.tif"),
        ("same.tif", "same.tif"),
    ]
    both = tmp_path / "both"
    both.mkdir()
    _write_pair(both, "a")
    assert [(a.name, b.name) for a, b in pair_folders(both, both)] == [
        ("a_image.tif", "a_labels.tif")
    ]
    (labels / "same.tif").unlink()
    with pytest.raises(ValueError, match=r"same\.tif"):
        pair_folders(images, labels)


def test_load_pairs_rejects_bad_data():
    image, labels = spheres_volume()
    with pytest.raises(ValueError, match="3D"):
        load_pairs([image[0]], [labels[0]])
    with pytest.raises(ValueError, match="differs"):
        load_pairs([image], [labels[:-1]])
    with pytest.raises(ValueError, match="no objects"):
        load_pairs([image], [np.zeros_like(labels)])
    with pytest.raises(ValueError, match="integers"):
        load_pairs([image], [labels + 0.5])
    ((x, y),) = load_pairs([image * 1000 + 50], [labels.astype(np.uint16)])
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0  # ANYSTAR: clipped at the 99.9th percentile
    assert np.mean(x == 1.0) < 0.002


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no training data"),
        ({"generator": "nope"}, "unknown generator"),
        ({"generator": "as-mix", "synthetic_fraction": 0.5}, "needs image/label pairs"),
        ({"generator": "as-mix", "config": "huge"}, "unknown configuration"),
        ({"generator": "as-mix", "steps": 0}, "steps must be at least 1"),
        ({"images": [np.zeros((4, 4, 4))]}, "must pair up"),
    ],
)
def test_settings_validate(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(out_dir=tmp_path / "m", **kwargs).validate()


def test_recipe_defaults(tmp_path, tiny_model_dir):
    recipe = make_recipe(TrainSettings(out_dir=tmp_path, generator="as-mix", config="lite"))
    lite = CONFIGS["lite"]
    assert (recipe.steps, recipe.batch_size, recipe.patch_size) == (lite.steps, 2, 64)
    assert recipe.learning_rate == lite.learning_rate and recipe.synthetic_fraction == 1.0
    assert CONFIGS["paper"].n_rays == 96 and CONFIGS["paper"].unet_n_depth == 5
    assert CONFIGS["paper"].learning_rate == 2e-4 and CONFIGS["paper"].grid == 1
    image, labels = spheres_volume()
    tuned = make_recipe(TrainSettings(out_dir=tmp_path, base_model=tiny_model_dir,
                                      images=[image], labels=[labels], steps=5))
    import json

    base_lr = json.loads((tiny_model_dir / "config.json").read_text())["train_learning_rate"]
    assert tuned.config is None and tuned.base_model == str(tiny_model_dir.resolve())
    assert tuned.learning_rate == pytest.approx(FINETUNE_LR_FACTOR * base_lr)
    assert tuned.steps == 5 and tuned.synthetic_fraction == 0.0
    with pytest.raises(ValueError, match="multiple of 4"):
        make_recipe(TrainSettings(out_dir=tmp_path, generator="as-mix", config="tiny",
                                  patch_size=30))


def test_threshold_tuning_ignores_padding():
    from napari_anystar.train.loop import _labelled_box

    image, labels = spheres_volume(shape=(20, 40, 40))
    x, y = sample_patch(image, labels, 32, np.random.default_rng(0), permute_all_axes=False)
    box_x, box_y = _labelled_box(x, y)
    assert box_x.shape == box_y.shape == (20, 32, 32)
    assert box_y.min() >= 0
