"""Issue 13's bad-input rows for the Fine-tune, Synthetic preview and Segment docks, in a real
viewer: each checks the message shown and that no user layer or file changed."""
# ruff: noqa: E402

from __future__ import annotations

import json
import shutil
import sys
import threading

# TensorFlow must be loaded before the first viewer's OpenGL context (see test_finetune_widget).
sys.modules.setdefault("tensorflow.python.pywrap_dlopen_global_flags", None)  # type: ignore
import tensorflow  # noqa: F401  isort: skip

import numpy as np
import pytest
from qtpy.QtWidgets import QPushButton

from napari_anystar import _paths
from napari_anystar._widgets import finetune
from napari_anystar._widgets import preview as preview_module
from napari_anystar._widgets.finetune import FineTuneWidget
from napari_anystar._widgets.preview import STAGE_GAP, SyntheticPreviewWidget
from napari_anystar._widgets.segment import SegmentWidget
from napari_anystar.model import registry
from napari_anystar.synth import SynthSettings
from napari_anystar.train import TrainEvent

TIMEOUT_MS = 120_000
UNFINISHED = "unfinished training (interrupted at step 14 of 100)"


def balls(shape=(60, 40, 40), n=6, r=4):
    """Image and instance labels: balls along the diagonal (objects at both ends of Z)."""
    grid = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for i, f in enumerate(np.linspace(0.15, 0.85, n), start=1):
        centre = [int(s * f) for s in shape]
        labels[sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r] = i
    return (0.1 + 0.8 * (labels > 0)).astype(np.float32), labels


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(finetune, "show_error", seen.append)
    monkeypatch.setattr(preview_module, "show_error", seen.append)
    return seen


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image, labels = balls()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells-labels")
    return viewer


@pytest.fixture
def tune_widget(viewer, errors):
    widget = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    return widget


def _layer_copies(viewer):
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


def _assert_layers_unchanged(viewer, before):
    assert set(before) <= {layer.name for layer in viewer.layers}
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)


def _add_pair(widget):
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("cells"))
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findText("cells-labels"))
    widget.add_pair_button.click()


@pytest.fixture
def fake_train(monkeypatch):
    """A trainer that prepares until cancelled, or (``steps`` > 0) trains and makes a folder."""
    control = {"steps": 0}

    def train(settings):
        done = 0
        while not control["steps"]:
            yield TrainEvent("prepare", 0, 10, 0, done=done, total=10**6,
                             message="generating synthetic samples")
            done += 1
            threading.Event().wait(0.01)  # in the worker thread: a slow data step
        for step in range(1, control["steps"] + 1):
            yield TrainEvent("step", step, control["steps"], 0, loss=1.0 / step)
        settings.out_dir.mkdir()
        return settings.out_dir

    monkeypatch.setattr(finetune, "train", train)
    return control


# ----------------------------------------------------------- row: cancelled fine-tune
def _unfinished_model(tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, _paths.user_models_dir() / "cut")
    record = {"status": "interrupted", "steps_done": 14, "total_steps": 100}
    (folder / "training.json").write_text(json.dumps(record))
    registry.notify_models_changed()
    return folder


@pytest.mark.parametrize("dock", ["segment", "finetune"])
def test_unfinished_model_is_marked_in_model_lists(viewer, errors, tiny_model_dir, dock):
    folder = _unfinished_model(tiny_model_dir)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    widget = SegmentWidget(viewer) if dock == "segment" else FineTuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name=dock)
    combo = widget.model_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert f"cut (user): {UNFINISHED}" in texts
    assert errors == []
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_cancel_before_the_first_step_says_nothing_was_saved(tune_widget, qtbot, fake_train,
                                                              errors):
    w = tune_widget
    before = _layer_copies(w.viewer)
    name = w.name_edit.text()
    w.generator_combo.setCurrentIndex(w.generator_combo.findData("as-mix"))
    w.start_button.click()
    qtbot.waitUntil(lambda: w.progress_bar.format().startswith("generating"),
                    timeout=TIMEOUT_MS)
    with qtbot.waitSignal(w.training_cancelled, timeout=TIMEOUT_MS):
        w.cancel_button.click()
    assert w.status.text() == "Cancelled before the first training step; nothing was saved."
    assert not (_paths.user_models_dir() / name).exists()
    assert w.progress_bar.text() == ""  # no "step 0 / 10"
    assert errors == []
    _assert_layers_unchanged(w.viewer, before)


