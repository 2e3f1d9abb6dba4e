"""Outline refinement (``model.refine``) against synthetic volumes with known objects, and its
wiring into the pipeline core (``segmenter.solve``, ``segmenter.network_job``).

The synthetic "microscope" images are uniform ellipsoids on a dim background, blurred by an
anisotropic Gaussian point-spread function, plus noise. StarDist's polyhedra are stood in for
by the true objects shrunk or grown by two voxels each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import drain, gaussian_blobs, sharpen_tiny_model
from napari_anystar.model import registry, segmenter
from napari_anystar.model.cache import PredictionCache
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.object_size import TRAINING_DIAMETER
from napari_anystar.model.predict import PredictSettings, predict_network
from napari_anystar.model.refine import DEFAULT_REFINE, OutlineRefiner, background
from napari_anystar.normalization import LEGACY

PSF = (1.5, 1.0, 1.0)  # Gaussian sigma per axis (ZYX), voxels
DIAMETER = (20.0, 20.0, 20.0)  # the objects' size as the refiner is told it


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def microscope(brightness: np.ndarray, seed: int = 0) -> np.ndarray:
    """``brightness`` (object levels, background 0.1) blurred by the PSF, noisy, as counts."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(brightness.astype(np.float32), PSF)
    image += rng.normal(0.0, 0.03, brightness.shape).astype(np.float32)
    return image * 1000 + 100


