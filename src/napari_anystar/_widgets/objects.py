"""Objects dock widget: a sortable table of per-object measurements with live filters.

Thin by design: measuring is ``analysis.measure`` (in a worker, re-run debounced whenever the
labels layer's data changes), filtering is ``analysis.object_filter``. The live filter view
only swaps the layer's colormap (``_objects_display``): its data is never modified, and
"Apply" adds a new layer instead.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QModelIndex, Qt, QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QWidget

from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._objects_display import FilterDisplay, warm_up
from napari_anystar._widgets._objects_form import ObjectsForm
from napari_anystar._widgets._objects_layers import (
    add_filtered_layer,
    checked_inputs,
    fill_combo,
    index_of,
    layer_data,
)
from napari_anystar._widgets._objects_model import ObjectsModel
from napari_anystar._widgets._segment_output import OBJECT_PROBABILITY
from napari_anystar.analysis.measure import (
    AXES,
    ObjectTable,
    measure_objects,
    write_csv,
)
from napari_anystar.analysis.object_filter import filter_labels, keep_mask

__all__ = ["MEASURE_DEBOUNCE_MS", "ObjectsWidget"]


#: Quiet time after a labels data change before the table is re-measured.
MEASURE_DEBOUNCE_MS = 250
_LAYER_EVENTS = ("data", "paint", "metadata")  # changes that call for a new measurement


def measure_job(labels: Any, image: Any, voxel_size: tuple[float, ...],
                probability: Any) -> ObjectTable:
    """The table of a labels layer's data (worker side); also readies the filter display."""
    labels = np.asarray(labels)
    table = measure_objects(labels, None if image is None else np.asarray(image), voxel_size,
                            probability)
    warm_up(labels.dtype)
    return table