# ----------------------------------------------------- row: fine-tune with one pair
def test_one_pair_states_its_held_out_slab(tune_widget, qtbot, fake_train, errors):
    w = tune_widget
    before = _layer_copies(w.viewer)
    _add_pair(w)
    w.generator_combo.setCurrentIndex(w.generator_combo.findText(finetune.NO_GENERATOR))
    fake_train["steps"] = 2
    with qtbot.waitSignal(w.training_finished, timeout=TIMEOUT_MS):
        w.start_button.click()
    text = w.validation_label.text()
    assert text.startswith("Validation: a held-out slab of the image/labels pair: the last ")
    assert "Z planes" in text and "training uses the rest" in text
    assert errors == []
    _assert_layers_unchanged(w.viewer, before)


@pytest.mark.parametrize("moment", ["before a run", "starting", "failed before a step"])
def test_progress_bar_reads_sensibly_before_the_first_step(tune_widget, qtbot, fake_train,
                                                           errors, monkeypatch, moment):
    w = tune_widget
    if moment == "before a run":
        assert (w.progress_bar.text(), w.progress_bar.value()) == ("", 0)
        return
    _add_pair(w)
    if moment == "failed before a step":
        def broken(settings):
            raise ValueError("the label volumes contain no objects (all zero)")
            yield  # a generator, as the real trainer

        monkeypatch.setattr(finetune, "train", broken)
        with qtbot.waitSignal(w.training_failed, timeout=TIMEOUT_MS):
            w.start_button.click()
        assert w.progress_bar.text() == "" and "step" not in w.progress_bar.format()
        assert errors == ["Training failed: the label volumes contain no objects (all zero)"]
        return
    w.start_button.click()  # the worker's events wait for this test to yield to Qt
    assert w.progress_bar.format() == "preparing..." and w.progress_bar.maximum() == 0
    assert "step" not in w.progress_bar.format()
    w.cancel_button.click()
    qtbot.waitUntil(lambda: not w.is_running(), timeout=TIMEOUT_MS)


# ---------------------------------------------------- row: synthetic preview stages
def test_stage_layers_of_other_sizes_are_placed_beside_the_grid(make_napari_viewer, qtbot,
                                                                errors):
    viewer = make_napari_viewer()
    user = viewer.add_image(np.ones((8, 8, 8), np.float32), name="mine")
    widget = SyntheticPreviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthetic preview")
    assert "beside the grid" in widget._stages.toolTip()
    widget._stages.setChecked(True)
    widget._size.setValue(32)
    grid, size = SynthSettings().grid_size, 32
    with qtbot.waitSignal(widget.generated, timeout=TIMEOUT_MS) as blocker:
        widget._generate_btn.click()
    placed = {layer.name.rsplit(" ", 1)[1]: tuple(layer.translate) for layer in blocker.args[0]}
    centred = (grid - size) / 2
    assert placed == {"L": (0, 0, 0), "g(L)": (0, 0, 0),
                      "A(g(L))": (centred, centred, grid + STAGE_GAP),
                      "image": (centred, centred, grid + STAGE_GAP),
                      "labels": (centred, centred, grid + STAGE_GAP)}
    # without stages the same sample's layers go back to the origin
    widget._stages.setChecked(False)
    with qtbot.waitSignal(widget.generated, timeout=TIMEOUT_MS) as blocker:
        widget._generate_btn.click()
    assert [tuple(layer.translate) for layer in blocker.args[0]] == [(0, 0, 0)] * 2
    assert tuple(user.translate) == (0, 0, 0) and float(user.data.sum()) == 512
    assert errors == []
    qtbot.waitUntil(lambda: not widget.is_generating, timeout=TIMEOUT_MS)


# -------------------------------------------------------------- row: Segment dock
def test_docks_fit_a_narrow_panel_and_every_button_has_a_tooltip(viewer, errors):
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(tune, name="Fine-tune")
    preview = SyntheticPreviewWidget(viewer)
    viewer.window.add_dock_widget(preview, name="Synthetic preview")
    assert segment.minimumSizeHint().width() <= 400
    for dock in (segment, tune, preview):
        buttons = dock.findChildren(QPushButton)
        assert buttons
        untipped = [b.text() for b in buttons if not b.toolTip().strip()]
        assert untipped == [], f"{type(dock).__name__}: {untipped}"
    assert errors == []
