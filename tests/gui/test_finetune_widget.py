"""Fine-tune dock widget in a real viewer: training, cancel, and refusals without a worker."""
# ruff: noqa: E402

from __future__ import annotations

import json
import sys

# TensorFlow and Mesa's llvmpipe (Xvfb) each carry LLVM: TF must be loaded with RTLD_LOCAL
# (its default RTLD_GLOBAL would be blocked here) and before the first viewer creates an OpenGL
# context, or the process crashes (segfault / "free(): invalid pointer" at exit).
sys.modules.setdefault("tensorflow.python.pywrap_dlopen_global_flags", None)  # type: ignore
import tensorflow  # noqa: F401  isort: skip

import numpy as np
import pytest

from conftest import make_tiny_stardist3d
from napari_anystar import _paths
from napari_anystar._widgets import finetune
from napari_anystar._widgets.finetune import SCRATCH, FineTuneWidget, check_pair
from napari_anystar.model import registry
from napari_anystar.train import TrainEvent

TRAIN_TIMEOUT_MS = 120_000
BASE = "tiny-base"


def spheres(shape=(48, 48, 48), centres=((14, 14, 14), (33, 30, 16), (22, 34, 33)), r=7):
    """A float32 image of bright spheres on a dim background and its instance labels."""
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for i, (z, y, x) in enumerate(centres, start=1):
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r] = i
    rng = np.random.default_rng(0)
    image = (0.1 + 0.8 * (labels > 0) + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    return image, labels


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by the widget."""
    seen: list[str] = []
    monkeypatch.setattr(finetune, "show_error", seen.append)
    return seen


@pytest.fixture
def widget(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image, labels = spheres()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells-labels")
    w = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


@pytest.fixture
def base_model():
    """A tiny random-weight model registered as a user model (fine-tuning starts from it)."""
    folder = make_tiny_stardist3d(_paths.user_models_dir(), BASE)
    registry.notify_models_changed()
    return folder


def select(combo, text):
    index = combo.findText(text)
    assert index >= 0, f"{text!r} not in {[combo.itemText(i) for i in range(combo.count())]}"
    combo.setCurrentIndex(index)


def model_names(combo):
    return [e.name for e in (combo.itemData(i) for i in range(combo.count())) if e is not None]


def select_model(w, name):
    index = model_names(w.model_combo).index(name)
    w.model_combo.setCurrentIndex(index)


def add_pair(w, image="cells", labels="cells-labels"):
    select(w.image_combo, image)
    select(w.labels_combo, labels)
    w.add_pair_button.click()


def open_segment_widget(viewer):
    """Dock the Segment widget; returns its model combo box."""
    from napari_anystar._widgets.segment import SegmentWidget

    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    return seg.model_combo


def test_finetune_from_layer_pair(widget, base_model, qtbot, errors):
    w = widget
    segment_combo = open_segment_widget(w.viewer)  # opened before: must update by itself
    assert BASE in model_names(segment_combo) and "my-model" not in model_names(segment_combo)
    select_model(w, BASE)
    add_pair(w)
    assert w.pair_list.count() == 1
    w.steps_spin.setValue(4)
    w.batch_spin.setValue(1)
    w.tune_check.setChecked(False)  # tuning a random-weight model takes minutes
    w.name_edit.clear()
    qtbot.keyClicks(w.name_edit, "my-model")
    steps: list[tuple[int, int]] = []
    w.progress.connect(lambda s, t: steps.append((s, t)))

    with qtbot.waitSignal(w.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        w.start_button.click()
        # the user keeps editing the layer while training runs: the snapshot is unaffected
        w.viewer.layers["cells-labels"].data = np.zeros((48, 48, 48), np.uint16)
    folder = _paths.user_models_dir() / "my-model"
    assert blocker.args == [str(folder)]
    assert errors == []
    assert (folder / "config.json").is_file()
    assert any((folder / n).is_file() for n in ("weights_best.h5", "weights_last.h5"))
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert {"prob", "nms"} <= set(thresholds)
    assert "my-model" in [e.name for e in registry.list_models()]
    assert "my-model" in model_names(w.model_combo)
    assert "my-model" in model_names(segment_combo)
    assert str(folder) in w.status.text()
    # one progress signal and one plotted training-loss point per optimisation step
    assert [s for s, _ in steps] == [1, 2, 3, 4]
    assert all(t == 4 for _, t in steps)
    assert [s for s, _ in w.loss_plot.series["train"]] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for _, v in w.loss_plot.series["train"])
    assert w.progress_bar.value() == 4 and w.progress_bar.maximum() == 4
    assert w.worker is None and w.start_button.isEnabled()
    # one validation point (steps_per_epoch >= steps here), plotted at the last step
    assert [s for s, _ in w.loss_plot.series["val"]] == [4]


def test_cancel_keeps_loadable_checkpoint(widget, base_model, qtbot, errors):
    from stardist.models import StarDist3D

    w = widget
    select_model(w, BASE)
    add_pair(w)
    w.steps_spin.setValue(10_000)
    w.batch_spin.setValue(1)
    w.tune_check.setChecked(False)
    name = w.name_edit.text()
    reached_two = lambda step, total: step >= 2  # noqa: E731
    with qtbot.waitSignal(w.progress, timeout=TRAIN_TIMEOUT_MS, check_params_cb=reached_two):
        w.start_button.click()
    with qtbot.waitSignal(w.training_cancelled, timeout=TRAIN_TIMEOUT_MS) as blocker:
        w.cancel_button.click()
    folder = _paths.user_models_dir() / name
    assert blocker.args == [str(folder)]
    assert errors == []
    assert "Cancelled" in w.status.text() and str(folder) in w.status.text()
    assert 2 <= w.progress_bar.value() < 10_000
    model = StarDist3D(None, name=name, basedir=str(folder.parent))
    assert model.config.n_dim == 3
    assert name in [e.name for e in registry.list_models()]


@pytest.fixture
def fake_train(monkeypatch):
    """Replace the core trainer by a fast fake; returns the list of settings it was given."""
    calls: list = []

    def train(settings):
        calls.append(settings)
        yield TrainEvent("step", 1, 2, 0, loss=0.5)
        yield TrainEvent("step", 2, 2, 0, loss=0.25)
        yield TrainEvent("epoch", 2, 2, 1, loss=0.375, val_loss=0.625)
        if settings.extra.get("fail"):
            raise ValueError("the label volumes contain no objects (all zero)")
        settings.out_dir.mkdir()
        return settings.out_dir

    monkeypatch.setattr(finetune, "train", train)
    return calls


def test_settings_snapshot_and_mixing(widget, qtbot, fake_train):
    w = widget
    add_pair(w)
    w.generator_combo.setCurrentIndex(w.generator_combo.findData("as-mix"))
    w.fraction_spin.setValue(0.3)
    select(w.model_combo, SCRATCH)
    w.steps_spin.setValue(2)
    w.batch_spin.setValue(3)
    with qtbot.waitSignal(w.training_finished, timeout=10_000):
        w.start_button.click()
    (settings,) = fake_train
    layer_image = w.viewer.layers["cells"].data
    assert settings.generator == "as-mix" and settings.fraction() == pytest.approx(0.3)
    assert settings.base_model is None and settings.config == "lite"
    assert (settings.steps, settings.batch_size) == (2, 3)
    assert settings.out_dir.parent == _paths.user_models_dir()
    assert len(settings.images) == 1 and settings.images[0] is not layer_image
    assert not np.shares_memory(settings.images[0], layer_image)
    np.testing.assert_array_equal(settings.images[0], layer_image)
    np.testing.assert_array_equal(settings.labels[0], w.viewer.layers["cells-labels"].data)
    assert w.loss_plot.series == {"train": [(1, 0.5), (2, 0.25)], "val": [(2, 0.625)]}

    # generator only: every sample is synthetic, no real pairs
    w.remove_pair_button.click()
    with qtbot.waitSignal(w.training_finished, timeout=10_000):
        w.start_button.click()
    assert fake_train[1].fraction() == 1.0 and len(fake_train[1].images) == 0
    assert fake_train[1].out_dir != settings.out_dir  # a fresh default name after a run


def test_training_error_is_reported(widget, qtbot, fake_train, errors, monkeypatch):
    w = widget
    add_pair(w)
    real_settings = finetune.TrainSettings
    monkeypatch.setattr(
        finetune, "TrainSettings", lambda **kw: real_settings(**kw, extra={"fail": True})
    )
    with qtbot.waitSignal(w.training_failed, timeout=10_000) as blocker:
        w.start_button.click()
    assert blocker.args == ["the label volumes contain no objects (all zero)"]
    assert len(errors) == 1 and blocker.args[0] in errors[0] and w.status.text() == errors[0]
    assert w.worker is None and w.start_button.isEnabled() and not w.cancel_button.isEnabled()


def test_refuses_without_data_source(widget, qtbot, errors):
    w = widget
    select(w.generator_combo, finetune.NO_GENERATOR)
    with qtbot.assertNotEmitted(w.training_started):
        w.start_button.click()
    assert w.worker is None
    assert len(errors) == 1 and "No training data" in errors[0]
    assert w.status.text() == errors[0]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.zeros((48, 48, 48), np.uint16), "no objects"),
        (np.full((48, 48, 48), 3, np.uint16), "same value"),
        (np.zeros((40, 48, 48), np.uint16), "shape"),
    ],
    ids=["all-zero", "single-value", "shape-mismatch"],
)
def test_refuses_bad_labels(widget, qtbot, errors, labels, expected):
    w = widget
    w.viewer.add_labels(labels, name="bad")
    add_pair(w, labels="bad")
    with qtbot.assertNotEmitted(w.training_started):
        w.start_button.click()
    assert w.worker is None
    assert len(errors) == 1 and expected in errors[0] and "'bad'" in errors[0]
    assert w.status.text() == errors[0]


def test_refuses_existing_output_name(widget, qtbot, errors):
    w = widget
    add_pair(w)
    existing = _paths.user_models_dir() / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("user file")
    select(w.model_combo, SCRATCH)
    w.name_edit.setText("taken")
    with qtbot.assertNotEmitted(w.training_started):
        w.start_button.click()
    assert w.worker is None
    assert len(errors) == 1 and "already exists" in errors[0]
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_default_name_is_free(widget):
    w = widget
    name = w.name_edit.text()
    assert name.startswith("finetuned-")
    (_paths.user_models_dir() / name).mkdir()
    registry.notify_models_changed()
    assert w.name_edit.text() != name and w.name_edit.text().startswith(name)


def test_fraction_only_meaningful_with_both_sources(widget):
    w = widget
    select(w.generator_combo, finetune.NO_GENERATOR)
    assert not w.fraction_spin.isEnabled()
    w.generator_combo.setCurrentIndex(1)
    assert not w.fraction_spin.isEnabled()
    add_pair(w)
    assert w.fraction_spin.isEnabled()
    w.remove_pair_button.click()
    assert w.pair_list.count() == 0 and not w.fraction_spin.isEnabled()


def test_pair_list_follows_layers(widget):
    w = widget
    add_pair(w)
    w.viewer.layers["cells"].name = "nuclei"
    assert w.image_combo.currentText() == "nuclei"
    assert w.pair_list.item(0).text() == "nuclei  +  cells-labels"
    del w.viewer.layers["cells-labels"]
    assert w.pair_list.count() == 0
    assert w.labels_combo.findText("cells-labels") < 0


@pytest.mark.parametrize(
    ("image", "labels", "expected"),
    [
        (np.zeros((8, 8)), np.ones((8, 8), np.uint16), "2D"),
        (np.zeros((2, 8, 8, 8)), np.ones((2, 8, 8, 8), np.uint16), "4D"),
        (np.full((8, 8, 8), np.nan), np.ones((8, 8, 8), np.uint16), "NaN"),
        (np.zeros((8, 8, 8)), np.pad(np.ones((2, 2, 2), np.uint16), 3), None),
    ],
    ids=["2d", "4d", "nan", "ok"],
)
def test_check_pair(image, labels, expected):
    if expected is None:
        check_pair(image, labels, "img", "lbl")
        return
    with pytest.raises(ValueError, match=expected):
        check_pair(image, labels, "img", "lbl")


def test_check_pair_refuses_binary_mask_of_many_objects():
    _, labels = spheres()
    with pytest.raises(ValueError, match=r"binary mask .* 3 separate"):
        check_pair(np.zeros(labels.shape), (labels > 0).astype(np.uint8), "img", "lbl")


def test_progress_bar_says_nothing_before_a_run(widget):
    assert widget.progress_bar.text() == "" and widget.progress_bar.value() == 0
