"""A fresh install: the Segment widget offers the shipped model and segments with it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar._widgets.segment import SegmentWidget
from napari_anystar.analysis import pooled_scores
from napari_anystar.model import registry
from napari_anystar.synth import SynthSettings, generate

pytestmark = pytest.mark.bundled_model
TIMEOUT = 120_000  # ms; the first TensorFlow run on a loaded 2-core CI machine
#: Clean AS-Mix blobs (no A(.)), seed 9004: the shipped model's F1 at IoU 0.5 measured 0.95.
MIN_F1 = 0.6


@pytest.fixture
def sample():
    return generate("as-mix", 9004, SynthSettings(augment=False))


def _docked_widget(make_napari_viewer, image, name):
    viewer = make_napari_viewer()
    viewer.add_image(image, name=name)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    return widget


def test_widget_starts_on_the_shipped_model_and_finds_nuclei(make_napari_viewer, qtbot, errors,
                                                            sample):
    widget = _docked_widget(make_napari_viewer, sample.image, "nuclei")

    entry = widget.selected_model()
    assert (entry.name, entry.source) == (registry.DEFAULT_MODEL_NAME, "bundled")
    assert widget.thresholds() == pytest.approx(registry.model_thresholds(entry), abs=0.01)
    assert widget.normalization() == registry.model_normalization(entry.path)
    assert widget.scale_mode() == "auto"  # the default: Suggest from raw voxels, then Run

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.run()
    layer = blocker.args[0]
    assert widget.refine_check.isChecked()  # the default: refined outlines follow
    qtbot.waitUntil(lambda: not widget.labels_pending(), timeout=TIMEOUT)
    assert widget.status_label.text().endswith(")."), widget.status_label.text()
    assert errors == []
    assert layer.metadata["model"] == registry.DEFAULT_MODEL_NAME
    assert layer.metadata["ray_scale"] == registry.ray_scale(entry.path) > 1.0
    assert layer.metadata["scale_mode"] == "auto"
    assert tuple(layer.metadata["scale"]) == pytest.approx(widget.scale())
    assert layer.metadata["scale"] != (1.0, 1.0, 1.0)  # measured, not the fallback
    assert layer.data.shape == sample.image.shape
    scores = pooled_scores([sample.labels], [np.asarray(layer.data, np.int32)], (0.5,))
    assert scores.f1[0] >= MIN_F1


def test_suggest_scale_sets_the_spins_and_the_run_uses_them(make_napari_viewer, qtbot, errors,
                                                            sample):
    """Objects blown up 1.6x: Suggest shrinks the scale, Run then segments at that scale."""
    from scipy import ndimage as ndi

    widget = _docked_widget(make_napari_viewer, ndi.zoom(sample.image, 1.6, order=1),
                            "big nuclei")
    assert [spin.value() for spin in widget.scale_spins] == [1.0, 1.0, 1.0]

    with qtbot.waitSignal(widget.scale_suggested, timeout=TIMEOUT) as blocker:
        widget.suggest_scale()
    estimate = blocker.args[0]
    assert errors == []
    spins = [spin.value() for spin in widget.scale_spins]
    assert spins == pytest.approx(estimate.scale, abs=1e-3)
    assert widget.scale_mode() == "manual"  # the suggestion is kept, editable
    assert all(0.3 < s < 1.0 for s in spins)
    assert "scale set to" in widget.status_label.text()
    assert widget.run_button.isEnabled() and widget.suggest_scale_button.isEnabled()

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.run()
    layer = blocker.args[0]
    qtbot.waitUntil(lambda: not widget.labels_pending(), timeout=TIMEOUT)  # refined outlines
    assert tuple(layer.metadata["scale"]) == pytest.approx(estimate.scale)
    truth = ndi.zoom(sample.labels, 1.6, order=0).astype(np.int32)
    scores = pooled_scores([truth], [np.asarray(layer.data, np.int32)], (0.5,))
    assert scores.f1[0] >= MIN_F1
