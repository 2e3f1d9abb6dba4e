"""Dock widget "Synthetic preview": look at AnyStar synthetic samples and export series of them.

Thin: settings come from the widgets, the work is :func:`napari_anystar.synth.generate` and
:func:`napari_anystar.synth.export_samples`, run in napari thread workers.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._layers import add_or_update_layer
from napari_anystar._widgets._preview_jobs import (
    export_job,
    generate_job,
    quit_all,
    refusal,
    warm_up_job,
)
from napari_anystar.synth import (
    BACKGROUND_MODES,
    GENERATOR_NAMES,
    GENERATOR_TITLES,
    MIN_OUTPUT_SIZE,
    SyntheticSample,
    SynthSettings,
    export_samples,
)

if TYPE_CHECKING:
    import napari

WIDGET_TAG = "synthetic-preview"
MAX_SEED = 2**31 - 1
# (layer-name suffix, layer type, key in SyntheticSample.stages, on the synthesis grid): the
# paper's Figure 2 columns.
STAGES = (
    ("L", "labels", "label_map", True),
    ("g(L)", "image", "clean_image", True),
    ("A(g(L))", "image", "augmented_image", False),
)
#: Voxels between the synthesis grid and the output volumes placed beside it.
STAGE_GAP = 8
STAGES_HELP = (
    "Also show the label map L and the clean image g(L) on the {grid}^3 synthesis grid, and "
    "A(g(L)). The output volumes (A(g(L)), image, labels) are placed beside the grid along X, "
    "centred on its middle Z and Y planes: A(.) crops a random region and zooms, rotates and "
    "deforms it, so the output lines up with no part of the grid."
)


def output_offset(grid_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[float, ...]:
    """Where an output volume of ``shape`` goes beside the grid (ZYX translate, voxels)."""
    z, y = ((g - n) / 2 for g, n in zip(grid_shape[:2], shape[:2], strict=True))
    return (z, y, grid_shape[2] + STAGE_GAP)


class SyntheticPreviewWidget(QWidget):
    """Generate AnyStar samples (optionally with their stages) into layers; export series."""

    generated = Signal(object)  # list: the layers made or updated for the latest request
    export_finished = Signal(int)  # number of samples written (emitted when the export worker ends)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        wait_for_workers_at_exit()
        self._viewer = napari_viewer
        self._request = 0
        self._gen_workers: set[Any] = set()
        self._export_workers: set[Any] = set()  # at most one
        self._export_samples: Generator[int, None, None] | None = None
        self._export_folder: Path | None = None
        self._exported = 0
        # a closed dock stops its workers (their results are not applied: slots are gone)
        workers = (self._gen_workers, self._export_workers)
        self.destroyed.connect(lambda *_: quit_all(*workers))
        defaults = SynthSettings()
        self._pad_choices = tuple(sorted(defaults.pad_choices))

        self._generator = QComboBox()
        for name in GENERATOR_NAMES:
            self._generator.addItem(GENERATOR_TITLES[name], name)
        self._generator.currentIndexChanged.connect(self._on_generator_changed)
        self._seed = QSpinBox()
        self._seed.setRange(0, MAX_SEED)
        self._seed.setValue(42)
        self._new_seed_btn = QPushButton("New seed")
        self._new_seed_btn.setToolTip("Pick a random seed")
        self._new_seed_btn.clicked.connect(self.new_seed)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self._seed, 1)
        seed_row.addWidget(self._new_seed_btn)
        self._size = QSpinBox()
        self._size.setRange(MIN_OUTPUT_SIZE, defaults.grid_size)  # what the generator accepts
        self._size.setValue(defaults.size)
        self._size.setToolTip("Edge length of the output volume (the random crop), voxels")
        self._radius = QDoubleSpinBox()
        self._radius.setRange(0.0, 1000.0)
        self._radius.setDecimals(1)
        self._radius.setValue(defaults.mean_radius)
        self._radius.setToolTip("Mean object radius r_mean on the synthesis grid, voxels")
        self._max_pad = QComboBox()
        for pad in self._pad_choices:
            self._max_pad.addItem(str(pad), pad)
        self._max_pad.setCurrentIndex(len(self._pad_choices) - 1)
        self._max_pad.setToolTip(
            "Largest density padding per side: the label map is padded by one of the choices up "
            "to this value, then resized back (more padding = more, smaller objects)"
        )
        self._background = QComboBox()
        self._background.addItem("generator default", None)
        for mode in BACKGROUND_MODES:
            self._background.addItem(mode, mode)
        self._background.setToolTip("AS-Mix only: force one background mode")
        self._stages = QCheckBox("Show stages")
        self._stages.setToolTip(STAGES_HELP.format(grid=defaults.grid_size))
        self._generate_btn = QPushButton("Generate")
        self._generate_btn.setToolTip(
            "Make one sample of the generator, seed and settings above in the background; its "
            "layers replace those of the same generator and seed"
        )
        self._generate_btn.clicked.connect(self.generate)
        self._status = QLabel("")
        self._status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Generator", self._generator)
        form.addRow("Seed", seed_row)
        form.addRow("Output size", self._size)
        form.addRow("Mean radius", self._radius)
        form.addRow("Max padding", self._max_pad)
        form.addRow("Background", self._background)
        form.addRow(self._stages)
        form.addRow(self._generate_btn)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self._build_export_box())
        layout.addWidget(self._status)
        layout.addStretch(1)
        self._on_generator_changed()
        self._warm_up(defaults.size)

    def _warm_up(self, size: int) -> None:
        """Import torch/MONAI and build A(.) in the background: the first click is then quick."""
        self._warm_up_worker = create_worker(warm_up_job, size, _ignore_errors=True)
        self._warm_up_worker.start()

    def _build_export_box(self) -> QGroupBox:
        self._n_export = QSpinBox()
        self._n_export.setRange(1, 1_000_000)
        self._n_export.setValue(10)
        self._overwrite = QCheckBox("Overwrite existing files")
        self._export_btn = QPushButton("Export N samples...")
        self._export_btn.setToolTip(
            "Write N image/label pairs (NNNNN_image.tif, NNNNN_labels.tif) to a folder, "
            "as `anystar synth` does; sample i uses a seed derived from the seed above"
        )
        self._export_btn.clicked.connect(self.export)
        self._cancel_btn = QPushButton("Cancel")
        self._cancel_btn.setToolTip("Stop the export after the sample being written")
        self._cancel_btn.setEnabled(False)
        self._cancel_btn.clicked.connect(self.cancel_export)
        self._progress = QProgressBar()
        self._progress.setFormat("%v / %m")
        box = QGroupBox("Export")
        form = QFormLayout(box)
        form.addRow("N", self._n_export)
        form.addRow(self._overwrite)
        buttons = QHBoxLayout()
        buttons.addWidget(self._export_btn, 1)
        buttons.addWidget(self._cancel_btn)
        form.addRow(buttons)
        form.addRow(self._progress)
        return box

    # ----------------------------------------------------------------- settings
    @property
    def generator(self) -> str:
        return self._generator.currentData()

    def settings(self) -> SynthSettings:
        """The settings the widgets describe (not validated)."""
        max_pad = self._max_pad.currentData()
        background = self._background.currentData() if self.generator == "as-mix" else None
        return SynthSettings(
            size=self._size.value(),
            mean_radius=self._radius.value(),
            pad_choices=tuple(p for p in self._pad_choices if p <= max_pad),
            background=background,
        )

    def _valid_settings(self) -> SynthSettings | None:
        """Validated settings, or None after telling the user what is wrong."""
        try:
            settings = self.settings()
            settings.validate()
        except ValueError as exc:
            self._refuse(str(exc))
            return None
        return settings

    def _refuse(self, message: str) -> None:
        self._status.setText(message)
        show_error(message)

    def _on_generator_changed(self) -> None:
        self._background.setEnabled(self.generator == "as-mix")

    def new_seed(self) -> None:
        self._seed.setValue(secrets.randbelow(MAX_SEED + 1))

    # --------------------------------------------------------------- generation
    @property
    def is_generating(self) -> bool:
        """Whether any generation worker (latest or stale) is still running."""
        return bool(self._gen_workers)

    def generate(self) -> None:
        """Start generating the sample the widgets describe; a running request becomes stale."""
        settings = self._valid_settings()
        if settings is None:
            return
        generator, seed = self.generator, self._seed.value()
        self._request += 1
        quit_all(self._gen_workers)
        worker = create_worker(
            generate_job, self._request, generator, seed, settings, self._stages.isChecked(),
            _ignore_errors=True,
        )
        worker.returned.connect(self._on_generated)
        worker.errored.connect(self._on_generation_error)
        worker.finished.connect(partial(self._gen_workers.discard, worker))
        self._gen_workers.add(worker)
        self._status.setText(f"Generating {GENERATOR_TITLES[generator]} seed {seed}...")
        worker.start()

    def _on_generated(self, result: tuple[int, SyntheticSample]) -> None:
        request, sample = result
        if request != self._request:
            return  # stale: a newer request was made meanwhile
        layers = self._show(sample)
        self._status.setText(
            f"{GENERATOR_TITLES[sample.generator]} seed {sample.seed}: "
            f"{int(sample.labels.max())} objects, background '{sample.background}'"
        )
        self.generated.emit(layers)

    def _on_generation_error(self, exc: Exception) -> None:
        self._status.setText(f"Generation failed: {exc}")

    def _show(self, sample: SyntheticSample) -> list:
        prefix = f"{GENERATOR_TITLES[sample.generator]} s{sample.seed}"
        metadata = {
            "generator": sample.generator,
            "seed": sample.seed,
            "background": sample.background,
            "settings": dataclasses.asdict(sample.settings),
        }
        items = [
            (suffix, kind, sample.stages[key], on_grid)
            for suffix, kind, key, on_grid in STAGES
            if key in sample.stages
        ]
        items += [("image", "image", sample.image, False),
                  ("labels", "labels", sample.labels, False)]
        grid = sample.stages.get("label_map")
        layers = []
        for suffix, kind, data, on_grid in items:
            tag = {
                "widget": WIDGET_TAG, "generator": sample.generator, "seed": sample.seed,
                "role": suffix,
            }
            extra = {"colormap": "gray", "contrast_limits": (0.0, 1.0)} if kind == "image" else {}
            layer = add_or_update_layer(
                self._viewer, kind, data, name=f"{prefix} {suffix}", tag=tag, metadata=metadata,
                **extra,
            )
            beside = grid is not None and not on_grid
            layer.translate = output_offset(grid.shape, data.shape) if beside else (0.0,) * 3
            layers.append(layer)
        return layers

    # ------------------------------------------------------------------- export
    def choose_export_folder(self) -> Path | None:
        """Ask for the export folder (tests replace this method to skip the dialog)."""
        folder = QFileDialog.getExistingDirectory(self, "Export synthetic samples to a folder")
        return Path(folder) if folder else None

    @property
    def is_exporting(self) -> bool:
        return bool(self._export_workers)

    def export(self) -> None:
        """Export N samples of the current generator/seed/settings in the background."""
        if self.is_exporting:
            return
        settings = self._valid_settings()
        if settings is None:
            return
        folder = self.choose_export_folder()
        if folder is None:
            return
        n = self._n_export.value()
        try:  # export_samples checks everything (folder, existing files) before any work
            samples = export_samples(
                self.generator, n, self._seed.value(), folder, settings,
                overwrite=self._overwrite.isChecked(),
            )
        except (ValueError, OSError) as exc:
            self._refuse(refusal(exc))
            return
        worker = create_worker(export_job, samples, _ignore_errors=True)
        worker.yielded.connect(self._on_exported_one)
        worker.returned.connect(self._on_export_returned)
        worker.errored.connect(self._on_export_error)
        worker.finished.connect(self._on_export_finished)
        self._export_workers.add(worker)
        self._export_samples, self._export_folder = samples, folder
        self._exported = 0
        self._progress.setRange(0, n)
        self._progress.setValue(0)
        self._export_btn.setEnabled(False)
        self._cancel_btn.setEnabled(True)
        self._status.setText(f"Exporting {n} samples to {folder}...")
        worker.start()

    def cancel_export(self) -> None:
        """Stop the running export after the sample being written."""
        if self.is_exporting:
            quit_all(self._export_workers)
            self._status.setText("Cancelling export...")

    def _on_exported_one(self, done: int) -> None:
        self._exported = done
        self._progress.setValue(done)

    def _on_export_returned(self, message: str | None) -> None:
        if message:
            self._refuse(message)

    def _on_export_error(self, exc: Exception) -> None:
        self._status.setText(f"Export failed: {exc}")

    def _on_export_finished(self) -> None:
        if self._export_samples is not None:
            self._export_samples.close()  # after a cancel: export_samples cleans up
        cancelled = self._export_workers.pop().abort_requested
        folder, self._export_samples, self._export_folder = self._export_folder, None, None
        self._export_btn.setEnabled(True)
        self._cancel_btn.setEnabled(False)
        if cancelled:
            self._status.setText(f"Export cancelled after {self._exported} samples.")
        elif self._exported == self._progress.maximum():
            self._status.setText(f"Exported {self._exported} samples to {folder}.")
            show_info(f"Exported {self._exported} synthetic samples to {folder}")
        self.export_finished.emit(self._exported)
