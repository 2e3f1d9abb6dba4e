"""The named generators: recipe invariants of L, g(L) brightness, final samples, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_anystar import synth
from napari_anystar.synth import (
    BACKGROUND_MODES,
    GENERATOR_NAMES,
    GENERATOR_TITLES,
    SynthSettings,
    generate,
    sample_seed,
)
from napari_anystar.synth.labels import grid_centres

CLEAN = SynthSettings(augment=False)
SMALL = SynthSettings(size=32, grid_size=64, mean_radius=8.0, pad_choices=(0, 16))
N_GRID = len(grid_centres(128, 12.0))  # 64 sphere sites with the paper's settings
N_MIN = 2 * N_GRID // 3  # at least 2/3 of them are kept


def star_convex_fractions(labels: np.ndarray) -> dict[int, float]:
    """Per instance: fraction of voxels whose segment from the centroid stays in the instance.

    Segments are sampled every half voxel (nearest voxel lookup). Instances touching the grid
    border are skipped: the border clips them and their thin clipped remnants are not
    star-convex on the voxel grid.
    """
    out = {}
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        if any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape, strict=True)):
            continue
        inside = labels[box] == label
        points = np.argwhere(inside).astype(np.float32)
        centre = points.mean(0)
        steps = max(2, math.ceil(2 * np.linalg.norm(points - centre, axis=1).max()) + 1)
        t = np.linspace(0, 1, steps, dtype=np.float32)[None, :, None]
        rays = np.rint(centre + t * (points[:, None] - centre)).astype(np.intp)
        out[label] = float(inside[rays[..., 0], rays[..., 1], rays[..., 2]].all(1).mean())
    return out


def test_names_titles_modes():
    assert GENERATOR_NAMES == (
        "as-mix", "as-brightfg-plainbg", "as-randfg-plainbg", "as-randfg-perlinbg"
    )
    assert GENERATOR_TITLES["as-mix"] == "AS-Mix"
    assert set(GENERATOR_TITLES) == set(GENERATOR_NAMES)
    assert BACKGROUND_MODES == ("plain", "rand", "perlin")
    assert synth.export_samples is not None


@pytest.mark.parametrize("generator", GENERATOR_NAMES)
def test_label_map_recipe(generator):
    """L: ids 1..n, instance count in the recipe's range, star-convex instances."""
    for seed in (11, 12):
        sample = generate(generator, seed, CLEAN, keep_stages=True)
        label_map = sample.stages["label_map"]
        assert label_map.shape == (128,) * 3 and label_map.dtype == np.uint16
        n = int(label_map.max())
        assert np.array_equal(np.unique(label_map), np.arange(n + 1))
        # 2/3..all of the 64 spheres (a few tiny ones may vanish when shrunk by padding);
        # reflect padding shows at most 3 copies per axis, border clipping may split a copy
        assert N_MIN // 2 <= n <= 27 * N_GRID * 2
        fractions = star_convex_fractions(label_map)
        assert len(fractions) >= N_MIN // 2
        worst = min(fractions, key=fractions.get)
        assert fractions[worst] >= 0.9, f"instance {worst}: {fractions[worst]:.2f}"


@pytest.mark.parametrize("generator", GENERATOR_NAMES)
def test_clean_image_brightness_by_mode(generator):
    seen = {"brighter": False, "darker": False}
    for seed in range(3):
        sample = generate(generator, seed, CLEAN, keep_stages=True)
        label_map, clean = sample.stages["label_map"], sample.stages["clean_image"]
        assert clean.dtype == np.float32 and clean.shape == label_map.shape
        assert clean.min() >= 0 and clean.max() <= 1 and np.isfinite(clean).all()
        n = int(label_map.max())
        means = np.asarray(ndimage.mean(clean, label_map, np.arange(1, n + 1)))
        background = float(clean[label_map == 0].mean())
        if sample.background == "plain":
            assert (means > background).all(), sample.seed
        seen["brighter"] |= bool((means > background).any())
        seen["darker"] |= bool((means < background).any())
        assert sample.background in BACKGROUND_MODES
        if generator != "as-mix":
            expected = {"as-brightfg-plainbg": "plain", "as-randfg-plainbg": "rand",
                        "as-randfg-perlinbg": "perlin"}[generator]
            assert sample.background == expected
    if generator in ("as-randfg-plainbg", "as-randfg-perlinbg"):
        assert seen["brighter"] and seen["darker"]


