"""Segment dock widget settings: scale (auto/manual), normalisation, refused input, models.

Run, live thresholds, cache and cancel are in ``test_segment_widget.py``; fixtures are in
``conftest.py``.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import drain
from napari_anystar import _paths
from napari_anystar._widgets import segment as segment_module
from napari_anystar._widgets.segment import SegmentWidget
from napari_anystar.model import model_settings, registry
from napari_anystar.model.object_size import FALLBACK_SCALE, auto_scale
from napari_anystar.model.predict import PredictSettings
from napari_anystar.normalization import ANYSTAR, LEGACY, Normalization

from .segment_helpers import SHAPE, TIMEOUT, _blobs, _docked, _labels_layers, _reference, _run


# ----------------------------------------------------------- scale and normalisation
def test_default_scale_is_auto_and_the_boxes_show_the_scale_used(
    qtbot, make_napari_viewer, wide_model_dir, errors, warnings, monkeypatch
):
    entry = registry.remember_model_folder(wide_model_dir)
    viewer, widget = _docked(make_napari_viewer)
    assert widget.scale_mode() == "auto"
    assert widget.scale() == FALLBACK_SCALE and not widget.scale_spins[0].isEnabled()
    image = _blobs()
    viewer.add_image(image, name="blobs", scale=(2.0, 1.0, 1.0))  # auto ignores voxel size
    assert widget.scale() == FALLBACK_SCALE
    stages = []
    real_progress = widget._on_progress
    monkeypatch.setattr(widget, "_on_progress",
                        lambda progress: (stages.append(progress), real_progress(progress)))

    layer = _run(qtbot, widget)

    # the scale is chosen in the worker, with progress, then the network runs at it
    assert stages[:3] == [("size", 0, 2), ("size", 1, 2), ("size", 2, 2)]
    total = stages[-1][2]
    assert stages[3:] == [("tiles", done, total) for done in range(total + 1)]
    model = registry.load_model(entry)
    prob, nms = widget.thresholds()
    expected = drain(auto_scale(model, image, PredictSettings(), prob))[1]
    assert not expected.fell_back and expected.scale != FALLBACK_SCALE
    assert widget.scale() == pytest.approx(expected.scale)  # the boxes show the scale used
    meta = layer.metadata
    assert meta["scale_mode"] == "auto" and meta["scale"] == expected.scale
    assert meta["scale_note"] == expected.note
    assert f"Auto scale: {expected.note}" in widget.status_label.text()
    reference = _reference(entry, image, PredictSettings(scale=expected.scale))
    np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))
    assert errors == [] and warnings == []
    # a second Run on the same volume reuses the chosen scale and the network output
    stages.clear()
    layer = _run(qtbot, widget)
    assert [s for s in stages if s[0] == "size"] == []
    assert layer.metadata["scale"] == expected.scale
    np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))


def test_auto_scale_falls_back_with_a_warning(qtbot, make_napari_viewer, entry, errors,
                                              warnings):
    viewer, widget = _docked(make_napari_viewer)
    viewer.add_image(_blobs(), name="blobs")
    widget.prob_slider.setValue(1.0)  # nothing passes: no size to measure
    layer = _run(qtbot, widget)
    note = "found 0 object(s), too few to measure their size: using the fallback scale (1, 1, 1)."
    assert warnings == [f"'blobs': {note}"] and errors == []
    assert layer.metadata["scale"] == FALLBACK_SCALE and layer.metadata["scale_note"] == note
    assert widget.scale() == FALLBACK_SCALE and note in widget.status_label.text()


def test_normalisation_boxes_follow_the_model(qtbot, make_napari_viewer, entry, tmp_path,
                                              monkeypatch):
    trained = tmp_path / "trained"
    shutil.copytree(entry.path, trained)
    recorded = Normalization(0.5, 99.9, clip=True)
    (trained / "anystar.json").write_text(json.dumps({"normalization": recorded.to_json()}))
    paper = tmp_path / "anystar-mix"
    shutil.copytree(entry.path, paper)
    (paper / "config.json").write_text((paper / "config.json").read_text() + " ")
    for name, attr in (("config.json", "PAPER_CONFIG_SHA256"),
                       ("weights_best.h5", "PAPER_WEIGHTS_SHA256")):
        monkeypatch.setattr(model_settings, attr, model_settings.file_sha256(paper / name))
    for folder in (trained, paper):
        registry.remember_model_folder(folder)
    _, widget = _docked(make_napari_viewer)
    combo = widget.model_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts == [f"{entry.name} (folder)", "trained (folder)",
                     "anystar-mix (folder): AnyStar-mix (paper weights)"]
    assert widget.normalization() == LEGACY  # the first model records none
    combo.setCurrentIndex(1)
    assert widget.normalization() == recorded
    assert widget.norm_clip_check.isChecked()
    combo.setCurrentIndex(2)
    assert widget.normalization() == ANYSTAR
    assert "Normalisation: percentiles 0-99.9, clipped" in combo.itemData(
        2, Qt.ItemDataRole.ToolTipRole)
    widget.norm_high.setValue(99.0)  # the user can override
    assert widget.predict_settings().norm == Normalization(0.0, 99.0, clip=True)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (np.ones((48, 48), np.float32), {}, "2D"),
        (np.zeros((16, 32, 32, 3), np.uint8), {"rgb": True}, "RGB"),
        (np.full(SHAPE, 3.0, np.float32), {}, "constant"),
        (np.where(_blobs() > 0.5, np.nan, _blobs()), {}, "NaN"),
        (_blobs()[:4], {}, "too small"),
    ],
    ids=["2d", "rgb", "constant", "nan", "small"],
)
def test_bad_input_is_refused_without_worker(qtbot, viewer_widget, errors, data, kwargs, message):
    viewer, widget = viewer_widget
    viewer.add_image(data, name="bad", **kwargs)
    with qtbot.waitSignal(widget.run_failed, timeout=1000) as blocker:
        widget.run()
    assert message in blocker.args[0]
    assert message in widget.status_label.text()
    assert errors == [blocker.args[0]]
    assert widget._life.worker is None
    assert _labels_layers(viewer) == []


def test_suggest_scale_failures_are_reported_and_leave_the_scale(qtbot, viewer_widget, errors,
                                                                monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(np.ones((48, 48), np.float32), name="flat")
    with qtbot.waitSignal(widget.run_failed, timeout=1000) as blocker:
        widget.suggest_scale()  # refused before any worker
    assert "2D" in blocker.args[0] and widget._life.worker is None

    viewer.add_image(_blobs(), name="blobs")
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("blobs"))
    before = [spin.value() for spin in widget.scale_spins]
    widget.prob_slider.setValue(0.3)  # not used: Suggest measures at the model's threshold
    monkeypatch.setattr(segment_module, "model_thresholds", lambda entry: (1.0, 0.4))
    with qtbot.waitSignal(widget.run_failed, timeout=TIMEOUT) as blocker:
        widget.suggest_scale()  # nothing passes probability 1: no size to measure
        started = widget.status_label.text()
    assert "model's probability threshold (1.00)" in started
    assert "too few to estimate" in blocker.args[0]
    assert "too few to estimate" in widget.status_label.text()
    assert [spin.value() for spin in widget.scale_spins] == before
    assert widget.run_button.isEnabled() and widget.suggest_scale_button.isEnabled()
    assert _labels_layers(viewer) == []


def test_no_models_explains_and_add_folder_validates(
    qtbot, make_napari_viewer, seg_model_dir, tmp_path, errors
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-anystar", "Segment")  # manifest
    assert isinstance(widget, SegmentWidget)
    viewer.add_image(_blobs(), name="blobs")
    assert widget.model_combo.count() == 0
    assert not widget.no_models_label.isHidden()
    assert "Add model folder" in widget.no_models_label.text()
    assert not widget.run_button.isEnabled()
    with qtbot.waitSignal(widget.run_failed, timeout=1000):
        widget.run()
    assert _labels_layers(viewer) == []

    assert widget.add_model_folder(tmp_path) is None  # not a model folder
    assert "config.json" in widget.status_label.text() and errors
    corrupt = shutil.copytree(seg_model_dir, tmp_path / "corrupt")
    (corrupt / "weights_best.h5").write_bytes(b"not an hdf5 file")
    assert widget.add_model_folder(corrupt) is None  # weights checked when added
    assert "cannot load the model" in widget.status_label.text()
    assert widget.model_combo.count() == 0 and registry.list_models() == []

    added = widget.add_model_folder(seg_model_dir)
    assert added is not None and widget.selected_model() == added
    assert widget.no_models_label.isHidden() and widget.run_button.isEnabled()


def test_new_models_appear_when_the_registry_changes(qtbot, viewer_widget, seg_model_dir):
    _, widget = viewer_widget
    assert widget.model_combo.count() == 1
    shutil.copytree(seg_model_dir, _paths.user_models_dir() / "fresh")
    thread = threading.Thread(target=registry.notify_models_changed)  # like a training worker
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: widget.model_combo.count() == 2, timeout=5000)
    assert widget.selected_model().source == "folder"  # the selection is kept
