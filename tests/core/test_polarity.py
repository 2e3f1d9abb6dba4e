"""Object polarity: measured contrast of found objects, and the pipeline's *auto* policy that
segments a volume of dark objects negated."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_refine import blurred_blobs, objects_model

from conftest import drain
from napari_anystar.model import registry, segmenter
from napari_anystar.model.cache import PredictionCache
from napari_anystar.model.polarity import check_polarity, object_contrast
from napari_anystar.model.predict import PredictSettings, oriented

PROB, NMS = 0.5, 0.35


def _spheres(shape=(24, 40, 40)) -> np.ndarray:
    """Four touching-free balls of radius 5 (ids 1..4)."""
    labels = np.zeros(shape, np.int32)
    zz, yy, xx = np.indices(shape)
    for i, (y, x) in enumerate([(10, 10), (10, 30), (30, 10), (30, 30)], start=1):
        labels[(zz - 12) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 25] = i
    return labels


def test_contrast_is_positive_for_bright_objects_and_negative_for_dark_ones():
    labels = _spheres()
    rng = np.random.default_rng(0)
    bright = 0.2 + 0.6 * (labels > 0) + rng.normal(0, 0.02, labels.shape)
    diameter = (10.0, 10.0, 10.0)
    up = object_contrast(bright, labels, diameter)
    down = object_contrast(1.0 - bright, labels, diameter)
    assert 0.4 < up < 0.6 and down == pytest.approx(-up)  # the whole step, either way
    # under a ramp across X the sign is the objects', not the ramp's
    ramp = np.linspace(0, 1.5, labels.shape[2])[None, None, :]
    assert object_contrast(bright + ramp, labels, diameter) > 0.4
    assert object_contrast(1 - bright + ramp, labels, diameter) < -0.4


def test_contrast_cannot_be_measured_without_objects():
    image = np.random.default_rng(1).random((16, 16, 16))
    assert math.isnan(object_contrast(image, np.zeros(image.shape, np.int32), (8.0,) * 3))
    whole = np.ones(image.shape, np.int32)  # one object with no voxel around it
    assert math.isnan(object_contrast(image, whole, (8.0,) * 3))


def test_oriented_negates_only_when_asked():
    image = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    assert oriented(image, False) is image
    flipped = oriented(image, True)
    assert flipped.dtype == np.float32 and np.array_equal(flipped, -image.astype(np.float32))


def test_unknown_polarity_is_refused():
    with pytest.raises(ValueError, match="auto, bright, dark"):
        check_polarity("inverted")


@pytest.fixture(scope="module")
def entry(tiny_model_dir, tmp_path_factory):
    folder = objects_model(tiny_model_dir, tmp_path_factory.mktemp("polarity") / "tiny-objects")
    return registry.ModelEntry(folder.name, folder, "folder")


def _run(entry, image, polarity, cache=None):
    return drain(segmenter.network_job(entry, image, PredictSettings(), (PROB, NMS),
                                       PredictionCache() if cache is None else cache,
                                       polarity=polarity))[1]


def test_auto_keeps_bright_objects_as_given(entry, network_calls):
    image = blurred_blobs()
    auto = _run(entry, image, "auto")
    bright = _run(entry, image, "bright")
    assert not auto.settings.invert and auto.refined
    assert auto.n_objects >= 8
    np.testing.assert_array_equal(auto.labels, bright.labels)
    assert len(network_calls) == 2  # one network run each: no second try for bright objects


def test_dark_objects_are_segmented_as_their_negation(entry, network_calls):
    blobs = blurred_blobs()
    dark = (int(blobs.max()) - blobs.astype(np.int64)).astype(np.uint16)  # dark blobs
    bright = _run(entry, blobs, "bright")
    stated = _run(entry, dark, "dark")
    auto = _run(entry, dark, "auto")
    as_given = _run(entry, dark, "bright")
    assert stated.settings.invert and auto.settings.invert and not as_given.settings.invert
    # negated, the dark volume is the bright one up to an offset: the same objects, outlines
    np.testing.assert_array_equal(auto.labels, bright.labels)
    np.testing.assert_array_equal(stated.labels, bright.labels)
    assert not np.array_equal(as_given.labels, bright.labels)


def test_a_cached_run_is_reused_only_at_its_own_polarity(entry, network_calls):
    image = blurred_blobs()
    cache = PredictionCache()
    first = _run(entry, image, "bright", cache)
    negated = _run(entry, image, "dark", cache)
    again = _run(entry, image, "bright", cache)
    assert (cache.hits, cache.misses) == (1, 2) and len(network_calls) == 2
    assert again.cached and not negated.cached
    np.testing.assert_array_equal(again.labels, first.labels)


@pytest.mark.parametrize("measured, negated", [((-0.1, 0.2), True),
                                               ((-0.1, -0.05), False),  # both dark: mixed
                                               ((math.nan, 0.2), True),  # none found as given
                                               ((math.nan, -0.2), False),
                                               ((math.nan, math.nan), False),
                                               ((0.0,), False)])
def test_the_negation_is_kept_only_if_its_objects_are_bright(
        entry, monkeypatch, network_calls, measured, negated):
    answers = list(measured)
    monkeypatch.setattr(segmenter, "object_contrast", lambda *_: answers.pop(0))
    result = _run(entry, blurred_blobs(), "auto")
    assert answers == [] and result.settings.invert == negated
    assert len(network_calls) == len(measured)  # the negation runs only when asked for


def test_a_block_wise_runs_crop_measures_as_the_pipeline_does(entry):
    from napari_anystar.model.block_tasks import crop_contrast_task

    model = registry.load_model(entry)
    settings = PredictSettings(scale=(1.0, 1.0, 1.0)).for_model(model)
    blobs = blurred_blobs()
    dark = (int(blobs.max()) - blobs.astype(np.int64)).astype(np.uint16)
    bright = crop_contrast_task(entry, blobs, settings, (PROB, NMS))
    negated = crop_contrast_task(entry, dark, replace(settings, invert=True), (PROB, NMS))
    assert bright > 0.05 and negated == pytest.approx(bright, rel=1e-3)
    run = drain(segmenter.network_job(entry, blobs, PredictSettings(), (PROB, NMS),
                                      PredictionCache(), refine=False, polarity="bright"))[1]
    assert bright == pytest.approx(segmenter._contrast(run), rel=1e-6)  # StarDist's outlines
