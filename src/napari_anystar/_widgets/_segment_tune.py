"""The Segment widget's "Tune from annotations" section: thresholds chosen from annotations.

From a ground-truth Labels layer the search maximises the mean matching accuracy
(:func:`~napari_anystar.analysis.tuning.tune_thresholds_on_outputs`); from a Points layer of
clicked object centres, the point F1 (:mod:`napari_anystar.analysis.point_tuning`). Both run
on the current run's cached network output (:class:`InstanceSolver`), so no threshold pair
needs a network run; "also try scales" runs the network at :data:`SCALE_FACTORS` times the
run's scale (through the widget's cache) and keeps the best scale. The sliders are then set.
As in training, probabilities that keep too many candidates (``train.thresholds.
candidate_floor``) are not tried: their NMS would take minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton

from napari_anystar._generators import mapped
from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._layers import layer_tag
from napari_anystar._widgets._segment_jobs import drive
from napari_anystar.analysis.point_tuning import (
    BOX_RULE,
    WHOLE_VOLUME_RULE,
    ClickedPoints,
    clicked_points,
    tune_thresholds_on_points,
)
from napari_anystar.analysis.tuning import tune_thresholds_on_outputs
from napari_anystar.model.segmenter import _SOLVE_LOCK, network_job
from napari_anystar.train.thresholds import candidate_floor

if TYPE_CHECKING:
    from napari_anystar._widgets._segment_output import RunRecord
    from napari_anystar._widgets.segment import SegmentWidget
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.refine import OutlineRefiner

#: "Also try scales": these factors times the current run's scale (1: the run itself).
SCALE_FACTORS = (0.75, 1.0, 1.25)

HELP = {
    "source": "Annotations of the segmented image: a Labels layer of ground-truth objects "
    "(chooses the thresholds with the best mean matching accuracy) or a Points layer of "
    "clicked object centres (best F1: a point inside a predicted object is a hit, two points "
    "in one object a merge, an unclicked object inside the scoring region a false positive). "
    + BOX_RULE,
    "whole": "Score the whole volume: unclicked objects anywhere count as false positives "
    "(otherwise only those inside the box the points span).",
    "scales": "Also run the network at "
    + ", ".join(f"{f:g}" for f in SCALE_FACTORS)
    + " times the current scale and keep the best (one network run per new scale).",
    "tune": "Search the probability and NMS thresholds that best match the annotations on "
    "the last run's network output, then set the sliders.",
}


@dataclass(frozen=True)
class Found:
    """Best thresholds for one scale, their score and a description of it."""

    prob: float
    nms: float
    score: float
    detail: str  # e.g. "point F1 0.91 (TP 20, FP 2, FN 2)"


@dataclass(frozen=True)
class TuneResult:
    """The tuning outcome: the best thresholds at the best scale, and every scale's score."""

    found: Found
    scale: tuple[float, float, float]
    scale_changed: bool  # the best scale differs from the run's
    per_scale: tuple[tuple[tuple[float, float, float], float], ...]


#: a solver and the outline refiner its labels get (None: StarDist's own outlines)
Target = tuple["InstanceSolver", "OutlineRefiner | None"]
Search = Callable[[Target], Generator[int, None, Found]]


def _locked_labels(target: Target) -> Callable[[float, float], np.ndarray]:
    """The labels the widget shows for a threshold pair: refined if the target refines."""
    solver, refiner = target

    def labels(prob: float, nms: float) -> np.ndarray:
        with _SOLVE_LOCK.foreground():  # the warm-up and live solves use the same solver
            labels = solver.labels(prob, nms)
        return labels if refiner is None else refiner(labels)

    return labels


def search_floor(solver: InstanceSolver) -> float:
    """Lowest probability the search tries on ``solver``'s output."""
    return max(candidate_floor([solver]), solver.output.min_prob)


