"""A(.): the MONAI pipeline in the paper's order; determinism, invariants, label geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_anystar.synth import augment as aug

SIZE = 24
# class names and probabilities of the paper's steps (None: deterministic step)
PAPER_STEPS = [
    ("ScaleIntensityd", None),
    ("RandSpatialCropd", None),
    ("RandZoomd", 1.0),
    ("RandAffined", 1.0),
    ("RandBiasFieldd", 1.0),
    ("RandGaussianNoised", 0.25),
    ("RandKSpaceSpikeNoised", 0.2),
    ("RandAdjustContrastd", 0.8),
    ("RandGaussianSmoothd", 0.8),
    ("RandRicianNoised", 0.2),
    ("RandGibbsNoised", 0.5),
    ("RandGaussianSharpend", 0.25),
    ("RandHistogramShiftd", 0.1),
    ("RandAxisFlipd", 1.0),
    ("OneOf", None),  # RandRotate90d, p=1, in one of the three planes
    ("Rand3DElasticd", 1.0),
    ("ScaleIntensityd", None),
    ("RandCoarseDropoutd", 0.2),
]


@pytest.fixture(scope="module")
def blobs():
    """A 48^3 grid of 7^3 cubes (ids 1..64), bright on a dark background."""
    labels = np.zeros((48, 48, 48), np.int32)
    corners = range(4, 48, 12)
    ids = iter(range(1, 65))
    for z in corners:
        for y in corners:
            for x in corners:
                labels[z : z + 7, y : y + 7, x : x + 7] = next(ids)
    image = np.where(labels > 0, 200.0, 20.0).astype(np.float32)
    return image, labels


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_pipeline_is_monai_in_paper_order():
    pipeline = aug.build_pipeline(SIZE)
    steps = pipeline.transforms
    assert [type(t).__name__ for t in steps] == [name for name, _ in PAPER_STEPS]
    assert all(type(t).__module__.startswith("monai.transforms") for t in steps)
    for step, (name, prob) in zip(steps, PAPER_STEPS, strict=True):
        if prob is not None:
            assert step.prob == pytest.approx(prob), name
    rotations = steps[14].transforms
    assert [type(t).__name__ for t in rotations] == ["RandRotate90d"] * 3
    assert {t.spatial_axes for t in rotations} == {(0, 1), (0, 2), (1, 2)}
    assert all(t.prob == 1.0 for t in rotations)
    assert aug.build_pipeline(SIZE) is pipeline  # built once per process and size


def test_same_seed_same_output_different_seed_differs(blobs):
    image, labels = blobs
    first = aug.augment(np.random.default_rng(5), image, labels, SIZE)
    other = aug.augment(np.random.default_rng(6), image, labels, SIZE)
    again = aug.augment(np.random.default_rng(5), image, labels, SIZE)  # after another call
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_outputs_shapes_dtypes_range(blobs):
    image, labels = blobs
    for seed in range(3):
        out_image, out_labels = aug.augment(np.random.default_rng(seed), image, labels, SIZE)
        assert out_image.shape == out_labels.shape == (SIZE,) * 3
        assert out_image.dtype == np.float32 and out_labels.dtype == np.int32
        assert np.isfinite(out_image).all()
        assert out_image.min() >= 0 and out_image.max() <= 1
        # nearest-neighbour label sampling: no new ids
        assert set(np.unique(out_labels).tolist()) <= set(range(65))


def test_labels_follow_the_image_geometry(blobs):
    """Bright input instances stay where the augmented labels are (most draws)."""
    image, labels = blobs
    aligned = 0
    seeds = range(10, 18)
    for seed in seeds:
        out_image, out_labels = aug.augment(np.random.default_rng(seed), image, labels, SIZE)
        foreground = (out_labels > 0).ravel()
        assert 0 < foreground.sum() < foreground.size
        aligned += np.corrcoef(out_image.ravel(), foreground)[0, 1] > 0.3
    # a label map that missed a spatial step would correlate ~0 with the image
    assert aligned >= len(seeds) - 2


def test_coarse_dropout_same_holes_in_image_and_labels():
    dropout = aug.build_pipeline(SIZE).transforms[-1]
    ones = {key: torch.ones((1, SIZE, SIZE, SIZE)) for key in ("image", "label")}
    for seed in range(100):
        dropout.set_random_state(seed=seed)
        out = dropout(dict(ones))
        holes = out["image"][0] == 0
        if holes.any():
            break
    assert holes.any()
    assert torch.equal(holes, out["label"][0] == 0)
    assert 12**3 <= int(holes.sum()) <= 20 * 12**3


def test_final_noise_only_on_nonzero_voxels():
    image = np.zeros((16, 16, 16), np.float32)
    image[4:12] = 0.5
    changed = 0
    for seed in range(30):
        out = aug.final_noise(np.random.default_rng(seed), image)
        assert (out[image == 0] == 0).all()
        assert out.min() >= 0 and out.max() <= 1
        changed += not np.array_equal(out, image)
    assert 0 < changed < 30  # applied with p=0.2


def test_crop_has_random_size_and_elastic_cuts_the_centre(blobs):
    """As in the reference (MONAI 1.1 defaults): the crop is SIZE..grid per axis, the elastic
    step samples the SIZE^3 output around its centre."""
    image, labels = blobs
    pipeline = aug.build_pipeline(SIZE)
    crop, elastic = pipeline.transforms[1], pipeline.transforms[15]
    data = {"image": torch.from_numpy(image[None]), "label": torch.from_numpy(labels[None] * 1.0)}
    shapes = set()
    for seed in range(12):
        crop.set_random_state(seed=seed)
        shape = tuple(crop(dict(data))["image"].shape[1:])
        assert all(SIZE <= s <= image.shape[0] for s in shape)
        shapes.add(shape)
    assert len(shapes) > 1 and any(max(s) > SIZE for s in shapes)
    elastic.set_random_state(seed=0)
    out = elastic({"image": data["image"], "label": data["label"]})
    assert tuple(out["image"].shape[1:]) == tuple(out["label"].shape[1:]) == (SIZE,) * 3


def test_fixed_crop_of_the_november_model_for_ablations(blobs):
    """``random_crop=False``: every first crop is SIZE^3 (the pipeline before 2957b69); the
    generator passes its ``SynthSettings.random_crop`` through."""
    from napari_anystar.synth import SynthSettings, generate

    image, labels = blobs
    crop = aug.build_pipeline(SIZE, random_crop=False).transforms[1]
    data = {"image": torch.from_numpy(image[None]), "label": torch.from_numpy(labels[None] * 1.0)}
    for seed in range(6):
        crop.set_random_state(seed=seed)
        assert tuple(crop(dict(data))["image"].shape[1:]) == (SIZE,) * 3
    fixed = generate("as-mix", 3, SynthSettings(random_crop=False))
    default = generate("as-mix", 3, SynthSettings())
    assert fixed.image.shape == default.image.shape == (64,) * 3
    assert not np.array_equal(fixed.labels > 0, default.labels > 0)


def _sphere(shape=(72, 72, 72), centre=(33.3, 37.6, 35.2), radius=11.0):
    grid = np.indices(shape, dtype=np.float32)
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return (dist2 <= radius**2).astype(np.float32)


def _centroid(volume: np.ndarray) -> np.ndarray:
    grid = np.indices(volume.shape, dtype=np.float64)
    return np.array([(g * volume).sum() / volume.sum() for g in grid])


def _spatial_steps(pipeline):
    """The steps of A(.) that move the label map (OneOf unpacked)."""
    for step in pipeline.transforms:
        inner = getattr(step, "transforms", [step])
        for t in inner:
            if "label" in getattr(t, "keys", ()):
                yield t


def _alignment_shifts(aligned: bool, seeds=range(4)) -> dict[str, float]:
    """Largest image/label centroid offset (voxels, any axis) after each spatial step."""
    from monai.data import set_track_meta

    sphere = _sphere()
    shifts: dict[str, float] = {}
    set_track_meta(False)
    try:
        for t in _spatial_steps(aug.build_pipeline(48, aligned=aligned)):
            if type(t).__name__ == "RandCoarseDropoutd":
                continue  # cuts holes; moves nothing
            for seed in seeds:
                t.set_random_state(seed=seed)
                out = t({"image": torch.from_numpy(sphere[None]),
                         "label": torch.from_numpy(sphere[None].copy())})
                image = np.clip(np.asarray(out["image"][0], np.float64), 0, None)
                label = np.rint(np.asarray(out["label"][0])).astype(np.float64)
                if label.sum() < 100:
                    continue  # the sphere left the window
                offset = float(np.abs(_centroid(image) - _centroid(label)).max())
                name = type(t).__name__
                shifts[name] = max(shifts.get(name, 0.0), offset)
    finally:
        set_track_meta(True)
    return shifts


def test_every_spatial_step_keeps_labels_on_the_image():
    shifts = _alignment_shifts(aligned=True)
    assert {"RandSpatialCropd", "RandZoomd", "RandAffined", "RandAxisFlipd",
            "RandRotate90d", "Rand3DElasticd"} <= set(shifts)
    assert max(shifts.values()) < 0.2, shifts


def test_alignment_check_detects_the_legacy_half_voxel_shift():
    # torch's legacy "nearest" zoom (the reference's) puts labels off the image
    assert _alignment_shifts(aligned=False)["RandZoomd"] > 0.25


def test_intensity_only_augmentation_keeps_whole_objects():
    from napari_anystar.synth import SynthSettings, generate

    settings = SynthSettings(size=48, grid_size=64, mean_radius=6.0, pad_choices=(0,),
                             augment_spatial=False)
    sample = generate("as-mix", 5, settings, keep_stages=True)
    start = (64 - 48) // 2
    crop = sample.stages["label_map"][start:start + 48, start:start + 48, start:start + 48]
    assert np.array_equal(sample.labels > 0, crop > 0)
    assert sample.image.min() >= 0.0 and sample.image.max() <= 1.0


def test_axial_blur_smooths_one_axis_only():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 32), dtype=np.float32)
    assert aug.axial_blur(rng, image, 0.0) is image
    blurred = aug.axial_blur(np.random.default_rng(1), image, 1.0)
    roughness = [np.abs(np.diff(blurred, axis=a)).mean() for a in range(3)]
    smooth_axis = int(np.argmin(roughness))
    others = [r for a, r in enumerate(roughness) if a != smooth_axis]
    assert roughness[smooth_axis] < 0.7 * min(others)
    assert abs(others[0] - others[1]) < 0.05 * others[0]  # the two other axes alike


def test_psf_blur_smooths_every_axis_alike_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 32), dtype=np.float32)
    assert aug.psf_blur(rng, image, 0.0) is image
    blurred = aug.psf_blur(np.random.default_rng(1), image, 1.0)
    before = [np.abs(np.diff(image, axis=a)).mean() for a in range(3)]
    after = [np.abs(np.diff(blurred, axis=a)).mean() for a in range(3)]
    assert all(a < 0.7 * b for a, b in zip(after, before, strict=True))
    assert max(after) < 1.25 * min(after)  # isotropic (axial blur: one axis 0.7x the others)
    assert abs(float(blurred.mean()) - float(image.mean())) < 1e-3


def test_psf_blur_softens_the_image_but_keeps_the_labels():
    from napari_anystar.synth import SynthSettings, generate

    settings = SynthSettings(size=48, grid_size=64, mean_radius=6.0, pad_choices=(0,),
                             augment_spatial=False)
    sharp = generate("as-brightfg-plainbg", 3, settings)
    soft = generate("as-brightfg-plainbg", 3, SynthSettings(**{
        **settings.__dict__, "psf_blur": 1.0}))
    np.testing.assert_array_equal(sharp.labels, soft.labels)  # labels: the objects' true extent
    edges = [np.abs(np.diff(s.image, axis=2)).mean() for s in (sharp, soft)]
    assert edges[1] < 0.9 * edges[0]
    with pytest.raises(ValueError, match="PSF blur"):
        SynthSettings(psf_blur=1.5).validate()
