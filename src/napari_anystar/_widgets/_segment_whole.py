"""The Segment widget's "Run on whole volume" button, for lazy or over-budget layers.

Such a layer is segmented live in the region in view (``_segment_input.plan_volume``); this
button applies the sliders' thresholds, the scale and the outline refinement choice to the
whole volume, block by block (:func:`~napari_anystar.model.blockwise.segment_blocks`) in a
worker, into a new zarr store under the user's cache folder. The labels are shown as a lazily
read Labels layer (a dask array over the store) from the first block on, refreshed as blocks
complete; Cancel stops between blocks and keeps what was written.
"""

from __future__ import annotations

import re
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal

from napari_anystar._paths import user_cache_dir
from napari_anystar._widgets._errors import worker_error_message
from napari_anystar._widgets._layers import OWNER_KEY
from napari_anystar._widgets._segment_input import spatial_transform
from napari_anystar._widgets._segment_jobs import drive
from napari_anystar.model.blockwise import BlockRunResult, segment_blocks
from napari_anystar.model.input_budget import classify, memory_budget

if TYPE_CHECKING:
    from napari_anystar._widgets.segment import SegmentWidget

#: Core edge of the blocks (Z, Y, X input voxels); None: the block-wise core's default.
BLOCK_SIZE: tuple[int, int, int] | None = None
#: Sub-folder of the user's cache folder holding the whole-volume label stores.
STORE_FOLDER = "whole-volume"


def whole_volume_store(image_name: str) -> Path:
    """A new (not yet existing) zarr store path for the whole-volume labels of an image."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_name).strip("._") or "image"
    folder = user_cache_dir() / STORE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem[:60]}-{uuid.uuid4().hex[:12]}.zarr"


def unique_layer_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... the first no layer of ``viewer`` has."""
    taken = {layer.name for layer in viewer.layers}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} [{n}]"
    return candidate


def needs_whole_run(layer: Any) -> bool:
    """Is ``layer`` segmented by region in the widget (lazily backed or over the budget)?"""
    if layer is None or getattr(layer, "rgb", False) or layer.ndim != 3:
        return False
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    try:
        return classify(data, memory_budget()).kind != "memory"
    except ValueError:  # a bad budget: Run says so
        return False


class WholeVolumeSection(QObject):
    """Drives the host's "Run on whole volume" button; the run shares the host's Cancel."""

    layer_added = Signal(object)  # the whole-volume Labels layer, after its first block
    progressed = Signal(int, int)  # blocks done, blocks total
    finished = Signal(object)  # the Labels layer, after the last block
    failed = Signal(str)  # one-line reason
    cancelled = Signal()

    def __init__(self, host: SegmentWidget) -> None:
        super().__init__(host)
        self.host = host
        self.button = host.whole_button
        self.layer: Any = None  # the layer of the current or last run
        self.button.clicked.connect(self.run)
        host.image_combo.currentIndexChanged.connect(self.update_button)
        host.model_chooser.model_changed.connect(self.update_button)
        host.viewer.layers.events.inserted.connect(self.update_button)
        host.viewer.layers.events.removed.connect(self.update_button)
        self.update_button()

    def update_button(self, *_: Any) -> None:
        """Shown for a lazy or over-budget layer; enabled with a model and no job running."""
        if not self.host._life.alive:
            return
        shown = needs_whole_run(self.host.selected_layer())
        self.button.setVisible(shown)
        self.button.setEnabled(shown and self.host.selected_model() is not None
                               and self.host._life.worker is None)

    def run(self) -> None:
        """Segment the selected layer's whole volume with the sliders' thresholds and the
        widget's settings (outline refinement included), block by block, in a worker (the
        host's Cancel stops it)."""
        host = self.host
        layer, entry = host.selected_layer(), host.selected_model()
        if host._life.worker is not None:
            host.status_label.setText("A segmentation is already running.")
            return
        if layer is None or entry is None:
            return
        try:
            settings = host.predict_settings()
            settings.validate()
        except ValueError as exc:
            self._fail(str(exc))
            return
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        out_path = whole_volume_store(layer.name)
        job = segment_blocks(entry, data, out_path, settings, host.thresholds(), BLOCK_SIZE,
                             auto_scaled=host.scale_mode() == "auto",
                             voxel_size=tuple(float(s) for s in layer.scale),
                             refine=host.refine_check.isChecked(), polarity=host.polarity())
        worker = create_worker(drive, job, _ignore_errors=True)
        self.layer = None
        state = {"outcome": "failed", "message": "The whole-volume run stopped unexpectedly."}
        worker.yielded.connect(partial(self._on_progress, layer, out_path))
        worker.returned.connect(partial(self._on_returned, layer, out_path, state))
        worker.errored.connect(partial(self._on_errored, state))
        worker.finished.connect(job.close)
        worker.finished.connect(partial(self._on_ended, worker, state))
        host._outcome = ("whole",)
        host._start(worker, f"Segmenting the whole of '{layer.name}' block by block...")
        self.button.setEnabled(False)

    def _add_layer(self, image: Any, out_path: Path) -> None:
        import dask.array as da

        name = unique_layer_name(self.host.viewer, f"{image.name} labels (whole volume)")
        self.layer = self.host.viewer.add_labels(
            da.from_zarr(str(out_path)), name=name, **spatial_transform(image),
            metadata={OWNER_KEY: {"widget": "segment", "role": "whole-volume"},
                      "store": str(out_path)})
        self.layer_added.emit(self.layer)

    def _on_progress(self, image: Any, out_path: Path, progress: tuple[int, int]) -> None:
        if not self.host._life.alive:
            return
        done, total = progress
        bar = self.host.progress_bar
        bar.setFormat("%v / %m blocks")
        bar.setRange(0, total)
        bar.setValue(done)
        self.host.status_label.setText(f"Whole volume: {done} / {total} blocks")
        if done > 0:
            if self.layer is None:
                self._add_layer(image, out_path)
            else:
                self.layer.refresh()
        self.progressed.emit(done, total)

    def _on_returned(self, image: Any, out_path: Path, state: dict,
                     result: BlockRunResult) -> None:
        if not self.host._life.alive:
            return
        if self.layer is None:
            self._add_layer(image, out_path)
        else:
            self.layer.refresh()
        state["outcome"] = "finished"
        self.host.status_label.setText(
            f"{result.n_objects} objects in the whole volume ({result.n_blocks} blocks), "
            f"saved in {result.path}.")

    def _on_errored(self, state: dict, exc: Exception) -> None:
        state["message"] = worker_error_message(exc, "Whole-volume segmentation")

    def _fail(self, message: str) -> None:
        self.host.status_label.setText(message)
        show_error(message)
        self.failed.emit(message)

    def _on_ended(self, worker: Any, state: dict) -> None:
        host = self.host
        if not host.job_ended():
            return
        if host.progress_bar.maximum() == 0:
            host.progress_bar.setRange(0, 1)
        self.update_button()
        if state["outcome"] == "finished":
            self.finished.emit(self.layer)
        elif worker.abort_requested:
            host.status_label.setText("Cancelled.")
            self.cancelled.emit()
        else:
            self._fail(state["message"])