class ObjectsWidget(ObjectsForm):
    """Dock widget: measure a labels layer's objects, sort, filter live, apply and export."""

    measured = Signal(object)  # the ObjectTable now shown (possibly empty)
    measure_failed = Signal(str)  # one-line reason; the table was cleared
    filtered = Signal(int)  # number of objects kept, after the display was updated
    applied = Signal(object)  # the new filtered labels layer
    exported = Signal(str)  # path of the CSV written

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        wait_for_workers_at_exit()
        self.viewer = napari_viewer
        self.model = ObjectsModel(self)
        self.table_view.setModel(self.model)
        self.table_view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table_view.setSortingEnabled(True)
        self._labels_choices: list[Any] = []
        self._image_choices: list[Any] = [None]
        self._layer: Any = None  # the chosen labels layer (its events are watched)
        self._table_layer: Any = None  # the layer the shown table was measured from
        self._display = display = FilterDisplay()
        self._alive = True
        self._serial = 0
        self._busy = False
        self._pending = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(MEASURE_DEBOUNCE_MS)
        self._timer.timeout.connect(self.measure)

        self.labels_combo.currentIndexChanged.connect(self._on_labels_chosen)
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        for slider in self.filters.values():
            slider.valueChanged.connect(self._apply_filters)
        self.border_check.toggled.connect(self._apply_filters)
        self.reset_button.clicked.connect(self.reset_filters)
        self.apply_button.clicked.connect(self.apply)
        self.export_button.clicked.connect(lambda *_: self.export_csv())
        self.table_view.clicked.connect(self._on_row_clicked)
        self.table_view.activated.connect(self._on_row_clicked)  # Enter on a row
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._refresh_layers)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self.destroyed.connect(lambda *_: display.restore())
        self.set_table_controls(None)
        self._refresh_layers()

    # ------------------------------------------------------------------------- choosers
    def labels_layer(self) -> Any:
        """The chosen labels layer, or None."""
        return self._layer

    def image_layer(self) -> Any:
        """The chosen intensity image layer, or None ('none')."""
        index = self.image_combo.currentIndex()
        return self._image_choices[index] if 0 <= index < len(self._image_choices) else None

    def set_image_layer(self, layer: Any) -> None:
        """Choose ``layer`` (an image layer in the viewer, or None) for the intensity columns."""
        self.image_combo.setCurrentIndex(index_of(self._image_choices, layer))

    def set_labels_layer(self, layer: Any) -> None:
        self.labels_combo.setCurrentIndex(index_of(self._labels_choices, layer))

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        """List the labels and image layers, keeping the chosen ones while they exist."""
        if not self._alive:
            return
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        images = [None, *(layer for layer in self.viewer.layers if isinstance(layer, Image))]
        chosen_labels = self._layer if index_of(labels, self._layer) >= 0 else None
        if chosen_labels is None and labels:
            chosen_labels = labels[0]
        image = self.image_layer()
        chosen_image = image if index_of(images, image) >= 0 else None
        self._labels_choices, self._image_choices = labels, images
        fill_combo(self.labels_combo, labels, chosen_labels)
        fill_combo(self.image_combo, images, chosen_image)
        if chosen_labels is not self._layer:
            self._attach(chosen_labels)
        elif chosen_image is not image:
            self.measure()

    def _on_labels_chosen(self, index: int) -> None:
        if self._alive:
            ok = 0 <= index < len(self._labels_choices)
            self._attach(self._labels_choices[index] if ok else None)

    def _on_image_chosen(self, *_: Any) -> None:
        if self._alive:
            self.measure()

    def _attach(self, layer: Any) -> None:
        """Watch ``layer`` (the filter display leaves the previous one) and measure it."""
        self._detach()
        self._layer = layer
        if layer is not None:
            for name in _LAYER_EVENTS:
                getattr(layer.events, name).connect(self._schedule)
            self._choose_source_image(layer)
        self.measure()

    def _detach(self) -> None:
        self._timer.stop()
        self._display.restore()
        if self._layer is not None:
            for name in _LAYER_EVENTS:
                getattr(self._layer.events, name).disconnect(self._schedule)
        self._layer = None

    def _choose_source_image(self, layer: Any) -> None:
        """Pick the image a Segment widget result was made from, if it is in the viewer."""
        source = layer.metadata.get("input_layer")
        for index, image in enumerate(self._image_choices):
            if image is not None and image.name == source and image.ndim == layer.ndim:
                self.image_combo.blockSignals(True)
                self.image_combo.setCurrentIndex(index)
                self.image_combo.blockSignals(False)
                return

    def _schedule(self, *_: Any) -> None:
        if self._alive:
            self._timer.start()

    # -------------------------------------------------------------------------- measure
    def measure(self) -> None:
        """(Re-)measure the chosen layers in a worker; ``measured`` or ``measure_failed``."""
        self._timer.stop()
        if not self._alive:
            return
        self._serial += 1
        if self._busy:
            self._pending = True  # the running result is stale: measure again when it ends
            return
        layer = self._layer
        if layer is None:
            self._clear("Add or choose a 3D labels layer to measure.")
            return
        try:
            labels, image = checked_inputs(layer, self.image_layer())
        except ValueError as err:
            self._refuse(str(err))
            return
        voxel_size = tuple(abs(float(s)) for s in layer.scale[-3:])
        probability = layer.metadata.get(OBJECT_PROBABILITY)
        worker = create_worker(measure_job, labels, image, voxel_size, probability,
                               _ignore_errors=True)
        worker.returned.connect(partial(self._on_measured, self._serial, layer))
        worker.errored.connect(partial(self._on_measure_errored, self._serial))
        worker.finished.connect(self._on_measure_finished)
        self._busy = True
        self.status_label.setText(f"Measuring '{layer.name}'...")
        worker.start()

    def _on_measured(self, serial: int, layer: Any, table: ObjectTable) -> None:
        if not self._alive or serial != self._serial or layer is not self._layer:
            return
        if self._table_layer is not layer:
            self._display.restore()
        self._table_layer = layer
        self.model.set_table(table)
        self.set_table_controls(table)
        column, order = self.model.sort_state()
        self.table_view.horizontalHeader().setSortIndicator(column, order)
        size = " x ".join(f"{v:g}" for v in table.voxel_size)
        if len(table):
            self.status_label.setText(f"{len(table)} objects in '{layer.name}' (voxel size "
                                      f"{size} µm).")
        else:
            self.status_label.setText(f"'{layer.name}' has no objects (every voxel is 0).")
        self._apply_filters()
        self.table_view.resizeColumnsToContents()
        self.measured.emit(table)

    def _on_measure_errored(self, serial: int, exc: Exception) -> None:
        if not self._alive or serial != self._serial:
            return
        self._refuse(worker_error_message(exc, "Measuring"))

    def _on_measure_finished(self) -> None:
        self._busy = False
        if self._alive and self._pending:
            self._pending = False
            self.measure()

    def _clear(self, message: str) -> None:
        """Empty the table (the filter display is undone) and say why."""
        self._display.restore()
        self._table_layer = None
        self.model.set_table(None)
        self.set_table_controls(None)
        self.kept_label.setText("")
        self.status_label.setText(message)

    def _refuse(self, message: str) -> None:
        self._clear(message)
        show_warning(message)
        self.measure_failed.emit(message)

    # -------------------------------------------------------------------------- filters
    def keep(self) -> np.ndarray:
        """Mask of the table rows the filters keep (empty without a table)."""
        table = self.model.table
        if table is None:
            return np.zeros(0, dtype=bool)
        return keep_mask(table, self.ranges(), self.border_check.isChecked())

    def _apply_filters(self, *_: Any) -> None:
        table, layer = self.model.table, self._table_layer
        if not self._alive or table is None or layer is None:
            return
        keep = self.keep()
        self.model.set_rows(np.flatnonzero(keep))
        self._display.show(layer, table.ids, keep)
        kept = int(keep.sum())
        self.kept_label.setText(f"{kept} of {len(table)} objects kept")
        self.filtered.emit(kept)

    def reset_filters(self) -> None:
        """Clear every filter: all objects shown, the layer's own colormap back."""
        self.clear_filters()
        self._apply_filters()

    def apply(self) -> None:
        """Add '<name> filtered' holding only the kept objects (computed in a worker); the
        original layer is not changed."""
        table, layer = self.model.table, self._table_layer
        if table is None or layer is None or len(table) == 0:
            self._error("Nothing to apply: choose a labels layer with objects first.")
            return
        keep = self.keep()
        description = {"ranges": self.ranges(), "exclude_border": self.border_check.isChecked()}
        worker = create_worker(filter_labels, layer_data(layer), table.ids[keep],
                               _ignore_errors=True)
        worker.returned.connect(partial(self._on_applied, layer, description, int(keep.sum())))
        worker.errored.connect(lambda exc: self._error(f"Apply failed: {exc}"))
        worker.finished.connect(lambda: self.apply_button.setEnabled(len(self.keep()) > 0))
        self.apply_button.setEnabled(False)
        worker.start()

    def _on_applied(self, layer: Any, description: dict, kept: int, data: np.ndarray) -> None:
        if not self._alive:
            return
        colormap = self._display.original if self._display.layer is layer else layer.colormap
        new = add_filtered_layer(self.viewer, layer, data, colormap, description, kept)
        self.status_label.setText(f"Added '{new.name}' with {kept} objects.")
        self.applied.emit(new)

    # ---------------------------------------------------------------------- navigation
    def _on_row_clicked(self, index: QModelIndex) -> None:
        if self._alive and index.isValid():
            self.go_to_label(self.model.label_at(index.row()))

    def go_to_label(self, label: int) -> None:
        """Centre the viewer (dims and camera) on object ``label`` and select its label."""
        table, layer = self.model.table, self._table_layer
        if table is None or layer is None:
            return
        rows = np.flatnonzero(table.ids == label)
        if rows.size == 0:
            return
        centroid = [float(table[f"centroid_{axis}"][rows[0]]) for axis in AXES]
        world = np.asarray(layer.data_to_world(centroid), dtype=float)[-3:]
        ndim = self.viewer.dims.ndim
        self.viewer.dims.set_point(list(range(ndim - 3, ndim)), tuple(world))
        point = self.viewer.dims.point
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; before: viewer.camera
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.center = tuple(float(point[d]) for d in self.viewer.dims.displayed)
        layer.selected_label = int(label)
        self.viewer.layers.selection.active = layer

    # ---------------------------------------------------------------------------- export
    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the shown rows (kept objects, shown order) as CSV; asks for a file name if
        ``path`` is None. Returns the path written, or None."""
        shown = self.model.shown_table()
        if shown is None or len(shown) == 0:
            self._error("Nothing to export: no objects in the table.")
            return None
        overwrite = True  # a path from the dialog (or the caller) was chosen to be replaced
        if path is None:
            name = f"{self._table_layer.name}_objects.csv"
            path, _ = QFileDialog.getSaveFileName(self, "Export objects table", name,
                                                  "CSV files (*.csv)")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path, overwrite = path.with_name(f"{path.name}.csv"), False
        try:
            write_csv(shown, path, overwrite=overwrite)
        except OSError as err:
            self._error(f"Could not write {path}: {err}")
            return None
        self.status_label.setText(f"Wrote {len(shown)} objects to {path}.")
        self.exported.emit(str(path))
        return path

    def _error(self, message: str) -> None:
        self.status_label.setText(message)
        show_error(message)

    # ------------------------------------------------------------------------- closing
    def event(self, event: QEvent) -> bool:
        """Removed from its dock (napari's close button): give the layer its colours back."""
        alive = getattr(self, "_alive", False)  # events also arrive during __init__
        if alive and event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.close_down()
        return super().event(event)

    def close_down(self) -> None:
        """Stop watching the viewer and restore the filtered layer's colormap."""
        self._alive = False
        self._detach()
        events = self.viewer.layers.events
        events.inserted.disconnect(self._on_layer_inserted)
        events.removed.disconnect(self._refresh_layers)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layers)
