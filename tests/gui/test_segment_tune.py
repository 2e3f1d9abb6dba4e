"""The Segment widget's "Tune from annotations" section in a real viewer.

Clicked points (placed in world coordinates over a scaled, translated image) and
ground-truth labels choose the thresholds the core searches choose on the same network
output; "also try scales" runs the network at the extra scales once; bad input is refused
with a message and changes nothing. Fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import drain
from napari_anystar._widgets import _segment_tune
from napari_anystar._widgets._segment_tune import search_floor
from napari_anystar.analysis.evaluate import object_centroids
from napari_anystar.analysis.point_tuning import (
    PointCounts,
    clicked_points,
    tune_thresholds_on_points,
)
from napari_anystar.analysis.tuning import tune_thresholds_on_outputs
from napari_anystar.model import segmenter
from napari_anystar.model.predict import PredictSettings

from .segment_helpers import SHAPE, TIMEOUT, _blobs, _our_labels, _reference, _run

SCALE, TRANSLATE = (2.0, 1.0, 1.0), (5.0, -3.0, 0.0)


@pytest.fixture
def tune_errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(_segment_tune, "show_error", shown.append)
    return shown


def _centres(labels):
    """Voxel centres of the objects of ``labels``: each rounded centroid inside its object."""
    ids, centres = object_centroids(labels)
    voxels = np.floor(centres + 0.5).astype(int)
    inside = labels[tuple(voxels.T)] == ids
    assert inside.sum() >= 5
    return voxels[inside].astype(float)


def _tune(qtbot, widget, source):
    """Tune from the layer ``source``; its TuneResult (fails at once on a refusal)."""
    section = widget.tune_section
    outcome = []
    section.tuned.connect(outcome.append)
    section.tune_failed.connect(outcome.append)
    section.source_combo.setCurrentIndex(section.source_combo.findData(source))
    section.tune_button.click()
    qtbot.waitUntil(lambda: bool(outcome), timeout=TIMEOUT)
    assert not isinstance(outcome[0], str), outcome[0]
    return outcome[0]


def _wait_for_labels(qtbot, widget, thresholds):
    layer = _our_labels(widget.viewer)
    qtbot.waitUntil(lambda: (layer.metadata["prob_thresh"], layer.metadata["nms_thresh"])
                    == thresholds, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not widget.labels_pending(), timeout=TIMEOUT)
    return layer


def test_clicked_points_in_world_coordinates_choose_the_point_f1_thresholds(
        qtbot, viewer_widget, entry, tune_errors):
    viewer, widget = viewer_widget
    image = _blobs()
    viewer.add_image(image, name="blobs", scale=SCALE, translate=TRANSLATE)
    _run(qtbot, widget)
    reference = _reference(entry, image, PredictSettings())
    voxels = _centres(reference.labels(0.7, 0.3))
    voxels = voxels[voxels[:, 2] < 30]  # a part of the volume: the region is the points' box
    viewer.add_points(voxels * SCALE + TRANSLATE, name="clicks")  # world coordinates
    points = clicked_points(voxels, SHAPE)
    _, expected = drain(tune_thresholds_on_points(
        [reference.labels], [points], min_prob=search_floor(reference)))
    assert expected.counts == PointCounts(tp=len(voxels)) and expected.objective == 1.0

    result = _tune(qtbot, widget, "clicks")

    found = result.found
    assert (found.prob, found.nms) == (expected.prob, expected.nms) == widget.thresholds()
    assert found.score == 1.0 and not result.scale_changed and len(result.per_scale) == 1
    text = widget.tune_section.status_label.text()
    assert f"probability {expected.prob:g}, NMS {expected.nms:g}" in text
    assert f"point F1 1.000 (TP {len(voxels)}, FP 0, FN 0)" in text
    layer = _wait_for_labels(qtbot, widget, widget.thresholds())
    np.testing.assert_array_equal(layer.data, reference.labels(*widget.thresholds()))
    assert widget.run_button.isEnabled() and widget._life.worker is None
    assert tune_errors == []


def test_ground_truth_labels_choose_the_mean_accuracy_thresholds(
        qtbot, viewer_widget, entry, tune_errors):
    viewer, widget = viewer_widget
    image = _blobs()
    viewer.add_image(image, name="blobs")
    _run(qtbot, widget)
    reference = _reference(entry, image, PredictSettings())
    truth = reference.labels(0.6, 0.3)
    viewer.add_labels(truth, name="truth")
    viewer.add_points(np.zeros((1, 3)), name="clicks")
    combo = widget.tune_section.source_combo
    # the user's layers are listed, the labels this widget made are not
    assert [combo.itemText(i) for i in range(combo.count())] == ["truth (labels)",
                                                                 "clicks (points)"]
    _, expected = drain(tune_thresholds_on_outputs(
        [reference.labels], [truth], min_prob=search_floor(reference)))
    assert expected.objective == 1.0
    widget.prob_slider.setValue(0.9)  # the tuning replaces the thresholds it started from

    result = _tune(qtbot, widget, "truth")

    assert (result.found.prob, result.found.nms) == (expected.prob, expected.nms)
    assert widget.thresholds() == (expected.prob, expected.nms)
    assert "mean accuracy 1.000" in widget.tune_section.status_label.text()
    layer = _wait_for_labels(qtbot, widget, widget.thresholds())
    np.testing.assert_array_equal(layer.data, reference.labels(*widget.thresholds()))
    assert tune_errors == []


def test_also_trying_scales_runs_the_network_once_per_new_scale(
        qtbot, viewer_widget, entry, tune_errors, network_calls):
    viewer, widget = viewer_widget
    image = _blobs()
    viewer.add_image(image, name="blobs")
    _run(qtbot, widget)
    big = _reference(entry, image, PredictSettings(scale=(1.25,) * 3))
    truth = big.labels(0.6, 0.3)  # ground truth that only the scale 1.25 reproduces
    viewer.add_labels(truth, name="truth")
    network_calls.clear()
    widget.tune_section.scales_check.setChecked(True)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT):  # re-run at the best scale
        result = _tune(qtbot, widget, "truth")

    assert network_calls == [(0.75,) * 3, (1.25,) * 3]  # the run's own scale reuses its output
    assert [s for s, _ in result.per_scale] == [(1.0,) * 3, (0.75,) * 3, (1.25,) * 3]
    assert result.scale == (1.25,) * 3 and result.scale_changed and result.found.score == 1.0
    assert result.found.score > max(score for s, score in result.per_scale if s != result.scale)
    assert widget.scale_mode() == "manual" and widget.scale() == (1.25,) * 3
    layer = _wait_for_labels(qtbot, widget, widget.thresholds())
    assert layer.metadata["scale"] == (1.25,) * 3
    np.testing.assert_array_equal(layer.data, big.labels(*widget.thresholds()))
    assert len(network_calls) == 2  # the re-run came from the cache
    assert "scale 1.25, 1.25, 1.25" in widget.tune_section.status_label.text()


def test_bad_annotations_are_refused_and_change_nothing(
        qtbot, viewer_widget, entry, tune_errors):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs", scale=SCALE, translate=TRANSLATE)
    section = widget.tune_section
    viewer.add_points(np.array([[10.0, 10.0, 10.0]]) * SCALE + TRANSLATE, name="ok clicks")
    bad = {
        "ok clicks": "Press Run first",
        "outside": "1 of 2 points lie outside the volume",
        "empty": "'empty' has no objects",
        "small": "'small' has shape (10, 10, 10), the segmented volume (32, 48, 48)",
        "flat": "'flat' is 2D",
        "no clicks": "There are no points",
    }
    messages = []
    section.tune_failed.connect(messages.append)
    section.source_combo.setCurrentIndex(section.source_combo.findData("ok clicks"))
    section.tune_button.click()  # before any run
    layer = _run(qtbot, widget)
    before, thresholds = layer.data.copy(), widget.thresholds()
    viewer.add_points(np.array([[1.0, 1.0, 1.0], [40.0, 1.0, 1.0]]) * SCALE + TRANSLATE,
                      name="outside")  # voxel z = 40 > 31
    viewer.add_labels(np.zeros(SHAPE, np.int32), name="empty")
    viewer.add_labels(np.ones((10, 10, 10), np.int32), name="small")
    viewer.add_points(np.array([[3.0, 4.0]]), name="flat")
    viewer.add_points(np.zeros((0, 3)), name="no clicks")
    for name in list(bad)[1:]:
        section.source_combo.setCurrentIndex(section.source_combo.findData(name))
        section.tune_button.click()
        assert widget._life.worker is None  # refused before any worker
    for message, expected in zip(messages, bad.values(), strict=True):
        assert expected in message
    assert tune_errors == messages and section.status_label.text() == messages[-1]
    assert widget.thresholds() == thresholds
    np.testing.assert_array_equal(_our_labels(viewer).data, before)


def test_tuning_is_refused_while_a_run_is_in_flight(
        qtbot, viewer_widget, blocking_network, tune_errors):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    viewer.add_labels(np.ones(SHAPE, np.int32), name="truth")
    with qtbot.waitSignal(widget.run_progress, timeout=TIMEOUT):
        widget.run()
    widget.tune_section.tune_button.click()
    assert tune_errors == ["A segmentation or tuning is running: wait for it to end."]
    with qtbot.waitSignal(widget.run_cancelled, timeout=TIMEOUT):
        widget.cancel()
        blocking_network["release"].set()


def test_cancel_while_trying_scales_changes_nothing(
        qtbot, viewer_widget, entry, tune_errors, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    layer = _run(qtbot, widget)
    before, thresholds, scale = layer.data.copy(), widget.thresholds(), widget.scale()
    viewer.add_labels(layer.data.copy(), name="truth")
    release, closed = threading.Event(), threading.Event()

    def blocked(model, image, settings):  # the network at a new scale: waits after a tile
        try:
            yield 0, 2
            assert release.wait(10)
            yield 1, 2
        finally:
            closed.set()

    monkeypatch.setattr(segmenter, "predict_network", blocked)
    section = widget.tune_section
    section.scales_check.setChecked(True)
    section.source_combo.setCurrentIndex(section.source_combo.findData("truth"))
    section.tune_button.click()
    qtbot.waitUntil(lambda: widget.status_label.text().startswith("Predicting (scale 0.75"),
                    timeout=TIMEOUT)
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    with qtbot.waitSignal(section.tune_failed, timeout=TIMEOUT) as blocker:
        widget.cancel()
        release.set()
    assert blocker.args == ["Tuning cancelled."] and tune_errors == []
    qtbot.waitUntil(closed.is_set, timeout=TIMEOUT)
    assert widget._life.worker is None and widget.run_button.isEnabled()
    assert (widget.thresholds(), widget.scale()) == (thresholds, scale)
    np.testing.assert_array_equal(_our_labels(viewer).data, before)


def test_time_series_uses_the_points_on_the_segmented_time_point(
        qtbot, viewer_widget, entry, tune_errors):
    viewer, widget = viewer_widget
    series = np.stack([_blobs(seed=s) for s in range(3)])
    viewer.add_image(series, name="movie")
    viewer.dims.set_current_step(0, 2)
    _run(qtbot, widget)
    reference = _reference(entry, series[2], PredictSettings())
    voxels = _centres(reference.labels(0.7, 0.3))
    other = np.array([[0.0, 5.0, 5.0, 5.0], [1.0, 6.0, 6.0, 6.0]])  # other time points
    clicks = np.concatenate([np.column_stack([np.full(len(voxels), 2.0), voxels]), other])
    viewer.add_points(clicks, name="clicks")
    viewer.add_points(other, name="elsewhere")
    _, expected = drain(tune_thresholds_on_points(
        [reference.labels], [clicked_points(voxels, SHAPE)], min_prob=search_floor(reference)))

    result = _tune(qtbot, widget, "clicks")

    assert (result.found.prob, result.found.nms) == (expected.prob, expected.nms)
    assert result.found.score == expected.objective == 1.0
    text = widget.tune_section.status_label.text()
    assert f"Used the {len(voxels)} of {len(clicks)} points on this volume." in text
    combo = widget.tune_section.source_combo
    combo.setCurrentIndex(combo.findData("elsewhere"))
    widget.tune_section.tune_button.click()
    assert tune_errors == ["None of the points of 'elsewhere' lie on the segmented volume "
                           "(time point)."]
