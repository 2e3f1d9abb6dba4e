"""Objects widget in a real viewer: table, sorting, navigation, live filters, Apply, export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_anystar._widgets import objects as objects_module
from napari_anystar._widgets._layers import OWNER_KEY
from napari_anystar._widgets._objects_display import filter_colormap
from napari_anystar._widgets._segment_output import OBJECT_PROBABILITY
from napari_anystar._widgets.objects import ObjectsWidget

TIMEOUT = 30_000  # ms; generous for a loaded 2-core machine
SHAPE = (16, 24, 28)
SCALE, TRANSLATE = (2.0, 0.5, 0.5), (5.0, -3.0, 0.0)
BOXES = {  # id: (box, brightness); volumes 64, 480 and 144 voxels (x 0.5 um^3)
    2: ((slice(2, 6), slice(3, 7), slice(4, 8)), 10.0),
    5: ((slice(8, 14), slice(10, 20), slice(12, 20)), 20.0),
    9: ((slice(0, 4), slice(18, 24), slice(22, 28)), 30.0),  # touches the border
}
PROBABILITY = np.array([np.nan, 0, 0.9, 0, 0, 0.4, 0, 0, 0, 0.7])


def volumes() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(SHAPE, np.int32)
    image = np.zeros(SHAPE, np.float32)
    for label, (box, value) in BOXES.items():
        labels[box] = label
        image[box] = value
    return labels, image


@pytest.fixture
def notices(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(objects_module, "show_warning", shown.append)
    monkeypatch.setattr(objects_module, "show_error", shown.append)
    return shown


def measured(qtbot, widget, action=None):
    """Run ``action`` (default: re-measure) and wait for the table it leads to."""
    with qtbot.waitSignal(widget.measured, timeout=TIMEOUT) as blocker:
        (action or widget.measure)()
    return blocker.args[0]


@pytest.fixture
def setup(make_napari_viewer, qtbot, notices):
    """A viewer with an image and Segment-like labels (probabilities, source image), the
    widget docked and its first table measured."""
    viewer = make_napari_viewer()
    labels, image = volumes()
    viewer.add_image(image, name="image", scale=SCALE, translate=TRANSLATE)
    layer = viewer.add_labels(labels, name="cells", scale=SCALE, translate=TRANSLATE,
                              metadata={OBJECT_PROBABILITY: PROBABILITY, "input_layer": "image"})
    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Objects")
    measured(qtbot, widget)
    return viewer, widget, layer


def shown_ids(widget) -> list[int]:
    return [widget.model.label_at(row) for row in range(widget.model.rowCount())]


def column(widget, name: str) -> list[str]:
    index = widget.model.table.names.index(name)
    return [widget.model.data(widget.model.index(row, index))
            for row in range(widget.model.rowCount())]


def alpha(layer, ids) -> np.ndarray:
    return layer.colormap.map(np.asarray(ids))[:, 3]


def test_table_has_one_row_per_object_with_layer_units(setup):
    viewer, widget, layer = setup
    assert widget.labels_layer() is layer
    assert widget.image_layer() is viewer.layers["image"]  # the labels' source image
    assert shown_ids(widget) == [2, 5, 9]
    assert column(widget, "volume_voxels") == ["64", "480", "144"]
    assert column(widget, "volume_um3") == ["32", "240", "72"]
    assert column(widget, "mean_intensity") == ["10", "20", "30"]
    assert column(widget, "probability") == ["0.9", "0.4", "0.7"]
    assert column(widget, "touches_border") == ["no", "no", "yes"]
    assert column(widget, "centroid_z_um") == ["7", "21", "3"]  # voxel * scale (no offset)
    assert all(widget.filters[name].isEnabled() for name in widget.filters)
    assert "3 objects in 'cells'" in widget.status_label.text()


def test_header_click_sorts_and_keeps_the_sort_through_filters(setup, qtbot):
    viewer, widget, _layer = setup
    viewer.window._qt_window.show()
    header = widget.table_view.horizontalHeader()
    section = widget.model.table.names.index("mean_intensity")
    widget.table_view.scrollTo(widget.model.index(0, section))
    point = QPoint(header.sectionViewportPosition(section) + header.sectionSize(section) // 2,
                   header.height() // 2)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=point)
    first = shown_ids(widget)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=point)
    second = shown_ids(widget)
    assert {tuple(first), tuple(second)} == {(2, 5, 9), (9, 5, 2)}
    widget.table_view.sortByColumn(widget.model.table.names.index("probability"),
                                   Qt.SortOrder.AscendingOrder)
    assert shown_ids(widget) == [5, 9, 2]
    widget.border_check.setChecked(True)
    assert shown_ids(widget) == [5, 2]


def test_row_click_centres_the_viewer_and_selects_the_label(setup, qtbot):
    viewer, widget, layer = setup
    viewer.window._qt_window.show()
    viewer.layers.selection.active = viewer.layers["image"]
    view = widget.table_view
    row = shown_ids(widget).index(5)
    point = view.visualRect(widget.model.index(row, 0)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    centroid = np.array([10.5, 14.5, 15.5])  # box 8:14, 10:20, 12:20
    world = centroid * SCALE + TRANSLATE
    offset = np.abs(np.asarray(viewer.dims.point[-3:]) - world)
    assert np.all(offset <= np.asarray(SCALE) / 2 + 1e-9), (viewer.dims.point, world)
    center = viewer.scene.camera.center if hasattr(viewer, "scene") else viewer.camera.center
    displayed = viewer.dims.displayed
    np.testing.assert_allclose(center[-len(displayed):],
                               [viewer.dims.point[d] for d in displayed])
    assert layer.selected_label == 5
    assert viewer.layers.selection.active is layer


def test_filters_hide_exactly_the_objects_out_of_range_and_never_touch_the_data(setup):
    _viewer, widget, layer = setup
    data, before, original = layer.data, layer.data.copy(), layer.colormap
    colors = original.map(np.array([2, 5, 9]))
    kept = []
    widget.filtered.connect(kept.append)
    widget.filters["volume_um3"].setValue((50.0, 240.0))  # 32 out; 72 and 240 (max) kept
    assert shown_ids(widget) == [5, 9] and kept[-1] == 2
    assert list(alpha(layer, [2, 5, 9]) > 0) == [False, True, True]
    np.testing.assert_allclose(layer.colormap.map(np.array([5, 9])), colors[1:])
    widget.filters["probability"].setValue((0.5, 1.0))
    assert shown_ids(widget) == [9]
    widget.border_check.setChecked(True)
    assert shown_ids(widget) == [] and kept[-1] == 0
    assert not alpha(layer, [2, 5, 9]).any()
    assert widget.kept_label.text() == "0 of 3 objects kept"
    widget.reset_filters()
    assert shown_ids(widget) == [2, 5, 9] and layer.colormap is original
    widget.filters["mean_intensity"].setValue((15.0, 25.0))
    assert shown_ids(widget) == [5]
    assert layer.data is data and np.array_equal(layer.data, before)


def test_apply_adds_a_filtered_layer_and_leaves_the_original(setup, qtbot):
    viewer, widget, layer = setup
    before = layer.data.copy()
    widget.filters["volume_um3"].setValue((50.0, 240.0))
    with qtbot.waitSignal(widget.applied, timeout=TIMEOUT) as blocker:
        widget.apply_button.click()
    new = blocker.args[0]
    assert new.name == "cells filtered" and viewer.layers[-1] is new
    expected = np.where(np.isin(before, [5, 9]), before, 0)
    np.testing.assert_array_equal(new.data, expected)
    assert new.data.dtype == before.dtype
    np.testing.assert_allclose(new.scale, SCALE)
    np.testing.assert_allclose(new.translate, TRANSLATE)
    assert OWNER_KEY not in new.metadata and new.metadata["filtered_from"] == "cells"
    np.testing.assert_array_equal(new.metadata[OBJECT_PROBABILITY], PROBABILITY)
    np.testing.assert_array_equal(layer.data, before)
    assert widget.labels_layer() is layer  # still measuring the original
    with qtbot.waitSignal(widget.applied, timeout=TIMEOUT) as blocker:
        widget.apply()
    assert blocker.args[0] is not new and blocker.args[0].name != new.name
    np.testing.assert_array_equal(new.data, expected)


def test_export_writes_the_shown_rows_in_order(setup, tmp_path):
    _viewer, widget, _layer = setup
    widget.table_view.sortByColumn(widget.model.table.names.index("volume_um3"),
                                   Qt.SortOrder.DescendingOrder)
    widget.border_check.setChecked(True)
    path = widget.export_csv(tmp_path / "cells.csv")
    frame = pd.read_csv(path)
    assert list(frame["label"]) == [5, 2]
    table = widget.model.table
    for name in table.names:
        np.testing.assert_array_equal(frame[name].to_numpy(), table[name][[1, 0]], err_msg=name)
    assert widget.export_csv(tmp_path / "plain") == tmp_path / "plain.csv"


def test_data_changes_are_re_measured(setup, qtbot):
    _viewer, widget, layer = setup
    widget.filters["volume_um3"].setValue((50.0, 240.0))
    labels = layer.data.copy()
    labels[labels == 5] = 0
    labels[10:12, 2:4, 2:4] = 7  # 8 voxels: 4 um^3
    table = measured(qtbot, widget, lambda: setattr(layer, "data", labels))
    assert list(table.ids) == [2, 7, 9]
    assert shown_ids(widget) == [9]  # the volume filter still applies
    assert list(alpha(layer, [2, 7, 9]) > 0) == [False, False, True]


def test_choosing_another_layer_and_closing_restore_the_colormap(setup, qtbot):
    viewer, widget, layer = setup
    original = layer.colormap
    other = viewer.add_labels(volumes()[0], name="other")
    other_original = other.colormap
    widget.border_check.setChecked(True)
    assert layer.colormap is not original
    table = measured(qtbot, widget, lambda: widget.set_labels_layer(other))
    assert layer.colormap is original and len(table) == 3
    assert "probability" not in table.names and not widget.filters["probability"].isEnabled()
    assert other.colormap is not other_original  # the border filter applies to it now
    assert list(alpha(other, [2, 5, 9]) > 0) == [True, True, False]
    viewer.window.remove_dock_widget(widget)  # napari's close button
    assert other.colormap is other_original


@pytest.mark.parametrize(
    ("case", "fragment"),
    [("shape", "same shape"), ("flat", "2D"), ("series", "4D"), ("empty", "no objects")],
)
def test_bad_input_says_why_and_changes_nothing(setup, qtbot, notices, case, fragment):
    viewer, widget, layer = setup
    if case == "shape":
        image = viewer.add_image(np.zeros((16, 24, 20), np.float32), name="small")
        with qtbot.waitSignal(widget.measure_failed, timeout=TIMEOUT) as blocker:
            widget.set_image_layer(image)
        target = layer
    else:
        data = {"flat": np.ones((24, 28), np.int32), "series": np.ones((2, *SHAPE), np.int32),
                "empty": np.zeros(SHAPE, np.int32)}[case]
        target = viewer.add_labels(data, name=case)
        signal = widget.measured if case == "empty" else widget.measure_failed
        with qtbot.waitSignal(signal, timeout=TIMEOUT) as blocker:
            widget.set_labels_layer(target)
    before, colormap = target.data.copy(), target.colormap
    assert fragment in widget.status_label.text()
    if case != "empty":
        assert fragment in blocker.args[0] and notices and fragment in notices[-1]
    assert widget.model.rowCount() == 0
    assert not widget.apply_button.isEnabled() and not widget.export_button.isEnabled()
    n_layers = len(viewer.layers)
    widget.apply()
    assert widget.export_csv("/nonexistent/never.csv") is None
    assert len(viewer.layers) == n_layers and target.colormap is colormap
    np.testing.assert_array_equal(target.data, before)


@pytest.mark.parametrize("scale", [1, 10_000])  # a lookup table, then a direct colormap
def test_filter_colormap_keeps_the_original_colours_of_the_kept_ids(scale):
    from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap, label_colormap

    original = label_colormap(49)
    ids = np.array([2, 5, 9, 11]) * scale
    cmap = filter_colormap(original, ids, np.array([True, False, True, False]))
    assert isinstance(cmap, CyclicLabelColormap if scale == 1 else DirectLabelColormap)
    colors = cmap.map(ids)
    np.testing.assert_allclose(colors[[0, 2]], original.map(ids[[0, 2]]))
    assert not colors[[1, 3], 3].any() and colors[[0, 2], 3].all()
    assert cmap.map(np.array([0]))[0, 3] == 0
