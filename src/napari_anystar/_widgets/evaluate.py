"""Evaluate dock widget: score a predicted labels layer against a ground-truth labels layer.

Thin by design: the scores, regions and error lists are ``analysis.evaluate`` (the paper's
protocol, ``stardist.matching`` at IoU 0.1 ... 0.9), run in a thread worker. The widget shows
a table and a small plot of the scores, lists the false positives and negatives, and paints
them into our own labels layer "<prediction> errors" (updated in place on later runs; a
user's layer is never touched). A Shapes region converts each shape's corners from world to
the prediction's voxel coordinates (see ``analysis.evaluate`` for how boxes are formed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._layers import add_or_update_layer, find_owned_layer, layer_tag
from napari_anystar._widgets._segment_output import free_name
from napari_anystar.analysis.evaluate import (
    ANNOTATED,
    BOTH,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    REPORT_IOU,
    WHOLE,
    Box,
    PairEvaluation,
    box_from_points,
    evaluate_pair,
)
from napari_anystar.analysis.scores import IOU_THRESHOLDS

SHAPES = "shapes"
REGION_TITLES = {
    WHOLE: "whole volume",
    ANNOTATED: "ground truth's annotated region",
    SHAPES: "boxes of a Shapes layer",
}
METRIC_TITLES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
                 "f1": "F1"}  # also the table's column order
METRIC_COLORS = {"accuracy": "#e8554e", "precision": "#f2c14e", "recall": "#4ea5e8",
                 "f1": "#6fd08c"}
ERROR_COLORS = {FALSE_POSITIVE: "orange", FALSE_NEGATIVE: "cyan", BOTH: "magenta"}
_LISTED_IDS = 20  # ids shown per error kind; the rest are counted


def labels_data(layer: Labels) -> Any:
    """The full-resolution data of a labels layer (never copied or changed; a lazy array is
    read by the worker)."""
    return layer.data[0] if layer.multiscale else layer.data


def shape_boxes(shapes: Shapes, labels: Labels) -> list[Box]:
    """One box per shape of ``shapes``: its vertices in ``labels``' voxel coordinates.

    A 2D shape gives the last two axes; axes it does not give, or along which it is flat
    (a rectangle drawn on one plane), span the whole volume.
    """
    if len(shapes.data) == 0:
        raise ValueError(f"'{shapes.name}' has no shapes; draw rectangles around the region")
    keep = min(shapes.ndim, labels.ndim)
    boxes = []
    for vertices in shapes.data:
        voxels = [labels.world_to_data(shapes.data_to_world(v)) for v in vertices]
        boxes.append(box_from_points(np.asarray(voxels)[:, -keep:], labels.ndim))
    return boxes


def _listed(ids: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, ids[:_LISTED_IDS]))
    return shown + (f", ... ({len(ids) - _LISTED_IDS} more)" if len(ids) > _LISTED_IDS else "")


class ScorePlot(QWidget):
    """Accuracy, precision, recall and F1 (0 ... 1) against the IoU threshold."""

    _MARGINS = (34, 8, 22, 30)  # left, right, top, bottom

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scores: Any = None  # MatchScores
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Accuracy, precision, recall and F1 against the IoU threshold.")

    def sizeHint(self) -> QSize:
        return QSize(280, 160)

    def set_scores(self, scores: Any) -> None:
        self.scores = scores
        self.update()

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        left, right, top, bottom = self._MARGINS
        area = QRectF(left, top, max(1, self.width() - left - right),
                      max(1, self.height() - top - bottom))
        x0, x1 = IOU_THRESHOLDS[0], IOU_THRESHOLDS[-1]

        def point(iou: float, value: float) -> QPointF:
            return QPointF(area.left() + (iou - x0) / (x1 - x0) * area.width(),
                           area.bottom() - value * area.height())

        painter.setPen(QPen(self.palette().color(self.palette().ColorRole.WindowText), 1))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        painter.drawLine(area.bottomLeft(), area.topLeft())
        h = painter.fontMetrics().height()
        for value in (0.0, 0.5, 1.0):
            y = point(x0, value).y()
            painter.drawText(QRectF(0, y - h / 2, left - 4, h),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                             f"{value:g}")
        for iou in (x0, 0.5, x1):
            x = point(iou, 0).x()
            painter.drawText(QRectF(x - 20, area.bottom() + 2, 40, h),
                             int(Qt.AlignmentFlag.AlignHCenter), f"{iou:g}")
        painter.drawText(QRectF(area.left(), area.bottom() + 2 + h, area.width(), h),
                         int(Qt.AlignmentFlag.AlignHCenter), "IoU threshold")
        if self.scores is None:
            painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter), "no scores yet")
            painter.end()
            return
        x = float(left)
        for metric in METRIC_TITLES:
            painter.setPen(QPen(QColor(METRIC_COLORS[metric]), 2))
            values = getattr(self.scores, metric)
            painter.drawPolyline(QPolygonF([point(t, v) for t, v in
                                            zip(self.scores.iou_thresholds, values, strict=True)]))
            painter.drawLine(QPointF(x, top / 2), QPointF(x + 12, top / 2))
            title = METRIC_TITLES[metric]
            painter.drawText(QRectF(x + 15, top / 2 - h / 2, 80, h),
                             int(Qt.AlignmentFlag.AlignVCenter), title)
            x += 25 + painter.fontMetrics().horizontalAdvance(title)
        painter.end()


class EvaluateWidget(QWidget):
    """Dock widget: prediction and ground-truth labels layers in, scores and errors out."""

    # Both are emitted once the widget is ready for the next evaluation.
    evaluated = Signal(object)  # PairEvaluation, after the table, plot and layer were updated
    failed = Signal(str)  # one-line reason; nothing was changed

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        wait_for_workers_at_exit()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.result: PairEvaluation | None = None
        self._outcome: tuple[Any, ...] = ()  # (signal, argument) of the running evaluation
        self._alive = [True]
        self.destroyed.connect(lambda *_, alive=self._alive: alive.__setitem__(0, False))
        self._build_ui()
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._refresh_layers)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _build_ui(self) -> None:
        self.setToolTip("Score a predicted labels layer against ground truth: accuracy, "
                        "precision, recall and F1 at IoU 0.1-0.9 (stardist.matching).")
        self.pred_combo, self.truth_combo, self.shapes_combo = QComboBox(), QComboBox(), QComboBox()
        self.pred_combo.setToolTip("Labels layer to score (e.g. a Segment result).")
        self.truth_combo.setToolTip("Labels layer holding the ground truth, voxel for voxel "
                                    "the same shape as the prediction.")
        self.region_combo = QComboBox()
        for key, title in REGION_TITLES.items():
            self.region_combo.addItem(title, key)
        self.region_combo.setToolTip(
            "Which objects count: all; only those whose centre lies in the bounding box of the "
            "ground truth's labelled voxels (partly annotated volumes); or only those whose "
            "centre lies in a shape's box (a shape drawn on one plane spans all Z).")
        self.region_combo.currentIndexChanged.connect(self._on_region_changed)
        self.shapes_combo.setToolTip("Shapes layer whose rectangles (bounding boxes) form "
                                     "the region.")
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip(
            f"Match objects one-to-one at each IoU, list the false positives and negatives at "
            f"IoU {REPORT_IOU:g} and colour them in the '<prediction> errors' layer.")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.table = self._make_table()
        self.table.setToolTip("Scores per IoU threshold; the last row is their mean "
                              "(mean accuracy is the paper's summary score).")
        self.plot = ScorePlot()
        self.errors_label = QLabel("")
        self.errors_label.setWordWrap(True)
        self.errors_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("Prediction", self.pred_combo)
        form.addRow("Ground truth", self.truth_combo)
        form.addRow("Region", self.region_combo)
        form.addRow("Shapes", self.shapes_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.evaluate_button, self.status_label, self.table, self.plot,
                       self.errors_label):
            layout.addWidget(widget)
        self._on_region_changed()

    def _make_table(self) -> QTableWidget:
        """Rows: the IoU thresholds and their mean; columns: METRIC_TITLES; no scrolling."""
        table = QTableWidget(len(IOU_THRESHOLDS) + 1, len(METRIC_TITLES))
        table.setHorizontalHeaderLabels(list(METRIC_TITLES.values()))
        table.setVerticalHeaderLabels([f"IoU {t:g}" for t in IOU_THRESHOLDS] + ["mean"])
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        rows = table.verticalHeader()
        rows.setDefaultSectionSize(table.fontMetrics().height() + 4)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setFixedHeight(rows.defaultSectionSize() * table.rowCount()
                             + table.horizontalHeader().sizeHint().height()
                             + 2 * table.frameWidth())
        return table

    # ------------------------------------------------------------------------- choosers
    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        """List the labels layers (not our error layers) and the Shapes layers."""
        if not self._alive[0]:
            return
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)
                  and (layer_tag(layer) or {}).get("widget") != "evaluate"]
        segmented = [layer.name for layer in labels
                     if (layer_tag(layer) or {}).get("widget") == "segment"]
        names = [layer.name for layer in labels]
        newest = (segmented or names or [None])[-1]  # a Segment result, else the newest layer
        pred = self._fill(self.pred_combo, names, newest)
        self._fill(self.truth_combo, names, next((n for n in names if n != pred), None))
        self._fill(self.shapes_combo,
                   [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes)])

    @staticmethod
    def _fill(combo: QComboBox, names: list[str], preferred: str | None = None) -> str | None:
        """Offer ``names``, keeping the current choice, else ``preferred``, else the first."""
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        for name in names:
            combo.addItem(name, name)
        choice = next((n for n in (current, preferred) if n in names), names[0] if names else None)
        combo.setCurrentIndex(names.index(choice) if choice is not None else -1)
        combo.blockSignals(False)
        return choice

    def _on_region_changed(self, *_: Any) -> None:
        self.shapes_combo.setEnabled(self.region_combo.currentData() == SHAPES)

    def _layer(self, combo: QComboBox) -> Any:
        return next((layer for layer in self.viewer.layers if layer.name == combo.currentData()),
                    None)

    def set_layers(self, prediction: str, truth: str, region: str = WHOLE,
                   shapes: str | None = None) -> None:
        """Choose the layers and region by name (for scripts and tests)."""
        for combo, name in ((self.pred_combo, prediction), (self.truth_combo, truth),
                            (self.shapes_combo, shapes), (self.region_combo, region)):
            if name is not None:
                combo.setCurrentIndex(combo.findData(name))

    # -------------------------------------------------------------------------- evaluate
    def _request(self) -> tuple[Labels, Labels, Any] | None:
        """Prediction, truth and region of an evaluation, or None after saying what is wrong."""
        pred, truth = self._layer(self.pred_combo), self._layer(self.truth_combo)
        if pred is None or truth is None:
            return self._refuse("Choose a prediction and a ground-truth labels layer.")
        if pred is truth:
            return self._refuse("Choose two different layers for prediction and ground truth.")
        region = self.region_combo.currentData()
        if region != SHAPES:
            return pred, truth, region
        shapes = self._layer(self.shapes_combo)
        if shapes is None:
            return self._refuse("Add or choose a Shapes layer with rectangles for the region.")
        try:
            return pred, truth, shape_boxes(shapes, pred)
        except ValueError as exc:
            return self._refuse(str(exc))

    def evaluate(self) -> None:
        """Check the choices, then score in a worker; the results replace the shown ones."""
        if self.worker is not None:
            self.status_label.setText("An evaluation is already running.")
            return
        request = self._request()
        if request is None:
            return
        pred, truth, region = request
        worker = create_worker(
            evaluate_pair, labels_data(truth), labels_data(pred), region,
            truth_name=f"'{truth.name}'", pred_name=f"'{pred.name}'", _ignore_errors=True)
        worker.returned.connect(lambda result: self._on_returned(pred, truth, result))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._outcome = (self.failed, "The evaluation stopped unexpectedly.")
        self.worker = worker
        self.evaluate_button.setEnabled(False)
        self.status_label.setText(f"Evaluating '{pred.name}' against '{truth.name}'...")
        worker.start()

    def _on_returned(self, pred: Labels, truth: Labels, result: PairEvaluation) -> None:
        if not self._alive[0]:
            return
        self.result = result
        scores = result.scores
        for col, metric in enumerate(METRIC_TITLES):
            values = [*getattr(scores, metric), scores.mean(metric)]
            for row, value in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(f"{value:.3f}"))
        self.plot.set_scores(scores)
        layer = self._show_errors(pred, truth, result)
        ignored = ""
        if result.ignored_true or result.ignored_pred:
            ignored = (f" Outside the region (ignored): {result.ignored_true} true, "
                       f"{result.ignored_pred} predicted objects.")
        self.status_label.setText(
            f"{scores.n_pred} predicted vs {scores.n_true} true objects: mean accuracy "
            f"{scores.mean('accuracy'):.3f}.{ignored}")
        fp, fn = result.false_positives, result.false_negatives
        self.errors_label.setText(
            f"At IoU {result.error_iou:g}, in '{layer.name}': {len(fp)} false positives "
            f"({ERROR_COLORS[FALSE_POSITIVE]}; ids {_listed(fp) or '-'}), {len(fn)} false "
            f"negatives ({ERROR_COLORS[FALSE_NEGATIVE]}; ids {_listed(fn) or '-'}); overlaps "
            f"of both {ERROR_COLORS[BOTH]}.")
        self._outcome = (self.evaluated, result)

    def _show_errors(self, pred: Labels, truth: Labels, result: PairEvaluation) -> Labels:
        """Our "<prediction> errors" layer, placed over the prediction."""
        tag = {"widget": "evaluate", "role": "errors", "prediction": pred.name}
        existing = find_owned_layer(self.viewer, "labels", tag)
        name = existing.name if existing is not None else free_name(self.viewer,
                                                                    f"{pred.name} errors")
        placement = {key: getattr(pred, key) for key in ("scale", "translate", "rotate",
                                                         "shear", "affine")}
        metadata = {"truth": truth.name, "iou": result.error_iou,
                    "false_positives": list(result.false_positives),
                    "false_negatives": list(result.false_negatives)}
        colormap = DirectLabelColormap(color_dict={None: "transparent", **ERROR_COLORS})
        layer = add_or_update_layer(self.viewer, "labels", result.errors, name=name, tag=tag,
                                    metadata=metadata, colormap=colormap, **placement)
        for key, value in placement.items():
            setattr(layer, key, value)
        return layer

    def _on_errored(self, exc: Exception) -> None:
        if not self._alive[0]:
            return
        self._outcome = (self.failed, self._tell(worker_error_message(exc, "Evaluation")))

    def _on_finished(self) -> None:
        """Last signal of the worker: ready again, then tell listeners the outcome."""
        self.worker = None
        if self._alive[0]:
            self.evaluate_button.setEnabled(True)
            signal, argument = self._outcome
            signal.emit(argument)

    def _tell(self, message: str) -> str:
        self.status_label.setText(message)
        show_error(message)
        return message

    def _refuse(self, message: str) -> None:
        self.failed.emit(self._tell(message))