def scene(specs, shape, levels=None, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(true labels 1..n, image) of ellipsoids ``specs = [(centre, radii), ...]``."""
    truth = np.zeros(shape, np.int32)
    for i, (centre, radii) in enumerate(specs, 1):
        truth[ellipsoid(shape, centre, radii)] = i
    brightness = np.full(shape, 0.1, np.float32)
    for i, level in enumerate(levels or [1.0] * len(specs), 1):
        brightness[truth == i] = level
    return truth, microscope(brightness, seed)


def polyhedra(truth: np.ndarray, steps) -> np.ndarray:
    """Each true object grown (step > 0) or shrunk (step < 0) by ``|step|`` voxels; a grown
    object does not take voxels of another true object."""
    labels = np.zeros_like(truth)
    for i, step in enumerate(steps, 1):
        mask = truth == i
        if step > 0:
            mask = ndi.binary_dilation(mask, iterations=step) & ((truth == 0) | mask)
        elif step < 0:
            mask = ndi.binary_erosion(mask, iterations=-step)
        labels[mask] = i
    return labels


def iou(a: np.ndarray, b: np.ndarray, i: int) -> float:
    return float(np.sum((a == i) & (b == i)) / np.sum((a == i) | (b == i)))


FOUR = [((14, 18, 18), (9, 10, 11)), ((14, 18, 53), (8, 11, 10)),
        ((34, 53, 18), (10, 10, 9)), ((34, 52, 53), (9, 12, 11))]


# ------------------------------------------------------------------------ outlines
@pytest.mark.parametrize("dtype", [np.int32, np.uint16])
def test_refined_outlines_are_closer_to_the_true_objects(dtype):
    truth, image = scene(FOUR, (48, 72, 72))
    labels = polyhedra(truth, [-2, 2, -2, 2]).astype(dtype)
    given = labels.copy()

    refined = OutlineRefiner(image, DIAMETER)(labels)

    np.testing.assert_array_equal(labels, given)  # the input is not changed
    assert refined.dtype == dtype and refined.shape == truth.shape
    assert set(np.unique(refined)) == {0, 1, 2, 3, 4}  # same objects, ids 1..n
    before = [iou(labels, truth, i) for i in range(1, 5)]
    after = [iou(refined, truth, i) for i in range(1, 5)]
    # measured: before 0.55-0.65 (mean 0.60), after 0.79-0.96 (mean 0.88)
    assert np.mean(before) < 0.65
    assert np.mean(after) > 0.82
    assert all(a > b + 0.12 for a, b in zip(after, before, strict=True)), (before, after)
    sizes = np.bincount(refined.ravel(), minlength=5)[1:] / np.bincount(truth.ravel())[1:]
    assert np.all((sizes > 0.85) & (sizes < 1.35)), sizes  # shrunk ones grew, grown ones shrank


def touching_pair() -> tuple[np.ndarray, int]:
    """(truth, x of the contact plane): two spheres of radius 10, 18 voxels apart along X,
    overlapping in a waist and divided at its plane."""
    shape, contact = (32, 40, 72), 34
    x = np.arange(shape[2])
    truth = (ellipsoid(shape, (16, 20, 25), (10, 10, 10)) & (x <= contact)).astype(np.int32)
    truth[ellipsoid(shape, (16, 20, 43), (10, 10, 10)) & (x > contact)] = 2
    return truth, contact


@pytest.mark.parametrize("slope", [0.0, 1.0])
def test_outlines_do_not_follow_an_illumination_gradient(slope):
    """A background rising across X by ``slope`` times the objects' contrast: each outline
    stays on its object, where the darkest voxel around it (on its dark side) would set the
    level too low and let the bright side spill out (measured: mean IoU 0.88 flat and 0.87
    with slope 1; without the background 0.57 there, objects up to 2.4x too large)."""
    truth, image = scene(FOUR, (48, 72, 72))
    ramp = np.linspace(0.0, slope * 900.0, image.shape[2], dtype=np.float32)
    refined = OutlineRefiner(image + ramp, DIAMETER)(polyhedra(truth, [-2, 2, -2, 2]))
    after = [iou(refined, truth, i) for i in range(1, 5)]
    sizes = np.bincount(refined.ravel(), minlength=5)[1:] / np.bincount(truth.ravel())[1:]
    assert np.mean(after) > 0.84, after
    assert np.all((sizes > 0.85) & (sizes < 1.4)), sizes


def test_background_keeps_a_ramp_and_drops_the_objects():
    truth, _ = scene(FOUR, (48, 72, 72))
    ramp = np.linspace(0.0, 1.0, 72, dtype=np.float32)[None, None, :] * np.ones((48, 72, 1))
    flat = ndi.gaussian_filter(np.where(truth > 0, 1.0, 0.0).astype(np.float32), 1.0)
    found = background(flat + ramp.astype(np.float32), DIAMETER)
    # away from the volume's X ends (the box reflects there), the ramp and nothing else
    inner = (slice(None), slice(None), slice(20, 52))
    assert np.abs(found - ramp)[inner].max() < 0.05
    assert found[truth > 0].max() < ramp.max() + 0.05  # the objects (+1) are gone


@pytest.mark.parametrize("steps", [(-2, -2), (-1, -2)])
def test_touching_objects_are_split_at_the_intensity_valley(steps):
    truth, contact = touching_pair()
    image = microscope(np.where(truth > 0, 1.0, 0.1))  # equally bright: a valley at the waist
    valley = 25 + int(np.argmin(ndi.gaussian_filter(image, 1.6)[16, 20, 25:44]))
    assert abs(valley - contact) <= 1

    refined = OutlineRefiner(image, DIAMETER)(polyhedra(truth, steps))

    line = refined[16, 20]  # the line through both centres
    end, start = np.flatnonzero(line == 1).max(), np.flatnonzero(line == 2).min()
    assert contact - 2 <= end < start <= contact + 3
    for i in (1, 2):  # each grew to its own object, neither into the other
        assert iou(refined, truth, i) > 0.85
        assert np.sum((refined == i) & (truth == 3 - i)) < 0.01 * np.sum(truth == 3 - i)


def test_a_dim_object_touching_a_bright_one_keeps_its_side():
    truth, contact = touching_pair()
    image = microscope(np.choose(truth, [0.1, 1.0, 0.4]).astype(np.float32))

    for steps in ((-2, -2), (2, 2)):
        refined = OutlineRefiner(image, DIAMETER)(polyhedra(truth, steps))
        line = refined[16, 20]
        assert contact - 2 <= np.flatnonzero(line == 1).max() < np.flatnonzero(line == 2).min()
        assert np.flatnonzero(line == 2).min() <= contact + 4
        for i in (1, 2):
            assert iou(refined, truth, i) > 0.75, (steps, i)
            assert np.sum((refined == i) & (truth == 3 - i)) < 0.02 * np.sum(truth == 3 - i)


# ------------------------------------------------------------ objects left as they were
def two_objects(dark: bool) -> tuple[np.ndarray, np.ndarray]:
    """(truth, image): object 2 is bright on a 0.5 background; object 1 is darker than the
    background (``dark``) or absent from the image (the background is uniform there)."""
    shape = (40, 40, 72)
    truth = np.zeros(shape, np.int32)
    truth[ellipsoid(shape, (20, 20, 18), (9, 10, 10))] = 1
    truth[ellipsoid(shape, (20, 20, 54), (9, 10, 10))] = 2
    brightness = np.choose(truth, [0.5, 0.1 if dark else 0.5, 1.0]).astype(np.float32)
    return truth, microscope(brightness, seed=3)


@pytest.mark.parametrize("dark", [True, False], ids=["dark object", "nothing in the image"])
@pytest.mark.parametrize("step", [-2, 0, 2])
def test_objects_the_image_does_not_confirm_keep_their_polyhedron(dark, step):
    truth, image = two_objects(dark)
    labels = polyhedra(truth, [step, -2])

    refined = OutlineRefiner(image, DIAMETER)(labels)

    np.testing.assert_array_equal(refined == 1, labels == 1)  # exactly its polyhedron
    assert iou(refined, truth, 2) > iou(labels, truth, 2) + 0.2  # the bright one is refined
    assert set(np.unique(refined)) == {0, 1, 2}


def test_labels_without_objects_are_returned_unchanged():
    image = microscope(np.full((16, 20, 24), 0.1, np.float32))
    labels = np.zeros(image.shape, np.uint16)
    refined = OutlineRefiner(image, (12, 12, 12))(labels)
    assert refined.dtype == np.uint16 and refined.shape == image.shape and not refined.any()


# ----------------------------------------------------------------------- arguments
def test_labels_of_another_shape_are_refused_in_one_line():
    refiner = OutlineRefiner(np.zeros((8, 10, 12), np.float32), (12, 12, 12))
    with pytest.raises(ValueError, match=r"^labels \(8, 10, 11\) and image \(8, 10, 12\) "
                                         r"differ\.$"):
        refiner(np.ones((8, 10, 11), np.int32))


@pytest.mark.parametrize("diameter", [(12, 12), (12, 12, 12, 12), (0, 12, 12), (12, -1, 12)])
def test_diameter_must_be_three_positive_numbers(diameter):
    with pytest.raises(ValueError, match=r"^diameter must be three positive numbers, got "):
        OutlineRefiner(np.zeros((4, 4, 4), np.float32), diameter)


def test_at_scale_divides_the_training_diameter_by_the_scale():
    image = np.zeros((4, 4, 4), np.float32)
    refiner = OutlineRefiner.at_scale(image, (2.0, 0.5, 1.0), 12.0)
    assert refiner.diameter == (6.0, 24.0, 12.0) and refiner.image is image
    assert OutlineRefiner.at_scale(image, None, 10.0).diameter == (10.0, 10.0, 10.0)


def test_the_smoothed_image_and_its_background_are_computed_once(monkeypatch):
    truth, image = scene(FOUR[:2], (32, 36, 72))
    calls = []
    real = ndi.gaussian_filter

    def counting(*args, **kwargs):
        calls.append(kwargs.get("sigma", args[1] if len(args) > 1 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(ndi, "gaussian_filter", counting)
    refiner = OutlineRefiner(image, DIAMETER)
    first = refiner(polyhedra(truth, [-2, -2]))
    smoothed, flattened = refiner.smoothed, refiner.flattened
    second = refiner(polyhedra(truth, [2, 2]))
    assert refiner.smoothed is smoothed and refiner.flattened is flattened
    assert len(calls) == 2  # the image's Gaussian and the background's, once each
    assert calls[0] == pytest.approx((1.6, 1.6, 1.6))  # SMOOTHING x diameter
    assert calls[1] == pytest.approx((7.75, 7.75, 7.75))  # a quarter of the box, 1.5 diameters
    assert smoothed.shape == image.shape and smoothed.dtype == np.float32
    assert smoothed.min() >= 0.0 and smoothed.max() <= 1.0
    assert set(np.unique(first)) == set(np.unique(second)) == {0, 1, 2}


# ----------------------------------------------------------------- pipeline wiring
def blurred_blobs(shape=(24, 32, 40), seed=0) -> np.ndarray:
    """Twelve Gaussian blobs (sigma 2.5) on noise, uint16."""
    return gaussian_blobs(shape, seed, n=12, sigma=2.5)


def objects_model(tiny_model_dir, folder):
    """A copy of the tiny model in ``folder``, sharpened to ~15 objects ~8 voxels across on
    ``blurred_blobs()`` (thresholds 0.5 / 0.35); returns ``folder``."""
    folder = shutil.copytree(tiny_model_dir, folder)
    model = registry.load_model(registry.ModelEntry(folder.name, folder, "folder"))
    prob = model.predict(LEGACY.apply(blurred_blobs()))[0]
    sharpen_tiny_model(model, prob, 4.0, folder / "weights_best.h5")
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.5, "nms": 0.35}))
    return folder


@pytest.fixture(scope="module")
def objects_model_dir(tiny_model_dir, tmp_path_factory):
    return objects_model(tiny_model_dir, tmp_path_factory.mktemp("refine") / "tiny-objects")


@pytest.fixture(scope="module")
def network(objects_model_dir):
    """(model entry, image, solver, refiner) of ``blurred_blobs()`` at scale 1."""
    entry = registry.ModelEntry(objects_model_dir.name, objects_model_dir, "folder")
    model = registry.load_model(entry)
    image = blurred_blobs()
    settings = PredictSettings(scale=(1.0, 1.0, 1.0)).for_model(model)
    solver = InstanceSolver(drain(predict_network(model, image, settings))[1], model)
    return entry, image, solver, OutlineRefiner.at_scale(image, settings.scale, TRAINING_DIAMETER)


def test_solve_refines_only_with_a_refiner(network):
    _, _, solver, refiner = network
    plain = solver.labels(0.5, 0.35)
    assert plain.max() >= 8

    labels, n_objects, object_prob = segmenter.solve(solver, 0.5, 0.35)
    np.testing.assert_array_equal(labels, plain)
    refined, n_refined, prob_refined = segmenter.solve(solver, 0.5, 0.35, refiner)
    np.testing.assert_array_equal(refined, refiner(plain))
    assert n_refined == n_objects == plain.max() == len(object_prob) - 1
    np.testing.assert_array_equal(prob_refined, object_prob)
    assert set(np.unique(refined)) == set(np.unique(plain))  # the same objects ...
    assert np.sum(refined != plain) > 100  # ... with other outlines (measured: ~460 voxels)


def test_solve_in_stages_yields_stardists_labels_first_unless_they_are_shown(network):
    _, _, solver, refiner = network
    plain = solver.labels(0.5, 0.35)
    staged, result = drain(segmenter.solve_in_stages(solver, 0.5, 0.35, refiner))
    assert len(staged) == 1  # StarDist's labels, before the slow refinement
    np.testing.assert_array_equal(staged[0][0], plain)
    np.testing.assert_array_equal(result[0], refiner(plain))
    shown, again = drain(segmenter.solve_in_stages(solver, 0.5, 0.35, refiner,
                                                   plain_shown=True))
    assert shown == []  # already on screen (a Run shows them): only the refined outlines
    np.testing.assert_array_equal(again[0], result[0])
    assert again[1] == result[1] == plain.max()
    unrefined, alone = drain(segmenter.solve_in_stages(solver, 0.5, 0.35))
    assert unrefined == []  # nothing to follow without a refiner
    np.testing.assert_array_equal(alone[0], plain)


def test_network_job_refines_unless_told_not_to(network):
    entry, image, solver, _ = network
    cache, settings = PredictionCache(), PredictSettings(scale=(1.0, 1.0, 1.0))
    plain = drain(segmenter.network_job(entry, image, settings, (0.5, 0.35), cache,
                                        refine=False))[1]
    default = drain(segmenter.network_job(entry, image, settings, (0.5, 0.35), cache))[1]

    assert DEFAULT_REFINE is True
    assert plain.refined is False and default.refined is True and default.cached
    np.testing.assert_array_equal(plain.labels, solver.labels(0.5, 0.35))
    np.testing.assert_array_equal(plain.labels, plain.solver.labels(0.5, 0.35))
    np.testing.assert_array_equal(default.labels, default.refiner(plain.labels))
    assert not np.array_equal(default.labels, plain.labels)
    assert default.n_objects == plain.n_objects == plain.labels.max()
    assert default.refiner.image is image
    assert default.refiner.diameter == (TRAINING_DIAMETER,) * 3  # scale 1
    half = drain(segmenter.network_job(entry, image, PredictSettings(scale=(2.0, 1.0, 0.5)),
                                       (0.5, 0.35), cache))[1]
    assert half.refiner.diameter == (TRAINING_DIAMETER / 2, TRAINING_DIAMETER,
                                     TRAINING_DIAMETER * 2)
