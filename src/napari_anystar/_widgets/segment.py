"""Segment dock widget: AnyStar/StarDist3D instance segmentation of a 3D image layer.

Thin by design: input checks, prediction and instance extraction are core functions
(``model.predict``, ``model.instances``, ``model.cache``); this file wires them to controls.
The network runs once per (data, model, scale, normalisation, tiles) in a thread worker; the
threshold sliders then only re-run the cheap instance step, debounced, latest request wins.
In the default scale mode (auto) the worker first chooses the scale (``object_size.auto_scale``)
and the scale boxes then show it; the normalisation boxes show the selected model's own.
After a run, a background warm-up (``InstanceSolver.warm_up``) pre-computes the NMS work of
the lower probability thresholds, so dragging the slider down does not stall on first visits.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QWidget

from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._segment_choosers import ChoosersMixin
from napari_anystar._widgets._segment_form import SegmentForm
from napari_anystar._widgets._segment_input import (
    InputVolume,
    plan_volume,
    read_then,
    visible_yx,
)
from napari_anystar._widgets._segment_jobs import WidgetLife, drive
from napari_anystar._widgets._segment_live import LiveThresholds
from napari_anystar._widgets._segment_models import model_thresholds
from napari_anystar._widgets._segment_output import (
    RunRecord,
    remove_probability,
    run_metadata,
    show_labels,
    show_probability,
)
from napari_anystar._widgets._segment_tune import TuneSection
from napari_anystar._widgets._segment_whole import WholeVolumeSection
from napari_anystar.model import registry
from napari_anystar.model.cache import PredictionCache
from napari_anystar.model.object_size import SizeEstimate
from napari_anystar.model.predict import PredictSettings, check_volume
from napari_anystar.model.refine import OutlineRefiner
from napari_anystar.model.segmenter import (
    RunResult,
    network_job,
    scale_job,
    warm_job,
)

logger = logging.getLogger(__name__)
#: (unit, doing) shown for each stage of a job's progress
PROGRESS_WORDS = {"read": ("slabs", "Reading"), "size": ("rounds", "Measuring"),
                  "tiles": ("tiles", "Predicting")}


def _objects_status(note: str, objects: str, refining: bool) -> str:
    """Status line of shown labels: the run's note, the objects, whether refined outlines
    follow."""
    return " ".join(filter(None, [note, objects + ("; refining outlines..." if refining
                                                   else ".")]))


class SegmentWidget(ChoosersMixin, SegmentForm):
    """Dock widget: choose an image layer and a model, run, then tune thresholds live."""

    labels_updated = Signal(object)  # our Labels layer, after its data was set
    run_progress = Signal(int, int)  # tiles done, tiles total (not the auto scale's rounds)
    run_finished = Signal(object)  # our Labels layer
    run_failed = Signal(str)  # one-line reason (also for refused input; no worker then)
    run_cancelled = Signal()
    warmup_finished = Signal(bool)  # True: reached its floor/limit, False: stopped or failed
    scale_suggested = Signal(object)  # SizeEstimate, after the scale spins were set

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        wait_for_workers_at_exit()
        self.viewer = napari_viewer
        self._life = life = WidgetLife()
        self._cache = PredictionCache()
        self._run: RunRecord | None = None  # the shown result (thresholds act on it)
        self._live = LiveThresholds(self, self.thresholds, lambda: life.alive)
        self._live.solved.connect(self._on_solved)
        self._live.failed.connect(self._report)
        self._live.pending.connect(self._show_pending)
        self._outcome: tuple = ()  # ("finished"|"failed"|"cancelled", *args) of the last run

        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.model_chooser.model_changed.connect(self._on_model_changed)
        self.model_chooser.refused.connect(self._refuse)
        self.prob_slider.valueChanged.connect(self._on_threshold_changed)
        self.nms_slider.valueChanged.connect(self._on_threshold_changed)
        self.show_prob_check.toggled.connect(self._on_show_prob_toggled)
        self.refine_check.toggled.connect(self._on_refine_toggled)
        self.run_button.clicked.connect(self.run)
        self.suggest_scale_button.clicked.connect(self.suggest_scale)
        self.scale_mode_combo.currentIndexChanged.connect(self._show_mode_scale)
        self.cancel_button.clicked.connect(self.cancel)
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._refresh_layers)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self.destroyed.connect(self._life.end)
        self._refresh_layers()
        self._on_model_changed(self.model_chooser.entry())
        self.tune_section = TuneSection(self)  # "Tune from annotations" (_segment_tune.py)
        self.whole_section = WholeVolumeSection(self)  # "Run on whole volume" (_segment_whole.py)

    # ------------------------------------------------------------------------------ run
    def predict_settings(self) -> PredictSettings:
        """The network settings shown in the widget (scale (1, 1, 1) means no resampling;
        in auto scale mode the scale is None: the run chooses it)."""
        tiles = None
        if not self.auto_tiles_check.isChecked():
            tiles = tuple(spin.value() for spin in self.tile_spins)
        scale = self.scale()
        return PredictSettings(
            norm=self.normalization(),
            scale=None if self.scale_mode() == "auto" or scale == (1.0, 1.0, 1.0) else scale,
            n_tiles=tiles,
            device=self.device_combo.currentData(),
            invert=self._invert(),
        )

    def _invert(self) -> bool:
        """Whether the network sees the selected image negated: *dark* objects, or *auto*
        and the last Run of this layer found dark ones (Suggest follows it)."""
        if self.polarity() != "auto":
            return self.polarity() == "dark"
        run, layer = self._run, self.selected_layer()
        return bool(run is not None and layer is not None and run.input_name == layer.name
                    and run.result is not None and run.result.settings.invert)

    def labels_pending(self) -> bool:
        """Are labels for the sliders' thresholds (or their refined outlines) on their way?"""
        return self._live.busy()

    def thresholds(self) -> tuple[float, float]:
        """The (probability, NMS) thresholds of the sliders."""
        return float(self.prob_slider.value()), float(self.nms_slider.value())

    def run(self) -> None:
        """Check the input, then in a worker read it (a lazy or over-budget layer: the region
        in view) and predict (the network only on a cache miss)."""
        checked = self._sized_input()
        if checked is None:
            return
        layer, entry, settings, volume = checked
        self._life.stop_warmup()
        auto_scaled, polarity = self.scale_mode() == "auto", self.polarity()
        metadata = run_metadata(entry, layer.name, volume, settings, self.scale_mode(), polarity)
        pending = RunRecord(layer.name, volume, self.thresholds(), metadata)

        def segment(read: InputVolume) -> Any:  # in the worker, once the volume is read
            pending.volume = read
            # StarDist's labels first: the outlines are refined after they are shown
            return network_job(entry, read.data, settings, pending.thresholds, self._cache,
                               auto_scaled=auto_scaled, refine=False, polarity=polarity)

        job = read_then(volume, settings.scale, segment)
        worker = create_worker(drive, job, _ignore_errors=True)  # errors: _on_run_errored
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_run_returned, pending))
        worker.errored.connect(self._on_run_errored)
        worker.finished.connect(job.close)  # after a cancel: stop predict_network for good
        worker.finished.connect(self._on_run_ended)
        self._outcome = ("failed", "The segmentation stopped unexpectedly.")
        self._start(worker, " ".join(filter(None, [volume.note, "Loading model..."])))

    def _start(self, worker: Any, message: str) -> None:
        self._life.worker = worker
        self.run_button.setEnabled(False)
        self.suggest_scale_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setFormat("")
        self.progress_bar.setRange(0, 0)  # busy until the first progress report
        self.status_label.setText(message)
        worker.start()

    def suggest_scale(self) -> None:
        """Measure the objects the network finds at the model's own probability threshold
        (in a worker), set the scale spins so that they get the network's training size
        (manual scale mode), then segment again at that scale if labels of this image are
        shown."""
        checked = self._sized_input()
        if checked is None:
            return
        _layer, entry, settings, volume = checked
        self._life.stop_warmup()
        prob = model_thresholds(entry)[0]  # stated: not the slider's current value
        job = read_then(volume, settings.scale,
                        lambda read: scale_job(entry, read.data, settings, prob, self._cache))
        worker = create_worker(drive, job, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_scale_returned)
        worker.errored.connect(self._on_run_errored)
        worker.finished.connect(job.close)
        worker.finished.connect(self._on_run_ended)
        self._outcome = ("failed", "The scale estimate stopped unexpectedly.")
        self._start(worker, f"Measuring objects at the model's probability threshold "
                            f"({prob:.2f})...")

    def _on_scale_returned(self, estimate: SizeEstimate) -> None:
        if not self._life.alive or self._outcome == ("cancelled",):
            return
        self.set_scale_mode("manual")
        self.set_scale(estimate.scale)
        size = " x ".join(f"{s:.1f}" for s in estimate.object_size)
        self.status_label.setText(
            f"Objects ~{size} voxels (Z, Y, X; {estimate.n_objects} found): scale set to "
            f"{', '.join(f'{s:g}' for s in estimate.scale)}. Press Run.")
        self._outcome = ("scale_suggested", estimate)

    def cancel(self) -> None:
        """Stop the running job after its current step (a slab of a lazy layer's read, a
        tile, a round of the scale estimate); no layer is changed, even when the job was
        already finishing (its result is dropped)."""
        if self._life.worker is not None and self._outcome[:1] != ("finished",):
            self._life.worker.quit()
            self._outcome = ("cancelled",)
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling after the current step...")

    def _on_progress(self, progress: tuple[str, int, int]) -> None:
        if not self._life.alive or self._outcome == ("cancelled",):
            return
        stage, done, total = progress
        unit, doing = PROGRESS_WORDS[stage]
        self.progress_bar.setFormat(f"%v / %m {unit}")
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.status_label.setText(f"{doing}: {done} / {total} {unit}")
        if stage == "tiles":
            self.run_progress.emit(done, total)

    def _on_run_returned(self, pending: RunRecord, result: RunResult) -> None:
        if not self._life.alive or self._outcome == ("cancelled",):
            return
        scale = result.settings.scale or (1.0, 1.0, 1.0)
        pending.metadata.update(model_sha256=result.model_sha256, n_tiles=result.output.n_tiles,
                                scale=scale, negated=result.settings.invert)
        auto = result.auto
        if auto is not None:
            if self.scale_mode() == "auto":
                self.set_scale(scale)
            pending.metadata["scale_note"] = auto.note
            if auto.fell_back:
                show_warning(f"'{pending.input_name}': {auto.note}")
        pending.result = result
        self._run = pending
        # older threshold results are stale now
        refiner = self._refiner_for(result)
        self._live.set_target(pending, result.solver, refiner)
        if result.cached:
            self.progress_bar.setFormat("cached network output")
            self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(self.progress_bar.maximum())
        layer = self._show_labels(result.labels, result.n_objects, result.object_prob,
                                  *pending.thresholds)
        if self.show_prob_check.isChecked():
            show_probability(self.viewer, self._run)
        source = "cached network output" if result.cached else "network"
        scale_note = f"Auto scale: {auto.note}" if auto is not None else ""
        dark_note = ("Dark objects: segmented the negated image."  # auto's choice, as run
                     if result.settings.invert and pending.metadata["objects"] == "auto" else "")
        pending.note = " ".join(filter(None, [pending.volume.note, dark_note, scale_note]))
        self.status_label.setText(_objects_status(
            pending.note, f"{result.n_objects} objects ({source})", refiner is not None))
        self._outcome = ("finished", layer)

    def _on_run_errored(self, exc: Exception) -> None:
        if self._life.alive:
            self._outcome = ("failed", self._report(exc))

    def job_ended(self) -> bool:
        """A job's worker (Run, Suggest, Tune, whole volume) ended: free the job slot and
        re-enable Run and Suggest; False if the widget is gone."""
        self._life.worker = None
        if not self._life.alive:
            return False
        self.run_button.setEnabled(self.selected_model() is not None)
        self.suggest_scale_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        return True

    def _on_run_ended(self) -> None:
        """Last signal of a run's worker: the widget is ready again, then tell listeners."""
        if not self.job_ended():
            return
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        outcome, *args = self._outcome
        if outcome == "cancelled":
            self.progress_bar.setFormat("")
            self.progress_bar.setValue(0)
            self.status_label.setText("Cancelled.")
        if outcome == "scale_suggested":
            self.scale_suggested.emit(*args)
            layer = self.selected_layer()
            if self._run is not None and layer is not None and self._run.input_name == layer.name:
                self.run()  # the labels on screen follow the scale just set
            return
        getattr(self, f"run_{outcome}").emit(*args)  # run_finished / run_failed / run_cancelled
        if outcome == "finished":
            if self.thresholds() != self._run.thresholds:
                self._live.schedule()  # the sliders moved while the network ran
            elif self._live.refine_shown():  # StarDist's labels are shown: refine them
                self.progress_bar.setRange(0, 0)  # busy until the refined outlines are shown
            self._start_warmup()

    def _report(self, exc: Exception) -> str:
        """Show a worker's exception as a one-line message (traceback only in the log)."""
        message = worker_error_message(exc, "Segmentation")
        self.status_label.setText(message)
        show_error(message)
        return message

    def _refuse(self, message: str) -> None:
        self.status_label.setText(message)
        show_error(message)
        self.run_failed.emit(message)

    # ----------------------------------------------------------------- live thresholds
    def _on_threshold_changed(self, *_: Any) -> None:
        if self._life.worker is None:
            self._live.schedule()

    def _show_pending(self, pending: bool) -> None:
        """A busy bar while labels for new thresholds are on their way (only between jobs)."""
        if self._life.worker is not None or not self._life.alive:
            return
        self.progress_bar.setFormat("")
        self.progress_bar.setRange(0, 0 if pending else 1)
        self.progress_bar.setValue(0 if pending else 1)
        if pending:
            prob, nms = self.thresholds()
            self.status_label.setText(f"Updating labels (probability {prob:.2f}, NMS {nms:.2f})...")

    def _on_solved(self, run: RunRecord, labels: Any, n_objects: int, object_prob: Any,
                   prob: float, nms: float, refining: bool) -> None:
        if run is self._run:
            note = run.note if (prob, nms) == run.thresholds else ""
            self.status_label.setText(_objects_status(
                note, f"{n_objects} objects (probability {prob:.2f}, NMS {nms:.2f})", refining))
            self._show_labels(labels, n_objects, object_prob, prob, nms)

    def _start_warmup(self) -> None:
        """Warm the shown run's solver around the current thresholds (``warm_job``; its
        chunks wait for slider solves); stopped by a new run, another image or model, or
        closing."""
        self._life.stop_warmup()
        completed = [False]
        worker = create_worker(
            warm_job, self._run.result.solver, *self.thresholds(), _ignore_errors=True
        )
        worker.returned.connect(lambda _: completed.__setitem__(0, True))
        worker.errored.connect(partial(logger.warning, "AnyStar warm-up failed: %s"))
        worker.finished.connect(partial(self._on_warmup_ended, worker, completed))
        self._life.warmup = worker
        worker.start()

    def _on_warmup_ended(self, worker: Any, completed: list[bool]) -> None:
        if self._life.warmup is worker:
            self._life.warmup = None
        if self._life.alive:
            self.warmup_finished.emit(completed[0])

    # --------------------------------------------------------------------------- output
    def _show_labels(self, labels: Any, n_objects: int, object_prob: Any, prob: float,
                     nms: float) -> Any:
        layer = show_labels(self.viewer, self._run, labels, n_objects, object_prob, prob, nms)
        self.labels_updated.emit(layer)
        return layer

    def _refiner_for(self, result: RunResult) -> OutlineRefiner | None:
        """The run's outline refiner if *Refine outlines* is ticked, else None."""
        return result.refiner if self.refine_check.isChecked() else None

    def _on_refine_toggled(self, _checked: bool) -> None:
        """Re-solve the shown labels with or without refined outlines."""
        if self._run is None or self._run.result is None:
            return
        self._live.set_target(self._run, self._run.result.solver,
                              self._refiner_for(self._run.result))
        self._live.schedule()

    def _on_show_prob_toggled(self, checked: bool) -> None:
        if self._run is None:
            return
        if checked:
            show_probability(self.viewer, self._run)
        else:
            remove_probability(self.viewer, self._run)

    # ----------------------------------------------------------------- size-aware input
    def _sized_input(self) -> tuple[Image, registry.ModelEntry, PredictSettings,
                                    InputVolume] | None:
        """Layer, model, settings and volume for a job, or None after saying what is wrong.

        A lazy or over-budget layer gives the region in view (``plan_volume``), not read:
        ``read_then`` reads and checks it in the worker.
        """
        if self._life.worker is not None:
            self.status_label.setText("A segmentation is already running.")
            return None
        layer, entry = self.selected_layer(), self.selected_model()
        if layer is None:
            self._refuse("Add or choose an image layer to segment.")
            return None
        if entry is None:
            self._refuse(registry.NO_MODELS_MESSAGE)
            return None
        try:
            settings = self.predict_settings()
            settings.validate()
            volume = plan_volume(layer, self.viewer.dims.point,
                                 view=visible_yx(self.viewer, layer))
            if volume.data is not None:
                check_volume(volume.data, scale=settings.scale)
        except ValueError as exc:
            self._refuse(str(exc))
            return None
        return layer, entry, settings, volume