def test_as_mix_draws_every_background():
    modes = {generate("as-mix", seed, SMALL).background for seed in range(12)}
    assert modes == set(BACKGROUND_MODES)


def test_background_override():
    sample = generate("as-brightfg-plainbg", 3, SynthSettings(**{**SMALL.__dict__,
                                                                 "background": "perlin"}))
    assert sample.background == "perlin"


@pytest.mark.parametrize("generator", GENERATOR_NAMES)
def test_final_sample(generator):
    for seed in (5, 6):
        sample = generate(generator, seed)
        assert sample.image.shape == sample.labels.shape == (64, 64, 64)
        assert sample.image.dtype == np.float32 and sample.labels.dtype == np.uint16
        assert np.isfinite(sample.image).all()
        assert sample.image.min() >= 0 and sample.image.max() <= 1
        assert sample.image.max() > 0
        n = int(sample.labels.max())
        assert np.array_equal(np.unique(sample.labels), np.arange(n + 1))
        # >= 1 instance; at most one instance per 8 voxels of the 64^3 window
        assert 1 <= n <= 64**3 // 8
        # ids are unique: every instance is one connected component
        for label, box in enumerate(ndimage.find_objects(sample.labels), start=1):
            _, count = ndimage.label(sample.labels[box] == label, structure=np.ones((3, 3, 3)))
            assert count == 1
        assert sample.generator == generator and sample.seed == seed
        assert sample.stages == {}


def test_size_is_a_parameter_and_stages():
    settings = SynthSettings(size=24, grid_size=48, mean_radius=6.0, pad_choices=(0, 8))
    sample = generate("as-mix", 2, settings, keep_stages=True)
    assert sample.image.shape == sample.labels.shape == (24, 24, 24)
    stages = sample.stages
    assert set(stages) == {"label_map", "clean_image", "augmented_image", "augmented_labels"}
    assert stages["label_map"].shape == stages["clean_image"].shape == (48, 48, 48)
    assert stages["augmented_image"].shape == stages["augmented_labels"].shape == (24, 24, 24)
    np.testing.assert_array_equal(stages["augmented_image"], sample.image)
    np.testing.assert_array_equal(stages["augmented_labels"] > 0, sample.labels > 0)
    raw = generate("as-mix", 2, settings)
    np.testing.assert_array_equal(raw.image, sample.image)  # stages do not change the sample


def test_same_seed_same_sample_different_seed_differs():
    a = generate("as-mix", 42, SMALL)
    b = generate("as-mix", 42, SMALL)
    c = generate("as-mix", 43, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_all_zero_draws_are_redrawn(monkeypatch):
    from napari_anystar.synth import generators

    real = generators._attempt
    calls = []

    def first_blank(generator, seed, attempt, settings, keep):
        calls.append(attempt)
        background, image, labels, stages = real(generator, seed, attempt, settings, keep)
        if attempt == 0:
            image = np.zeros_like(image)
        return background, image, labels, stages

    monkeypatch.setattr(generators, "_attempt", first_blank)
    sample = generate("as-mix", 1, SMALL)
    assert calls == [0, 1]
    assert sample.image.max() > 0
    again = generate("as-mix", 1, SMALL)  # the redraw is deterministic too
    np.testing.assert_array_equal(sample.image, again.image)


def test_sample_seed():
    seeds = [sample_seed(7, i) for i in range(50)]
    assert len(set(seeds)) == 50
    assert seeds == [sample_seed(7, i) for i in range(50)]
    assert sample_seed(8, 0) != sample_seed(7, 0)
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"size": 8}, "output size"),
        ({"size": 200}, "output size"),
        ({"grid_size": 16, "size": 16}, "grid size"),
        ({"mean_radius": 2.0}, "mean radius"),
        ({"mean_radius": 40.0}, "mean radius"),
        ({"background": "stripes"}, "background"),
        ({"pad_choices": (0, -4)}, "padding"),
        ({"pad_choices": (0, 1.5)}, "padding"),
        ({"pad_choices": ()}, "padding"),
        ({"pad_choices": (0, 1000)}, "padding"),
    ],
)
def test_settings_validate(changes, words):
    settings = SynthSettings(**changes)
    with pytest.raises(ValueError, match=words) as info:
        settings.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=words):
        generate("as-mix", 0, settings)


def test_default_settings_valid_and_unknown_generator():
    SynthSettings().validate()
    with pytest.raises(ValueError, match="as-mix") as info:
        generate("as-nothing", 0)
    assert "\n" not in str(info.value)