def labels_search(truth: np.ndarray) -> Search:
    """Search maximising mean matching accuracy (IoU 0.1-0.9) against ``truth``."""

    def search(target: Target) -> Generator[int, None, Found]:
        choice = yield from tune_thresholds_on_outputs(
            [_locked_labels(target)], [truth], min_prob=search_floor(target[0]))
        s = choice.scores
        return Found(choice.prob, choice.nms, choice.objective,
                     f"mean accuracy {choice.objective:.3f} ({s.n_pred} objects, "
                     f"{s.n_true} annotated)")

    return search


def points_search(points: ClickedPoints) -> Search:
    """Search maximising the point F1 of ``points``."""

    def search(target: Target) -> Generator[int, None, Found]:
        choice = yield from tune_thresholds_on_points(
            [_locked_labels(target)], [points], min_prob=search_floor(target[0]))
        c = choice.counts
        return Found(choice.prob, choice.nms, choice.objective,
                     f"point F1 {c.f1:.3f} (TP {c.tp}, FP {c.fp}, FN {c.fn})")

    return search


def tune_job(search: Search, scales: Sequence[tuple[float, float, float]], run_scale: tuple,
             solver_at: Callable[[tuple], Generator[Any, None, Target]],
             ) -> Generator[tuple, None, TuneResult]:
    """Search at each scale (``solver_at`` gives its target, with progress); the best wins
    (ties: the earlier scale, so list the run's own first). Yields ``("tiles", done, total,
    i)`` / ``("pairs", n, i)`` for scale ``i``."""
    best: tuple[Found, tuple] | None = None
    per_scale = []
    for i, scale in enumerate(scales):
        target = yield from mapped(solver_at(scale), lambda p, i=i: (*p, i))
        found = yield from mapped(search(target), lambda n, i=i: ("pairs", n, i))
        per_scale.append((scale, found.score))
        if best is None or found.score > best[0].score:
            best = (found, scale)
    found, scale = best
    return TuneResult(found, scale, scale != run_scale, tuple(per_scale))


def _ready(target: Target) -> Generator[Any, None, Target]:
    return target
    yield  # a generator that returns at once


