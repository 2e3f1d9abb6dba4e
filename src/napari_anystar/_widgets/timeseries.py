"""Time series dock widget: each object's mean intensity per frame of a 4D image layer.

Thin by design: projections, measurement, smoothing and the CSV are core functions
(``analysis.timeseries``). Workflow: add the mean over time (or one frame) of a 4D layer as a
3D image, segment it with the Segment widget, then Measure the 4D layer inside those labels.
Reading frames runs in a thread worker; the smoothing sigma only re-smooths the kept raw
means (no re-measuring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._layers import add_or_update_layer, layer_tag
from napari_anystar._widgets._segment_input import spatial_transform
from napari_anystar._widgets._timeseries_plot import MAX_CURVES, CurvePlot
from napari_anystar.analysis.timeseries import (
    DEFAULT_SIGMA,
    check_inputs,
    iter_projection,
    iter_time_series,
    smooth,
    write_csv,
)

WIDGET_TAG = "timeseries"
FIRST_SHOWN = 5  # objects selected after a measurement

HELP = {
    "widget": "Per-object time series: segment one frame or the mean over time of a 4D "
    "(T, Z, Y, X) image, then measure each object's mean intensity in every frame.",
    "image": "4D image layer (T, Z, Y, X) to measure (never modified).",
    "frame": "Frame (time point, from 0) that 'Add frame' copies into a 3D layer.",
    "add_frame": "Add this frame as a 3D image layer, to segment with the Segment widget.",
    "add_mean": "Add the mean over time as a 3D image layer, to segment with the Segment widget "
    "(objects that move little are sharpest there).",
    "labels": "3D labels layer (Z, Y, X) of the objects, e.g. the Segment widget's result on "
    "the frame or mean layer; its shape must match the image's frames.",
    "sigma": "Temporal Gaussian smoothing of each curve in frames (0 = none); edges are "
    "mirrored. Changing it re-smooths at once, without measuring again.",
    "measure": "Measure every object's mean intensity in every frame (frames are read one "
    "at a time).",
    "ids": "Object ids to plot, e.g. '3, 7 12' (or select them in the list).",
    "list": f"Objects measured; the selected ones are plotted (at most {MAX_CURVES} at once).",
    "export": "Save every object's curve as a tidy CSV: object, frame (from 0), value.",
}


@dataclass(frozen=True)
class Series:
    """A measurement: raw means (objects x frames) of ``image`` inside ``labels``."""

    image: str
    labels: str
    ids: np.ndarray
    raw: np.ndarray


def _layer_data(layer: Any) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale one); never copied."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class TimeSeriesWidget(QWidget):
    """Dock widget: project a 4D layer for segmenting, measure objects per frame, plot, export."""

    projection_added = Signal(object)  # the 3D image layer added or updated
    measured = Signal(object)  # the Series
    failed = Signal(str)  # one-line reason (also for refused input; nothing changed then)
    cancelled = Signal()
    exported = Signal(str)  # the CSV path

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        wait_for_workers_at_exit()
        self.viewer = napari_viewer
        self.series: Series | None = None
        self._worker: Any = None
        self._outcome: tuple = ()  # (signal name, *args) emitted when the worker finishes
        self._alive = True
        self._build_ui()
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self._refresh_layers)
        events.inserted.connect(self._on_layer_inserted)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self.destroyed.connect(self._end)
        self._refresh_layers()

    def _build_ui(self) -> None:
        self.setToolTip(HELP["widget"])
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.frame_spin = QSpinBox()
        self.add_frame_button = QPushButton("Add frame")
        self.add_mean_button = QPushButton("Add mean over time")
        self.add_frame_button.clicked.connect(lambda: self.add_projection(self.frame_spin.value()))
        self.add_mean_button.clicked.connect(lambda: self.add_projection(None))
        self.sigma_spin = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=100.0, singleStep=0.5)
        self.sigma_spin.setValue(DEFAULT_SIGMA)
        self.sigma_spin.setSpecialValueText("0 (none)")
        self.sigma_spin.valueChanged.connect(self._plot)
        self.measure_button, self.cancel_button = QPushButton("Measure"), QPushButton("Cancel")
        self.measure_button.clicked.connect(self.measure)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.ids_edit = QLineEdit(placeholderText="ids to plot, e.g. 3, 7 12")
        self.ids_edit.editingFinished.connect(lambda: self.select_ids(self.ids_edit.text()))
        self.object_list = QListWidget()
        self.object_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.object_list.setMaximumHeight(90)
        self.object_list.itemSelectionChanged.connect(self._plot)
        self.plot = CurvePlot()
        self.export_button = QPushButton("Export CSV...")
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.export_button.setEnabled(False)
        self.status_label = QLabel(wordWrap=True)

        frame_row, run_row = QHBoxLayout(), QHBoxLayout()
        frame_row.addWidget(self.frame_spin)
        frame_row.addWidget(self.add_frame_button)
        run_row.addWidget(self.measure_button)
        run_row.addWidget(self.cancel_button)
        form = QFormLayout()
        form.addRow("4D image", self.image_combo)
        form.addRow("Frame", frame_row)
        form.addRow(self.add_mean_button)
        form.addRow("Labels (3D)", self.labels_combo)
        form.addRow("Smoothing sigma", self.sigma_spin)
        form.addRow(run_row)
        form.addRow(self.progress_bar)
        form.addRow("Plot ids", self.ids_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.object_list, self.plot, self.export_button, self.status_label):
            layout.addWidget(widget)
        tips = (
            (self.image_combo, "image"), (self.frame_spin, "frame"),
            (self.add_frame_button, "add_frame"), (self.add_mean_button, "add_mean"),
            (self.labels_combo, "labels"), (self.sigma_spin, "sigma"),
            (self.measure_button, "measure"), (self.ids_edit, "ids"),
            (self.object_list, "list"), (self.export_button, "export"),
        )  # fmt: skip
        for widget, key in tips:
            widget.setToolTip(HELP[key])

    # ------------------------------------------------------------------------- layers
    def _refresh_layers(self, *_: Any) -> None:
        """List image layers (4D first; not the projections made here) and labels layers."""
        if not self._alive:
            return
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)
                  and (layer_tag(layer) or {}).get("widget") != WIDGET_TAG]
        images.sort(key=lambda layer: layer.ndim != 4)
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)][::-1]
        for combo, layers in ((self.image_combo, images), (self.labels_combo, labels)):
            current = combo.currentText()
            names = [layer.name for layer in layers]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(names.index(current) if current in names else 0)
            combo.blockSignals(False)
        self._on_image_changed()

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)

    def _layer(self, combo: QComboBox) -> Any | None:
        name = combo.currentText()
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def _on_image_changed(self, *_: Any) -> None:
        layer = self._layer(self.image_combo)
        frames = _layer_data(layer).shape[0] if layer is not None and layer.ndim == 4 else 1
        self.frame_spin.setMaximum(max(frames - 1, 0))

    def _image_data(self) -> tuple[Any, Any]:
        """(the chosen image layer, its 4D data); ValueError (one line) if unusable."""
        layer = self._layer(self.image_combo)
        if layer is None:
            raise ValueError("Add or choose a 4D image layer (T, Z, Y, X).")
        if layer.rgb:
            raise ValueError(f"'{layer.name}' is an RGB image; use a single-channel 4D image.")
        data = _layer_data(layer)
        try:
            check_inputs(tuple(data.shape))
        except ValueError as err:
            raise ValueError(f"Image '{layer.name}': {err}.") from None
        return layer, data

    # ------------------------------------------------------------------------ actions
    def add_projection(self, frame: int | None) -> None:
        """Add (or update ours) a 3D layer: frame ``frame`` of the 4D image, or (None) its
        mean over time, placed like the 4D layer's last three axes."""
        try:
            self._check_idle()
            layer, data = self._image_data()
        except ValueError as err:
            self._refuse(str(err))
            return
        what = "mean over time" if frame is None else f"frame {frame}"
        worker = create_worker(iter_projection, data, frame, _ignore_errors=True)
        worker.returned.connect(partial(self._on_projection, layer, what))
        self._start(worker, f"Computing the {what} of '{layer.name}'...")

    def _on_projection(self, layer: Any, what: str, volume: np.ndarray) -> None:
        if not self._alive:
            return
        tag = {"widget": WIDGET_TAG, "source": layer.name, "projection": what}
        added = add_or_update_layer(
            self.viewer, "image", volume, name=f"{layer.name} {what}", tag=tag,
            **spatial_transform(layer),
        )  # fmt: skip
        self.status_label.setText(
            f"Added '{added.name}': segment it (Segment widget), then choose the labels and "
            "press Measure.")
        self._outcome = ("projection_added", added)

    def measure(self) -> None:
        """Measure every object of the chosen labels in every frame (in a worker)."""
        try:
            self._check_idle()
            layer, data = self._image_data()
            labels_layer = self._layer(self.labels_combo)
            if labels_layer is None:
                raise ValueError("Add or choose a 3D labels layer of the objects.")
            labels = np.array(_layer_data(labels_layer))  # a snapshot: edits do not race
            try:
                check_inputs(tuple(data.shape), labels)
            except ValueError as err:
                raise ValueError(f"Labels '{labels_layer.name}': {err}.") from None
        except ValueError as err:
            self._refuse(str(err))
            return
        worker = create_worker(iter_time_series, data, labels, None, _ignore_errors=True)
        worker.returned.connect(partial(self._on_measured, layer.name, labels_layer.name))
        self._start(worker, f"Measuring '{layer.name}' in '{labels_layer.name}'...")

    def _on_measured(self, image: str, labels: str, result: tuple[np.ndarray, np.ndarray]) -> None:
        if not self._alive:
            return
        ids, raw = result
        self.series = Series(image, labels, ids, raw)
        self.object_list.blockSignals(True)
        self.object_list.clear()
        for object_id in ids.tolist():
            item = QListWidgetItem(str(object_id))
            self.object_list.addItem(item)
            item.setSelected(self.object_list.count() <= FIRST_SHOWN)
        self.object_list.blockSignals(False)
        self.export_button.setEnabled(True)
        self._plot()
        self.status_label.setText(
            f"{ids.size} objects x {raw.shape[1]} frames measured in '{image}'.")
        self._outcome = ("measured", self.series)

    def values(self) -> np.ndarray:
        """The shown values (objects x frames): the raw means smoothed with the current sigma."""
        if self.series is None:
            return np.zeros((0, 0))
        return smooth(self.series.raw, self.sigma_spin.value())

    def selected_ids(self) -> list[int]:
        return [int(item.text()) for item in self.object_list.selectedItems()]

    def select_ids(self, text: str) -> None:
        """Select (and plot) the objects whose ids ``text`` lists, e.g. "3, 7 12"."""
        if self.series is None:
            self.status_label.setText("Measure first, then choose objects to plot.")
            return
        wanted = [int(token) for token in re.findall(r"-?\d+", text)]
        known = set(self.series.ids.tolist())
        missing = [i for i in wanted if i not in known]
        self.object_list.blockSignals(True)
        for row in range(self.object_list.count()):
            item = self.object_list.item(row)
            item.setSelected(int(item.text()) in wanted)
        self.object_list.blockSignals(False)
        self._plot()
        if missing:
            listed = ", ".join(map(str, missing))
            self.status_label.setText(f"No object {listed} in '{self.series.labels}'.")

    def _plot(self, *_: Any) -> None:
        if self.series is None:
            return
        chosen = self.selected_ids()
        rows = np.flatnonzero(np.isin(self.series.ids, chosen))[:MAX_CURVES]
        self.plot.show_curves(self.series.ids[rows], self.series.raw[rows], self.values()[rows])
        if len(chosen) > MAX_CURVES:
            self.status_label.setText(f"Plotting the first {MAX_CURVES} of {len(chosen)} "
                                      "selected objects (the CSV has all).")

    def export_csv(self, path: str | Path | None = None, overwrite: bool = False) -> None:
        """Write the shown values as a tidy CSV; asks for a file (which may replace one the
        user confirms) when ``path`` is None. An existing ``path`` needs ``overwrite``."""
        if self.series is None:
            self._refuse("Measure first: there is no time series to export.")
            return
        if path is None:
            default = f"{self.series.image}_timeseries.csv"
            path, _ = QFileDialog.getSaveFileName(self, "Export time series", default,
                                                  "CSV files (*.csv)")
            if not path:
                return
            overwrite = True  # the dialog asked before choosing an existing file
        try:
            write_csv(path, self.series.ids, self.values(), overwrite=overwrite)
        except (OSError, ValueError) as err:
            self._refuse(f"Cannot export: {err}")
            return
        self.status_label.setText(f"Saved {self.series.ids.size} curves to {path}.")
        self.exported.emit(str(path))

    # ------------------------------------------------------------------------ workers
    def _check_idle(self) -> None:
        if self._worker is not None:
            raise ValueError("The time-series tool is busy; wait or press Cancel.")

    def _start(self, worker: Any, message: str) -> None:
        self._worker = worker
        self._outcome = ("failed", "The job stopped unexpectedly.")
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        for button in (self.measure_button, self.add_frame_button, self.add_mean_button):
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        self.status_label.setText(message)
        worker.start()

    def cancel(self) -> None:
        """Stop the running job after the current frame; nothing is changed."""
        if self._worker is not None:
            self._worker.quit()
            self.cancel_button.setEnabled(False)

    def _on_progress(self, progress: tuple[int, int]) -> None:
        if self._alive:
            done, total = progress
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)
            self.progress_bar.setFormat("%v / %m frames")

    def _on_errored(self, exc: Exception) -> None:
        if not self._alive:
            return
        message = worker_error_message(exc, "Time series")
        self.status_label.setText(message)
        show_error(message)
        self._outcome = ("failed", message)

    def _on_aborted(self) -> None:
        if self._alive:
            self.status_label.setText("Cancelled; nothing was changed.")
            self._outcome = ("cancelled",)

    def _on_finished(self) -> None:
        self._worker = None
        if not self._alive:
            return
        for button in (self.measure_button, self.add_frame_button, self.add_mean_button):
            button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        outcome, *args = self._outcome
        self.progress_bar.setFormat("")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(int(outcome in ("measured", "projection_added")))
        getattr(self, outcome).emit(*args)

    def _refuse(self, message: str) -> None:
        self.status_label.setText(message)
        show_error(message)
        self.failed.emit(message)

    def _end(self, *_: Any) -> None:
        self._alive = False
        if self._worker is not None:
            self._worker.quit()
