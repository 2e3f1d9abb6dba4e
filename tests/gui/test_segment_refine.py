"""The Segment widget's *Refine outlines to the image* checkbox: refined labels after a Run,
StarDist's own when unticked (re-solved live, no network run), and back."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar._widgets._segment_form import HELP
from napari_anystar._widgets.segment import SegmentWidget
from napari_anystar.model import segmenter
from napari_anystar.model.refine import DEFAULT_REFINE

from .segment_helpers import TIMEOUT, _blobs, _docked, _labels_layers, _run


@pytest.fixture
def viewer_widget(make_napari_viewer, entry, errors):
    """Viewer and widget (manual scale) with *Refine outlines* as a new widget has it."""
    viewer, widget = _docked(make_napari_viewer, refine=DEFAULT_REFINE)
    widget.set_scale_mode("manual")
    return viewer, widget


def _refined(widget) -> bool:
    """Nothing pending: the refined outlines (or StarDist's labels, unticked) are shown."""
    return not widget.labels_pending() and widget.progress_bar.maximum() == 1


def _run_refined(qtbot, widget):
    """Run, then wait for the refined outlines that follow StarDist's labels."""
    layer = _run(qtbot, widget)
    qtbot.waitUntil(lambda: _refined(widget), timeout=TIMEOUT)
    return layer


def _toggle_and_wait(qtbot, widget, checked: bool):
    """Tick/untick the checkbox and wait for the labels it asks for; returns the layer."""
    with qtbot.waitSignal(widget.labels_updated, timeout=TIMEOUT) as blocker:
        widget.refine_check.setChecked(checked)
    qtbot.waitUntil(lambda: not widget.labels_pending(), timeout=TIMEOUT)
    return blocker.args[0]


def test_checkbox_is_ticked_by_default_and_explained(make_napari_viewer, entry, errors):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)  # as napari makes it: nothing set by the tests' helpers
    viewer.window.add_dock_widget(widget, name="Segment")
    check = widget.refine_check
    assert check.text() == "Refine outlines to the image"
    assert DEFAULT_REFINE is True and check.isChecked()
    assert check.toolTip() == HELP["refine"] and "outline" in check.toolTip()
    check.setChecked(False)  # nothing shown yet: nothing to re-solve, nothing fails
    assert widget._run is None and not _labels_layers(viewer) and errors == []


def test_toggling_refinement_re_solves_the_shown_labels(qtbot, viewer_widget, monkeypatch,
                                                        errors):
    viewer, widget = viewer_widget
    image = _blobs()
    original = image.copy()
    viewer.add_image(image, name="blobs")
    widget.set_scale((1.0, 1.0, 1.0))
    runs = []
    real = segmenter.predict_network

    def counting(*args, **kwargs):
        runs.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(segmenter, "predict_network", counting)
    shown: list[np.ndarray] = []
    widget.labels_updated.connect(lambda lay: shown.append(lay.data.copy()))

    layer = _run(qtbot, widget)  # the Run ends as soon as StarDist's labels are shown
    result = widget._run.result
    prob, nms = widget.thresholds()
    plain = result.solver.labels(prob, nms)
    np.testing.assert_array_equal(layer.data, plain)
    assert widget.status_label.text() == f"{plain.max()} objects (network); refining outlines..."
    assert widget.progress_bar.maximum() == 0  # busy: the refined outlines are on their way
    qtbot.waitUntil(lambda: _refined(widget), timeout=TIMEOUT)

    refined = result.refiner(plain)
    assert result.refiner.image is widget._run.volume.data
    assert refined.max() == plain.max() > 0 and np.sum(refined != plain) > 50
    assert len(shown) == 2  # StarDist's labels, then (same layer) their refined outlines
    np.testing.assert_array_equal(shown[0], plain)
    np.testing.assert_array_equal(layer.data, refined)
    assert layer.metadata["n_objects"] == plain.max()
    assert widget.status_label.text() == (f"{plain.max()} objects (probability {prob:.2f}, "
                                          f"NMS {nms:.2f}).")

    assert _toggle_and_wait(qtbot, widget, False) is layer  # the same layer, StarDist's labels
    np.testing.assert_array_equal(layer.data, plain)
    assert layer.metadata["n_objects"] == plain.max()

    assert _toggle_and_wait(qtbot, widget, True) is layer
    np.testing.assert_array_equal(layer.data, refined)

    widget.refine_check.setChecked(False)  # a slider move keeps the choice
    with qtbot.waitSignal(widget.labels_updated, timeout=TIMEOUT):
        widget.prob_slider.setValue(0.7)
    qtbot.waitUntil(lambda: layer.metadata["prob_thresh"] == 0.7 and not widget.labels_pending(),
                    timeout=TIMEOUT)
    np.testing.assert_array_equal(layer.data, result.solver.labels(0.7, nms))

    assert len(runs) == 1  # the network ran once: the rest was live solving
    assert len(_labels_layers(viewer)) == 1
    np.testing.assert_array_equal(viewer.layers["blobs"].data, original)  # input untouched
    assert errors == []