class TuneSection(QGroupBox):
    """ "Tune from annotations" controls of a :class:`SegmentWidget` (inserted into it)."""

    tuned = Signal(object)  # TuneResult, after the sliders (and scale) were set
    tune_failed = Signal(str)  # one-line reason (also for refused input)

    def __init__(self, host: SegmentWidget) -> None:
        super().__init__("Tune from annotations", host)
        self.host = host
        self.source_combo = QComboBox()
        self.source_combo.setToolTip(HELP["source"])
        self.whole_volume_check = QCheckBox(WHOLE_VOLUME_RULE)
        self.whole_volume_check.setToolTip(HELP["whole"])
        self.scales_check = QCheckBox("Also try scales")
        self.scales_check.setToolTip(HELP["scales"])
        self.tune_button = QPushButton("Tune")
        self.tune_button.setToolTip(HELP["tune"])
        self.status_label = QLabel(f"Points: {BOX_RULE}")
        self.status_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Annotations", self.source_combo)
        form.addRow(self.whole_volume_check)
        form.addRow(self.scales_check)
        form.addRow(self.tune_button)
        form.addRow(self.status_label)
        self._scales: list[tuple] = []
        self._outcome: tuple = ()
        self.tune_button.clicked.connect(self.tune)
        events = host.viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._refresh)
        for layer in host.viewer.layers:
            layer.events.name.connect(self._refresh)
        host.layout().insertWidget(2, self)  # below the threshold sliders
        self._refresh()

    # ------------------------------------------------------------------ annotations
    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        """List the user's Labels and Points layers (not the labels this widget made)."""
        if not self.host._life.alive:
            return
        current = self.source_combo.currentData()
        names = [(f"{layer.name} ({'points' if isinstance(layer, Points) else 'labels'})",
                  layer.name)
                 for layer in self.host.viewer.layers
                 if isinstance(layer, Points)
                 or (isinstance(layer, Labels) and layer_tag(layer) is None)]
        self.source_combo.clear()
        for text, name in names:
            self.source_combo.addItem(text, name)
        found = self.source_combo.findData(current)
        self.source_combo.setCurrentIndex(found if found >= 0 else 0 if names else -1)

    def selected_source(self) -> Labels | Points | None:
        name = self.source_combo.currentData()
        return next((layer for layer in self.host.viewer.layers if layer.name == name), None)

    def _truth(self, layer: Labels, run: RunRecord) -> np.ndarray:
        data = layer.data[0] if layer.multiscale else layer.data
        frame = run.volume.frame
        if frame and data.ndim == len(frame) + 3:
            data = data[frame]
        region = run.volume.region
        if region is not None and data.ndim == 3:
            data = data[region.slices]  # the run segmented only this region of the image
        shape = run.volume.data.shape
        if tuple(data.shape) != shape:
            raise ValueError(f"'{layer.name}' has shape {tuple(data.shape)}, the segmented "
                             f"volume {shape}: choose annotations of the same image.")
        truth = np.asarray(data)
        if not np.issubdtype(truth.dtype, np.integer) or not truth.any():
            raise ValueError(f"'{layer.name}' has no objects: paint some or choose another "
                             "layer.")
        return truth.astype(np.int32, copy=False)

    def _points(self, layer: Points, run: RunRecord) -> tuple[ClickedPoints, str]:
        """The clicked points in the run's voxels (the ones on its frame) and a note."""
        image = next((lyr for lyr in self.host.viewer.layers if lyr.name == run.input_name),
                     None)
        if image is None:
            raise ValueError(f"The segmented image '{run.input_name}' is no longer in the "
                             "viewer: press Run again.")
        if layer.ndim < 3:
            raise ValueError(f"'{layer.name}' is {layer.ndim}D: click points in 3D.")
        world = [layer.data_to_world(p) for p in np.asarray(layer.data)]
        data = np.array([image.world_to_data(w) for w in world]).reshape(-1, image.ndim)
        lead = image.ndim - 3
        note = ""
        if lead and layer.ndim > 3:
            on_frame = np.all(np.floor(data[:, :lead] + 0.5) == run.volume.frame, axis=1)
            if len(data) and not on_frame.any():
                raise ValueError(f"None of the points of '{layer.name}' lie on the segmented "
                                 "volume (time point).")
            if not on_frame.all():
                note = f" Used the {int(on_frame.sum())} of {len(data)} points on this volume."
            data = data[on_frame]
        zyx = data[:, lead:]
        if run.volume.region is not None:
            zyx = zyx - np.asarray(run.volume.region.start)  # into the region's voxels
        points = clicked_points(zyx, run.volume.data.shape,
                                whole_volume=self.whole_volume_check.isChecked())
        return points, note

    # ------------------------------------------------------------------------ tune
    def tune(self) -> None:
        """Check the input, then search in a worker; refused input changes nothing."""
        host, run = self.host, self.host._run
        try:
            if host._life.worker is not None:
                raise ValueError("A segmentation or tuning is running: wait for it to end.")
            if run is None or run.result is None:
                raise ValueError("Press Run first: tuning uses the network output of the run.")
            layer = self.selected_source()
            if layer is None:
                raise ValueError("Add or choose a Labels layer (ground truth) or a Points "
                                 "layer (clicked object centres).")
            note = ""
            if isinstance(layer, Points):
                points, note = self._points(layer, run)
                search = points_search(points)
            else:
                search = labels_search(self._truth(layer, run))
            run_scale, solver_at = self._scale_plan(run)
        except ValueError as exc:
            self._refuse(str(exc))
            return
        host._life.stop_warmup()
        job = tune_job(search, self._scales, run_scale, solver_at)
        worker = create_worker(drive, job, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, note))
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(lambda: self._set_outcome("cancelled", "Tuning cancelled."))
        worker.finished.connect(job.close)
        worker.finished.connect(self._on_ended)
        self._outcome = ("failed", "Tuning stopped unexpectedly.")
        host._life.worker = worker
        host._outcome = ()  # the host's last run outcome is not this job's
        for button in (host.run_button, host.suggest_scale_button, self.tune_button):
            button.setEnabled(False)
        host.cancel_button.setEnabled(True)
        host.progress_bar.setFormat("")
        host.progress_bar.setRange(0, 0)
        self.status_label.setText("Tuning...")
        worker.start()

    def _scale_plan(self, run: RunRecord) -> tuple[tuple, Callable]:
        """The run's scale and how to get a search target at a scale (its solver, refined
        as the widget shows labels); sets ``self._scales``."""
        result = run.result
        refine = self.host.refine_check.isChecked()
        own = (result.solver, result.refiner if refine else None)
        run_scale = tuple(float(s) for s in (result.settings.scale or (1.0, 1.0, 1.0)))
        self._scales = [run_scale]
        if not self.scales_check.isChecked():
            return run_scale, lambda scale: _ready(own)
        entry = self.host.selected_model()
        if entry is None or str(entry.path) != run.metadata["model_path"]:
            raise ValueError("The model changed since the last run: press Run first.")
        others = [tuple(round(f * s, 3) for s in run_scale) for f in SCALE_FACTORS if f != 1.0]
        self._scales = [run_scale, *others]  # the run's own first: it wins ties

        def solver_at(scale: tuple) -> Generator[Any, None, Target]:
            if scale == run_scale:
                return own
            settings = replace(result.settings,
                               scale=None if scale == (1.0, 1.0, 1.0) else scale)
            done = yield from network_job(entry, run.volume.data, settings, run.thresholds,
                                          self.host._cache, refine=refine,
                                          polarity="dark" if settings.invert else "bright")
            return done.solver, done.refiner if refine else None

        return run_scale, solver_at

    def _on_progress(self, progress: tuple) -> None:
        host = self.host
        if not host._life.alive:
            return
        where = (f" (scale {', '.join(f'{s:g}' for s in self._scales[progress[-1]])})"
                 if len(self._scales) > 1 else "")
        if progress[0] == "pairs":
            host.progress_bar.setRange(0, 0)
            host.status_label.setText(f"Tuning{where}: {progress[1]} threshold pairs tried")
        else:
            stage, done, total = progress[:3]
            host.progress_bar.setFormat(f"%v / %m {stage}")
            host.progress_bar.setRange(0, total)
            host.progress_bar.setValue(done)
            host.status_label.setText(f"Predicting{where}: {done} / {total} {stage}")

    def _on_returned(self, result: TuneResult, note: str) -> None:
        self._set_outcome("tuned", result, note)

    def _on_errored(self, exc: Exception) -> None:
        self._set_outcome("failed", worker_error_message(exc, "Tuning"))

    def _set_outcome(self, *outcome: Any) -> None:
        self._outcome = outcome

    def _on_ended(self) -> None:
        """Last signal of the tuning worker: free the widget, then apply or report."""
        host = self.host
        if not host.job_ended():
            return
        self.tune_button.setEnabled(True)
        outcome, *args = self._outcome
        host.progress_bar.setRange(0, 1)
        host.progress_bar.setValue(int(outcome == "tuned"))
        if outcome != "tuned":
            host.status_label.setText(args[0])
            self._refuse(args[0], error=outcome == "failed")
            return
        result, note = args
        self._apply(result)
        found = result.found
        scale = (f", scale {', '.join(f'{s:g}' for s in result.scale)}"
                 if len(result.per_scale) > 1 else "")
        self.status_label.setText(f"Chosen: probability {found.prob:g}, NMS {found.nms:g}"
                                  f"{scale}: {found.detail}.{note}")
        host.status_label.setText("Tuned.")
        self.tuned.emit(result)

    def _apply(self, result: TuneResult) -> None:
        """Set the scale (and re-run from the cache) if it changed, then the sliders."""
        host = self.host
        if result.scale_changed:
            host.set_scale_mode("manual")
            host.set_scale(result.scale)
            host.run()  # the network output at this scale is normally still cached
        host.prob_slider.setValue(result.found.prob)
        host.nms_slider.setValue(result.found.nms)

    def _refuse(self, message: str, error: bool = True) -> None:
        """Say why nothing was tuned (an error, unless the user cancelled)."""
        self.status_label.setText(message)
        if error:
            show_error(message)
        self.tune_failed.emit(message)
