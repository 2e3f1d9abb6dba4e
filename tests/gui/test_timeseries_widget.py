"""Time series dock widget in a real viewer: projections, measuring, plot, CSV, refusals."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter1d

from napari_anystar._widgets import timeseries as ts_widget
from napari_anystar._widgets.timeseries import MAX_CURVES, TimeSeriesWidget
from napari_anystar.analysis.timeseries import DEFAULT_SIGMA

TIMEOUT = 30_000  # ms
SHAPE = (6, 10, 12)  # Z, Y, X
N_FRAMES = 12
IDS = (4, 9, 11)


def movie(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 image T x Z x Y x X, labels with IDS, exact means len(IDS) x T)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[0:2, 0:4, 0:5] = IDS[0]
    labels[3:6, 5:9, 2:6] = IDS[1]
    labels[1:4, 6:10, 8:12] = IDS[2]
    expected = rng.integers(10, 500, size=(len(IDS), N_FRAMES)).astype(np.float64)
    image = rng.normal(0, 1, size=(N_FRAMES, *SHAPE)).astype(np.float32)
    for k, object_id in enumerate(IDS):
        image[:, labels == object_id] = expected[k][:, None]
    return image, labels, expected


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(ts_widget, "show_error", shown.append)
    return shown


@pytest.fixture
def setup(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image, labels, expected = movie()
    viewer.add_image(image, name="movie", scale=(5.0, 2.0, 0.5, 0.5), translate=(0, 10, 20, 30))
    viewer.add_labels(labels, name="cells", scale=(2.0, 0.5, 0.5))
    widget = TimeSeriesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Time series")
    return viewer, widget, expected


def measure(qtbot, widget):
    with qtbot.waitSignal(widget.measured, timeout=TIMEOUT) as blocker:
        widget.measure_button.click()
    return blocker.args[0]


def plotted(widget) -> dict[str, np.ndarray]:
    """The solid curve per object id in the plot (label -> y values)."""
    return {line.get_label(): line.get_ydata() for line in widget.plot.axes.lines
            if not line.get_label().startswith("_")}


# ------------------------------------------------------------------------- measuring
def test_measure_plots_smoothed_curves_and_sigma_resmooths(qtbot, setup):
    viewer, widget, expected = setup
    assert widget.image_combo.currentText() == "movie"
    assert widget.labels_combo.currentText() == "cells"
    assert widget.sigma_spin.value() == DEFAULT_SIGMA
    assert widget.frame_spin.maximum() == N_FRAMES - 1
    series = measure(qtbot, widget)
    assert series.ids.tolist() == list(IDS)
    np.testing.assert_array_equal(series.raw, expected)  # exact means per frame
    smoothed = gaussian_filter1d(expected, DEFAULT_SIGMA, axis=1)
    np.testing.assert_allclose(widget.values(), smoothed, rtol=1e-12)
    curves = plotted(widget)
    assert sorted(curves) == sorted(map(str, IDS))  # all three (<= FIRST_SHOWN) selected
    np.testing.assert_allclose(curves["9"], smoothed[1], rtol=1e-12)
    assert len(widget.plot.axes.lines) == 6  # smoothed + faint raw per object

    widget.sigma_spin.setValue(0)
    np.testing.assert_array_equal(widget.values(), expected)
    np.testing.assert_array_equal(plotted(widget)["11"], expected[2])
    assert len(widget.plot.axes.lines) == 3  # no faint raw lines without smoothing
    assert len(viewer.layers) == 2  # measuring adds no layer


def test_typed_ids_choose_the_curves(qtbot, setup):
    _, widget, _ = setup
    measure(qtbot, widget)
    widget.ids_edit.setText("11, 4")
    widget.ids_edit.editingFinished.emit()
    assert sorted(widget.selected_ids()) == [4, 11]
    assert sorted(plotted(widget)) == ["11", "4"]
    widget.select_ids("9 123")
    assert widget.selected_ids() == [9]
    assert "No object 123" in widget.status_label.text()
    widget.object_list.clearSelection()
    assert plotted(widget) == {}


def test_lazy_4d_layer_is_measured(qtbot, make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image, labels, expected = movie(seed=2)
    viewer.add_image(da.from_array(image, chunks=(1, *SHAPE)), name="lazy")
    viewer.add_labels(labels, name="cells")
    widget = TimeSeriesWidget(viewer)
    series = measure(qtbot, widget)
    np.testing.assert_array_equal(series.raw, expected)
    assert errors == []


def test_many_objects_plot_at_most_max_curves(qtbot, make_napari_viewer, errors):
    viewer = make_napari_viewer()
    labels = np.arange(1, 31, dtype=np.int32).repeat(4).reshape(2, 6, 10)  # 30 objects
    image = np.stack([labels * (t + 1.0) for t in range(3)])
    viewer.add_image(image, name="ramp")
    viewer.add_labels(labels, name="many")
    widget = TimeSeriesWidget(viewer)
    series = measure(qtbot, widget)
    np.testing.assert_array_equal(series.raw, np.arange(1, 31)[:, None] * [1.0, 2.0, 3.0])
    widget.object_list.selectAll()
    assert len(plotted(widget)) == MAX_CURVES
    assert f"first {MAX_CURVES} of 30" in widget.status_label.text()


# ----------------------------------------------------------------------- projections
@pytest.mark.parametrize("frame", [None, 7])
def test_projection_layer_sits_on_the_4d_layer(qtbot, setup, frame):
    viewer, widget, _ = setup
    image = viewer.layers["movie"].data
    button = widget.add_mean_button if frame is None else widget.add_frame_button
    widget.frame_spin.setValue(7)
    with qtbot.waitSignal(widget.projection_added, timeout=TIMEOUT) as blocker:
        button.click()
    layer = blocker.args[0]
    assert layer.name == ("movie mean over time" if frame is None else "movie frame 7")
    assert layer.data.shape == SHAPE
    wanted = image.mean(axis=0) if frame is None else image[7]
    np.testing.assert_allclose(layer.data, wanted, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(layer.translate, (10, 20, 30))
    assert widget.image_combo.findText(layer.name) == -1  # our 3D layers are not offered
    # the same button again updates our layer; a user's layer with that name is never touched
    with qtbot.waitSignal(widget.projection_added, timeout=TIMEOUT) as again:
        button.click()
    assert again.args[0] is layer
    assert len(viewer.layers) == 3


# ------------------------------------------------------------------------- bad input
def _refused(qtbot, widget, errors, action, message):
    with qtbot.waitSignal(widget.failed, timeout=TIMEOUT) as blocker:
        action()
    assert message in blocker.args[0]
    assert widget.status_label.text() == blocker.args[0]
    assert errors[-1] == blocker.args[0]
    assert widget._worker is None  # no worker was started


def test_3d_image_is_refused_and_nothing_changes(qtbot, setup, errors):
    viewer, widget, _ = setup
    viewer.add_image(np.zeros(SHAPE, np.float32), name="volume")
    widget.image_combo.setCurrentText("volume")
    before = list(viewer.layers)
    for action in (widget.measure_button.click, widget.add_mean_button.click,
                   widget.add_frame_button.click):
        _refused(qtbot, widget, errors, action,
                 "Image 'volume': the image is 3D (6, 10, 12); the time-series tool needs a 4D "
                 "image (T, Z, Y, X).")  # fmt: skip
    assert list(viewer.layers) == before
    assert widget.series is None
    assert not widget.export_button.isEnabled()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.ones((6, 10, 11), np.int32), "have shape (6, 10, 11) but the image's frames"),
        (np.zeros(SHAPE, np.int32), "Labels 'bad': the labels have no objects"),
        (np.ones((2, *SHAPE), np.int32), "Labels 'bad': the labels are 4D"),
    ],
)
def test_bad_labels_are_refused_and_the_last_result_kept(qtbot, setup, errors, labels, message):
    viewer, widget, expected = setup
    first = measure(qtbot, widget)
    viewer.add_labels(labels, name="bad")
    assert widget.labels_combo.currentText() == "cells"  # the choice is kept
    widget.labels_combo.setCurrentText("bad")
    _refused(qtbot, widget, errors, widget.measure, message)
    assert widget.series is first
    np.testing.assert_array_equal(widget.series.raw, expected)


def test_no_layers_at_all(qtbot, make_napari_viewer, errors):
    widget = TimeSeriesWidget(make_napari_viewer())
    _refused(qtbot, widget, errors, widget.measure, "Add or choose a 4D image layer")
    _refused(qtbot, widget, errors, lambda: widget.export_csv("x.csv"), "Measure first")


def test_cancel_keeps_the_last_result_and_busy_is_refused(qtbot, setup, errors, monkeypatch):
    _, widget, expected = setup
    first = measure(qtbot, widget)
    release = threading.Event()

    def blocking(image, labels, sigma):
        for t in range(image.shape[0]):
            yield t, image.shape[0]
            assert release.wait(10)
        return np.array([1]), np.zeros((1, image.shape[0]))

    monkeypatch.setattr(ts_widget, "iter_time_series", blocking)
    with qtbot.waitSignal(widget.progress_bar.valueChanged, timeout=TIMEOUT):
        widget.measure_button.click()
    assert not widget.measure_button.isEnabled() and widget.cancel_button.isEnabled()
    with qtbot.waitSignal(widget.failed, timeout=TIMEOUT) as busy:
        widget.measure()
    assert "busy" in busy.args[0]
    with qtbot.waitSignal(widget.cancelled, timeout=TIMEOUT):
        widget.cancel_button.click()
        release.set()
    assert widget.series is first
    np.testing.assert_array_equal(widget.values(), gaussian_filter1d(expected, DEFAULT_SIGMA,
                                                                     axis=1))  # fmt: skip
    assert widget.measure_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "Cancelled" in widget.status_label.text()


# ------------------------------------------------------------------------------- CSV
def test_export_csv_round_trip_and_no_silent_overwrite(qtbot, setup, errors, tmp_path):
    _, widget, _ = setup
    measure(qtbot, widget)
    widget.sigma_spin.setValue(1.5)
    path = tmp_path / "series.csv"
    with qtbot.waitSignal(widget.exported, timeout=TIMEOUT):
        widget.export_csv(path)
    table = pd.read_csv(path)
    assert tuple(table.columns) == ("object", "frame", "value")
    wide = table.pivot(index="object", columns="frame", values="value")
    assert wide.index.tolist() == list(IDS)  # every object, selected or not
    np.testing.assert_array_equal(wide.to_numpy(), widget.values())
    path.write_text("mine\n")
    _refused(qtbot, widget, errors, lambda: widget.export_csv(path), "already exists")
    assert path.read_text() == "mine\n"
