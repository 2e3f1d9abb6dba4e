"""The "Synthetic preview" dock widget in a real viewer (Xvfb): layers, workers, export."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.layers import Image, Labels
from qtpy.QtCore import Qt

from napari_anystar._widgets import preview as preview_module
from napari_anystar._widgets._layers import OWNER_KEY
from napari_anystar._widgets.preview import SyntheticPreviewWidget
from napari_anystar.synth import GENERATOR_TITLES, SynthSettings

TIMEOUT_MS = 120_000


@pytest.fixture
def errors(monkeypatch):
    """Messages the widget sent to napari's show_error."""
    shown: list[str] = []
    monkeypatch.setattr(preview_module, "show_error", shown.append)
    return shown


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SyntheticPreviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthetic preview")
    yield widget
    qtbot.waitUntil(
        lambda: not widget.is_generating and not widget.is_exporting, timeout=TIMEOUT_MS
    )


def _select(widget, generator: str, seed: int) -> None:
    widget._generator.setCurrentIndex(widget._generator.findData(generator))
    widget._seed.setValue(seed)


def _generate(qtbot, widget, generator: str = "as-mix", seed: int = 1) -> list:
    _select(widget, generator, seed)
    with qtbot.waitSignal(widget.generated, timeout=TIMEOUT_MS) as blocker:
        qtbot.mouseClick(widget._generate_btn, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def _by_name(viewer) -> dict:
    return {layer.name: layer for layer in viewer.layers}


def test_generate_adds_image_labels_and_stages(qtbot, widget):
    viewer = widget._viewer
    widget._stages.setChecked(True)
    layers = _generate(qtbot, widget, "as-mix", 42)

    names = _by_name(viewer)
    prefix = "AS-Mix s42"
    expected = {f"{prefix} {s}" for s in ("L", "g(L)", "A(g(L))", "image", "labels")}
    assert set(names) == expected
    assert {layer.name for layer in layers} == expected
    settings = widget.settings()
    size, grid = settings.size, settings.grid_size

    image, labels = names[f"{prefix} image"], names[f"{prefix} labels"]
    assert isinstance(image, Image) and isinstance(labels, Labels)
    assert image.data.shape == labels.data.shape == (size,) * 3
    assert image.data.dtype == np.float32
    assert image.data.min() >= 0.0 and image.data.max() <= 1.0 and image.data.max() > 0
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert labels.data.min() >= 0 and labels.data.max() <= np.iinfo(np.uint16).max

    assert isinstance(names[f"{prefix} L"], Labels)
    assert names[f"{prefix} L"].data.shape == (grid,) * 3
    assert isinstance(names[f"{prefix} g(L)"], Image)
    assert names[f"{prefix} g(L)"].data.shape == (grid,) * 3
    assert isinstance(names[f"{prefix} A(g(L))"], Image)
    assert names[f"{prefix} A(g(L))"].data.shape == (size,) * 3

    meta = labels.metadata
    assert meta["generator"] == "as-mix" and meta["seed"] == 42
    assert meta["background"] in ("plain", "rand", "perlin")
    assert meta["settings"]["mean_radius"] == settings.mean_radius
    assert meta[OWNER_KEY]["seed"] == 42


def test_regenerate_same_seed_updates_in_place_and_reproduces(qtbot, widget):
    viewer = widget._viewer
    first = _generate(qtbot, widget, "as-brightfg-plainbg", 3)
    image_before = first[0].data.copy()
    labels_before = first[1].data.copy()
    n_layers = len(viewer.layers)

    second = _generate(qtbot, widget, "as-brightfg-plainbg", 3)
    assert len(viewer.layers) == n_layers == 2
    assert second[0] is first[0] and second[1] is first[1]
    np.testing.assert_array_equal(second[0].data, image_before)
    np.testing.assert_array_equal(second[1].data, labels_before)

    # a changed knob with the same generator+seed updates the same layers, with new metadata
    widget._size.setValue(48)
    third = _generate(qtbot, widget, "as-brightfg-plainbg", 3)
    assert third[0] is first[0] and len(viewer.layers) == 2
    assert third[0].data.shape == (48,) * 3
    assert third[0].metadata["settings"]["size"] == 48


def test_other_generator_or_seed_adds_layers_and_leaves_user_layers(qtbot, widget):
    viewer = widget._viewer
    user_data = np.zeros((8, 8, 8), np.float32)
    user_layer = viewer.add_image(user_data, name="AS-Mix s5 image")

    mix = _generate(qtbot, widget, "as-mix", 5)
    assert mix[0] is not user_layer
    assert user_layer.data is user_data and user_layer.name == "AS-Mix s5 image"
    assert OWNER_KEY not in user_layer.metadata

    perlin = _generate(qtbot, widget, "as-randfg-perlinbg", 5)
    assert {layer.name for layer in perlin} == {
        f"{GENERATOR_TITLES['as-randfg-perlinbg']} s5 image",
        f"{GENERATOR_TITLES['as-randfg-perlinbg']} s5 labels",
    }
    assert len(viewer.layers) == 5
    assert not np.array_equal(perlin[0].data, mix[0].data)
    assert user_layer.data is user_data


def test_stale_request_is_dropped(qtbot, widget):
    viewer = widget._viewer
    applied: list[list] = []
    widget.generated.connect(applied.append)
    with qtbot.waitSignal(widget.generated, timeout=TIMEOUT_MS):
        _select(widget, "as-mix", 11)
        widget.generate()
        _select(widget, "as-mix", 12)
        widget.generate()
    qtbot.waitUntil(lambda: not widget.is_generating, timeout=TIMEOUT_MS)

    assert len(applied) == 1
    assert {layer.metadata["seed"] for layer in applied[0]} == {12}
    assert set(_by_name(viewer)) == {"AS-Mix s12 image", "AS-Mix s12 labels"}


def test_invalid_knob_is_refused_without_worker(qtbot, widget, errors):
    widget._radius.setValue(0.0)
    with pytest.raises(ValueError) as refused:
        widget.settings().validate()

    qtbot.mouseClick(widget._generate_btn, Qt.MouseButton.LeftButton)
    assert not widget.is_generating
    assert len(widget._viewer.layers) == 0
    assert widget._status.text() == str(refused.value)
    assert errors == [str(refused.value)]


def test_background_override_only_for_as_mix(qtbot, widget):
    widget._background.setCurrentIndex(widget._background.findData("perlin"))
    _select(widget, "as-mix", 1)
    assert widget._background.isEnabled()
    assert widget.settings().background == "perlin"
    _select(widget, "as-randfg-plainbg", 1)
    assert not widget._background.isEnabled()
    assert widget.settings().background is None


def test_new_seed_button_draws_a_seed(qtbot, widget):
    seeds = set()
    for _ in range(3):
        qtbot.mouseClick(widget._new_seed_btn, Qt.MouseButton.LeftButton)
        seeds.add(widget._seed.value())
    assert len(seeds) > 1 and not widget.is_generating


def test_max_padding_restricts_pad_choices(widget):
    default = SynthSettings()
    assert widget.settings().pad_choices == default.pad_choices
    widget._max_pad.setCurrentIndex(0)
    assert widget.settings().pad_choices == (min(default.pad_choices),)


def test_export_writes_n_pairs_with_progress(qtbot, widget, tmp_path, errors):
    widget.choose_export_folder = lambda: tmp_path
    widget._size.setValue(32)
    widget._n_export.setValue(3)
    progress: list[int] = []
    widget._progress.valueChanged.connect(progress.append)

    with qtbot.waitSignal(widget.export_finished, timeout=TIMEOUT_MS) as blocker:
        qtbot.mouseClick(widget._export_btn, Qt.MouseButton.LeftButton)
    assert blocker.args == [3]
    assert progress[-1] == 3 == widget._progress.maximum()
    images = sorted(tmp_path.glob("*_image.tif"))
    labels = sorted(tmp_path.glob("*_labels.tif"))
    assert len(images) == len(labels) == 3
    for image_path, labels_path in zip(images, labels, strict=True):
        image, lab = tifffile.imread(image_path), tifffile.imread(labels_path)
        assert image.shape == lab.shape == (32,) * 3
    assert errors == []

    # files already there: refused with a message before any work, nothing rewritten
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    widget.export()
    assert not widget.is_exporting
    assert len(errors) == 1 and widget._status.text() == errors[0]
    assert "Overwrite" in errors[0]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps

    # unless overwriting is asked for
    widget._overwrite.setChecked(True)
    widget._n_export.setValue(1)
    with qtbot.waitSignal(widget.export_finished, timeout=TIMEOUT_MS) as blocker:
        widget.export()
    assert blocker.args == [1] and len(errors) == 1
    assert images[0].stat().st_mtime_ns != stamps[images[0]]
    assert images[1].stat().st_mtime_ns == stamps[images[1]]


def test_export_cancel_stops_between_samples(qtbot, widget, tmp_path):
    widget.choose_export_folder = lambda: tmp_path
    widget._size.setValue(32)
    widget._n_export.setValue(50)
    widget._progress.valueChanged.connect(lambda v: v >= 1 and widget.cancel_export())

    with qtbot.waitSignal(widget.export_finished, timeout=TIMEOUT_MS) as blocker:
        widget.export()
    written = blocker.args[0]
    assert 1 <= written < 50
    assert len(list(tmp_path.glob("*_image.tif"))) == written
    assert len(list(tmp_path.glob("*_labels.tif"))) == written
    assert widget._export_btn.isEnabled() and not widget._cancel_btn.isEnabled()


def test_no_folder_chosen_does_nothing(widget):
    widget.choose_export_folder = lambda: None
    widget.export()
    assert not widget.is_exporting


def test_manifest_widget_generates_into_viewer(make_napari_viewer, qtbot):
    """The npe2 contribution builds the widget with the viewer (a public-only proxy)."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-anystar", "Synthetic preview")
    assert isinstance(widget, SyntheticPreviewWidget)
    _generate(qtbot, widget, "as-randfg-plainbg", 9)
    assert {layer.name for layer in viewer.layers} == {
        "AS-RandFG-PlainBG s9 image",
        "AS-RandFG-PlainBG s9 labels",
    }
    qtbot.waitUntil(lambda: not widget.is_generating, timeout=TIMEOUT_MS)


def test_output_size_box_offers_only_sizes_the_generator_accepts(qtbot, widget):
    from napari_anystar.synth import MIN_OUTPUT_SIZE, SynthSettings

    assert (widget._size.minimum(), widget._size.maximum()) == (
        MIN_OUTPUT_SIZE, SynthSettings().grid_size)
    widget._size.setValue(1024)
    assert widget._size.value() == SynthSettings().grid_size
    widget._size.setValue(1)
    assert widget._size.value() == MIN_OUTPUT_SIZE
    layers = _generate(qtbot, widget, "as-brightfg-plainbg", 5)  # the smallest size works
    image = next(layer for layer in layers if layer.name.endswith(" image"))
    assert image.data.shape == (MIN_OUTPUT_SIZE,) * 3
