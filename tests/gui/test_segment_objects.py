"""The Segment widget's *Objects* choice: bright, dark (the network sees the negated image) or
auto (Run measures the objects it found and segments the negated image if they are dark)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import drain
from napari_anystar._widgets import segment as segment_module
from napari_anystar._widgets._segment_form import HELP
from napari_anystar.model import segmenter
from napari_anystar.model.cache import PredictionCache
from napari_anystar.model.polarity import DEFAULT_POLARITY
from napari_anystar.model.predict import PredictSettings

from .segment_helpers import TIMEOUT, _blobs, _docked, _run


@pytest.fixture
def viewer_widget(make_napari_viewer, entry, errors):
    viewer, widget = _docked(make_napari_viewer)
    widget.set_scale_mode("manual")
    widget.set_scale((1.0, 1.0, 1.0))
    viewer.add_image(_blobs(), name="blobs")
    return viewer, widget


@pytest.fixture
def judged(monkeypatch):
    """The pipeline's contrast measure, counting calls: bright objects, or with ``dark`` dark
    ones as given and bright ones in the negation that follows."""
    calls = {"n": 0, "dark": False}

    def object_contrast(*_args):
        calls["n"] += 1
        return -0.1 if calls["dark"] and calls["n"] % 2 else 0.1

    monkeypatch.setattr(segmenter, "object_contrast", object_contrast)
    return calls


def _expected(entry, widget, polarity):
    settings = PredictSettings(norm=widget.normalization())
    return drain(segmenter.network_job(entry, _blobs(), settings, widget.thresholds(),
                                       PredictionCache(), refine=False,
                                       polarity=polarity))[1].labels


def test_the_choice_defaults_to_auto_and_is_explained(viewer_widget):
    _, widget = viewer_widget
    assert DEFAULT_POLARITY == "auto" and widget.polarity() == "auto"
    assert [widget.objects_combo.itemData(i) for i in range(widget.objects_combo.count())] == [
        "auto", "bright", "dark"]
    assert widget.objects_combo.toolTip() == HELP["objects"] and "negated" in HELP["objects"]


def test_auto_run_with_dark_objects_shows_the_negated_images_labels(
        qtbot, viewer_widget, entry, judged, monkeypatch):
    _, widget = viewer_widget
    judged["dark"] = True
    layer = _run(qtbot, widget)
    assert judged["n"] == 2 and widget._run.result.settings.invert
    np.testing.assert_array_equal(layer.data, _expected(entry, widget, "dark"))
    assert widget.status_label.text().startswith("Dark objects: segmented the negated image.")
    assert layer.metadata["negated"] is True
    # Suggest measures the volume the Run segmented: negated (the tiny model's estimate is
    # far off, so the Run that would follow it is left out)
    asked, real = [], segment_module.scale_job

    def scale_job(entry, data, settings, *args):
        asked.append(settings.invert)
        return real(entry, data, settings, *args)

    monkeypatch.setattr(segment_module, "scale_job", scale_job)
    monkeypatch.setattr(widget, "run", lambda: None)
    with qtbot.waitSignal(widget.scale_suggested, timeout=TIMEOUT):
        widget.suggest_scale()
    assert asked == [True]


def test_the_status_and_metadata_tell_the_choice_the_run_started_with(
        qtbot, viewer_widget, judged):
    """*Objects* changed while a Run is under way: that Run still reports auto's choice (the
    next Run takes the new one)."""
    _, widget = viewer_widget
    judged["dark"] = True
    bright = widget.objects_combo.findData("bright")
    widget.run_progress.connect(lambda *_: widget.objects_combo.setCurrentIndex(bright))
    layer = _run(qtbot, widget)
    assert widget.polarity() == "bright" and widget._run.result.settings.invert
    assert widget.status_label.text().startswith("Dark objects: segmented the negated image.")
    assert layer.metadata["objects"] == "auto" and layer.metadata["negated"] is True


def test_stated_polarities_are_not_measured(qtbot, viewer_widget, entry, judged):
    _, widget = viewer_widget
    judged["dark"] = True  # would negate, if asked
    widget.objects_combo.setCurrentIndex(widget.objects_combo.findData("bright"))
    layer = _run(qtbot, widget)
    assert judged["n"] == 0 and not widget._run.result.settings.invert
    np.testing.assert_array_equal(layer.data, _expected(entry, widget, "bright"))
    assert "negated" not in widget.status_label.text()
    widget.objects_combo.setCurrentIndex(widget.objects_combo.findData("dark"))
    layer = _run(qtbot, widget)
    assert judged["n"] == 0 and widget._run.result.settings.invert
    np.testing.assert_array_equal(layer.data, _expected(entry, widget, "dark"))
