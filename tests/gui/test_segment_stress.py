"""Random sequences of Segment and Fine-tune jobs in real viewers: no crash, hang or odd status.

Each seed plays one sequence of user actions (Run, Suggest, scale change, sliders, Cancel,
a one-step fine-tune, removing layers, closing the viewer, often while a job runs) on a
fresh viewer with a tiny model. Every action must end in one of its expected
outcomes within the timeout; a crash ends the test process, a hang fails the wait.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from napari_anystar import _tf
from napari_anystar._widgets import finetune
from napari_anystar._widgets.finetune import FineTuneWidget

from .segment_helpers import TIMEOUT, _blobs, _docked
from .test_finetune_widget import select, spheres

N_SEQUENCES = 20
ACTIONS = ("run", "run", "suggest", "scale", "sliders", "cancel", "finetune", "finetune_run",
           "remove_labels", "remove_image", "add_image")
SCALES = ((1.0, 1.0, 1.0), (1.25, 1.0, 1.0), (0.8, 0.9, 0.9))
SUGGEST_FAILURES = ("too few to estimate",)


class Outcomes:
    """The first outcome signal of the Segment widget after each action."""

    def __init__(self, widget) -> None:
        self.seen: list[tuple] = []
        widget.run_finished.connect(lambda layer: self.seen.append(("finished", layer)))
        widget.run_failed.connect(lambda text: self.seen.append(("failed", text)))
        widget.run_cancelled.connect(lambda: self.seen.append(("cancelled",)))
        widget.scale_suggested.connect(lambda est: self.seen.append(("suggested", est)))

    def wait(self, qtbot, widget) -> tuple:
        qtbot.waitUntil(lambda: bool(self.seen) and widget._life.worker is None,
                        timeout=TIMEOUT)
        outcome = self.seen[-1]
        self.seen.clear()
        return outcome


def _our_labels(viewer, widget):
    """The labels layer the widget makes for the image it has selected (none or one)."""
    name = f"{widget.image_combo.currentData()} labels"
    return [layer for layer in viewer.layers
            if layer._type_string == "labels" and layer.name == name]


def _thresholds_shown(viewer, widget) -> tuple | None:
    layers = _our_labels(viewer, widget)
    return (layers[0].metadata["prob_thresh"], layers[0].metadata["nms_thresh"]) if layers \
        else None


def _finetune_outcome(fine):
    seen: list[tuple] = []
    fine.training_finished.connect(lambda path: seen.append(("finished", path)))
    fine.training_failed.connect(lambda text: seen.append(("failed", text)))
    fine.training_cancelled.connect(lambda path: seen.append(("cancelled", path)))
    return seen


def _start_finetune(fine, name: str) -> None:
    select(fine.image_combo, "cells")
    select(fine.labels_combo, "cells-labels")
    if fine.pair_list.count() == 0:
        fine.add_pair_button.click()
    fine.steps_spin.setValue(1)
    fine.batch_spin.setValue(1)
    fine.tune_check.setChecked(False)
    fine.name_edit.setText(name)
    fine.start_button.click()


def _owner_idle(qtbot) -> None:
    owner = _tf._owner
    if owner is not None:
        qtbot.waitUntil(owner.idle.is_set, timeout=TIMEOUT)


@pytest.fixture
def entry(wide_model_dir):
    """The tiny model with ~12-voxel objects: Suggest keeps the scale near 1 (the sharpened
    model's objects are small, so its suggested scales blow the volume up and NMS crawls)."""
    from napari_anystar.model import registry

    return registry.remember_model_folder(wide_model_dir)


@pytest.mark.parametrize("seed", range(N_SEQUENCES))
def test_random_job_sequence(seed, qtbot, make_napari_viewer, entry, errors, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(finetune, "show_error", errors.append)
    viewer, widget = _docked(make_napari_viewer)
    widget.set_scale_mode("manual")
    widget.set_scale((1.0, 1.0, 1.0))
    image, labels = spheres(shape=(32, 40, 40), centres=((10, 12, 12), (20, 26, 24)), r=6)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells-labels")
    viewer.add_image(_blobs(seed), name="blobs")
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("blobs"))
    fine = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(fine, name="Fine-tune")
    bases = [fine.model_combo.itemData(i) for i in range(fine.model_combo.count())]
    fine.model_combo.setCurrentIndex(
        next(i for i, e in enumerate(bases) if e is not None and e.name == entry.name))
    fine_seen = _finetune_outcome(fine)
    outcomes = Outcomes(widget)
    expected_errors = 0
    has_blobs = True  # removing "blobs" leaves "cells": the widget then segments that one

    for step in range(rng.randint(5, 9)):
        action = rng.choice(ACTIONS)
        before = [layer.data.copy() for layer in _our_labels(viewer, widget)]
        if action in ("run", "cancel"):
            widget.run()
            if action == "cancel":
                widget.cancel()
                assert outcomes.wait(qtbot, widget) == ("cancelled",)
                assert widget.status_label.text() == "Cancelled."
                after = [layer.data for layer in _our_labels(viewer, widget)]
                assert len(after) == len(before)
                for old, new in zip(before, after, strict=True):
                    np.testing.assert_array_equal(old, new)
            else:
                kind, layer = outcomes.wait(qtbot, widget)
                assert kind == "finished" and layer is _our_labels(viewer, widget)[0]
                assert widget.status_label.text().endswith(")."), widget.status_label.text()
        elif action == "suggest":
            ran = widget._run is not None
            widget.suggest_scale()
            outcome = outcomes.wait(qtbot, widget)
            if outcome[0] == "finished":  # labels were shown: re-solved at the new scale
                assert ran
                assert tuple(outcome[1].metadata["scale"]) == widget.scale()
            elif outcome[0] == "failed":  # a random sharpened model may find too few blobs
                assert any(text in outcome[1] for text in SUGGEST_FAILURES), outcome[1]
                expected_errors += 1
            else:
                assert outcome[0] == "suggested"
                assert widget.scale() == outcome[1].scale
        elif action == "scale":
            widget.set_scale_mode("manual")
            widget.set_scale(rng.choice(SCALES))
        elif action == "sliders":
            run = widget._run
            if run is not None and run.input_name == widget.image_combo.currentData() \
                    and _our_labels(viewer, widget):
                for slider, values in ((widget.prob_slider, (0.3, 0.5, 0.7)),
                                       (widget.nms_slider, (0.2, 0.4, 0.6))):
                    slider.setValue(rng.choice(values))
                    wanted = widget.thresholds()
                    qtbot.waitUntil(lambda w=wanted: _thresholds_shown(viewer, widget) == w,
                                    timeout=TIMEOUT)
        elif action in ("finetune", "finetune_run"):
            _start_finetune(fine, f"stress-{seed}-{step}")
            if action == "finetune_run":
                widget.run()  # a segmentation while the fine-tune trains
                assert outcomes.wait(qtbot, widget)[0] == "finished"
            qtbot.waitUntil(lambda: bool(fine_seen) and not fine.is_running(), timeout=TIMEOUT)
            outcome = fine_seen.pop()
            assert outcome[0] == "finished", outcome
        elif action == "remove_labels":
            for layer in _our_labels(viewer, widget):
                viewer.layers.remove(layer)
        elif action == "remove_image" and has_blobs:
            viewer.layers.remove("blobs")
            has_blobs = False
            assert widget.image_combo.currentData() == "cells"
        elif action == "add_image" and not has_blobs:
            viewer.add_image(_blobs(seed + step), name="blobs")
            widget.image_combo.setCurrentIndex(widget.image_combo.findData("blobs"))
            has_blobs = True
    assert len(errors) == expected_errors, errors

    # end: close the viewer, half the time while a job is running
    if rng.random() < 0.5:
        widget.run()
        if rng.random() < 0.5:
            _start_finetune(fine, f"stress-{seed}-end")
    viewer.close()
    _owner_idle(qtbot)
    assert _tf.tf_call(lambda: 1) == 1  # TensorFlow's thread still answers