def test_unticked_run_shows_stardist_labels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    widget.set_scale((1.0, 1.0, 1.0))
    widget.refine_check.setChecked(False)

    layer = _run(qtbot, widget)

    result = widget._run.result
    assert not result.refined and _refined(widget)  # nothing follows StarDist's labels
    assert widget.status_label.text().endswith("objects (network).")
    np.testing.assert_array_equal(layer.data, result.solver.labels(*widget.thresholds()))
    assert _toggle_and_wait(qtbot, widget, True) is layer
    np.testing.assert_array_equal(layer.data,
                                  result.refiner(result.solver.labels(*widget.thresholds())))


def test_a_slider_move_shows_stardist_labels_then_their_refined_outlines(qtbot, viewer_widget,
                                                                         errors):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    widget.set_scale((1.0, 1.0, 1.0))
    layer = _run_refined(qtbot, widget)
    result, (_, nms) = widget._run.result, widget.thresholds()
    shown: list[tuple[np.ndarray, str, bool]] = []
    widget.labels_updated.connect(
        lambda lay: shown.append((lay.data.copy(), widget.status_label.text(),
                                  widget.progress_bar.maximum() == 0)))

    widget.prob_slider.setValue(0.7)
    qtbot.waitUntil(lambda: len(shown) == 2 and not widget.labels_pending(), timeout=TIMEOUT)

    plain = result.solver.labels(0.7, nms)
    (first, first_status, first_busy), (last, last_status, _) = shown
    np.testing.assert_array_equal(first, plain)  # StarDist's labels at once, marked busy
    assert first_busy and first_status.endswith("; refining outlines...")
    assert first_status.startswith(f"{plain.max()} objects (probability 0.70")
    np.testing.assert_array_equal(last, result.refiner(plain))  # then the refined outlines
    assert last_status == f"{plain.max()} objects (probability 0.70, NMS {nms:.2f})."
    np.testing.assert_array_equal(layer.data, last)
    assert widget.progress_bar.maximum() == 1  # no longer busy
    assert errors == []


def test_a_newer_slider_move_skips_the_refinement_of_an_older_one(qtbot, viewer_widget,
                                                                  monkeypatch, errors):
    import threading

    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    widget.set_scale((1.0, 1.0, 1.0))
    layer = _run_refined(qtbot, widget)
    result, (_, nms) = widget._run.result, widget.thresholds()
    release, started, refined = threading.Event(), threading.Event(), []
    real_labels, real_refiner = result.solver.labels, result.refiner

    def held_labels(prob, nms):
        if not started.is_set():  # the first request waits until the second is queued
            started.set()
            assert release.wait(TIMEOUT / 1000)
        return real_labels(prob, nms)

    def counting_refiner(labels):
        refined.append(labels.copy())
        return real_refiner(labels)

    monkeypatch.setattr(result.solver, "labels", held_labels)
    monkeypatch.setattr(widget, "_refiner_for", lambda _result: counting_refiner)
    widget._on_refine_toggled(True)  # the live target picks up the counting refiner
    qtbot.waitUntil(lambda: started.is_set(), timeout=TIMEOUT)
    widget.prob_slider.setValue(0.7)
    qtbot.waitUntil(lambda: widget._live._queued is not None, timeout=TIMEOUT)
    release.set()
    qtbot.waitUntil(lambda: layer.metadata["prob_thresh"] == 0.7 and not widget.labels_pending()
                    and widget.progress_bar.maximum() == 1, timeout=TIMEOUT)

    plain = result.solver.labels(0.7, nms)
    assert len(refined) == 1  # only the newest request was refined
    np.testing.assert_array_equal(refined[0], plain)
    np.testing.assert_array_equal(layer.data, real_refiner(plain))
    assert errors == []
