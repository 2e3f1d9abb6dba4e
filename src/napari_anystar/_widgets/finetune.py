"""Fine-tune dock widget: train a model on the user's layer pairs and/or AnyStar synthetic data.

Thin by design: it checks and snapshots the layers, builds a ``TrainSettings`` and drives the
core ``train()`` generator in a napari thread worker. Closing that generator is the cancel
path; the core then keeps the last checkpoint as a loadable model folder.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_anystar import _paths
from napari_anystar._widgets._exit import wait_for_workers_at_exit
from napari_anystar._widgets._finetune_checks import (
    check_pair,
    default_output_name,
    output_dir,
    snapshot_pairs,
)
from napari_anystar._widgets._finetune_pairs import PairPicker
from napari_anystar._widgets._finetune_run import drive
from napari_anystar._widgets._loss_plot import LossPlot
from napari_anystar._widgets._segment_models import model_label
from napari_anystar.model import registry
from napari_anystar.synth import GENERATOR_TITLES
from napari_anystar.train import TrainEvent, TrainSettings, train
from napari_anystar.train.recipe import make_recipe
from napari_anystar.train.validation import split_validation

__all__ = ["FineTuneWidget", "check_pair", "default_output_name"]

SCRATCH = "from scratch (lite)"
NO_GENERATOR = "none"


class FineTuneWidget(QWidget):
    """Dock widget: pick data and a base model, train in the background, save a user model."""

    progress = Signal(int, int)  # step, total
    training_started = Signal()
    training_finished = Signal(str)  # saved model folder
    training_cancelled = Signal(str)  # folder holding the last checkpoint
    training_failed = Signal(str)  # one-line reason
    refused = Signal(str)  # validation message; no worker was started
    _models_changed = Signal()

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        wait_for_workers_at_exit()
        self.viewer = napari_viewer
        self.worker: Any = None
        self._cancel: threading.Event | None = None
        self._result: tuple[str, Any] | None = None
        self._name_edited = False
        self._build_ui()
        self.pair_picker.refresh()
        self._refresh_models()
        self.pair_picker.connect_layers()
        self._models_changed.connect(self._refresh_models)
        unsubscribe = registry.on_models_changed(self._models_changed_from_any_thread)
        self.destroyed.connect(lambda *_: unsubscribe())

    # ----------------------------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        data_box = QGroupBox("Training data")
        data_layout = QFormLayout(data_box)
        picker = self.pair_picker = PairPicker(self.viewer, self)
        picker.changed.connect(self._update_fraction_enabled)
        picker.refused.connect(self._refuse)
        self.image_combo, self.labels_combo = picker.image_combo, picker.labels_combo
        self.add_pair_button, self.remove_pair_button = picker.add_button, picker.remove_button
        self.pair_list = picker.list
        self.generator_combo = QComboBox()
        self.generator_combo.addItem(NO_GENERATOR, None)
        for name, title in GENERATOR_TITLES.items():
            self.generator_combo.addItem(title, name)
        self.generator_combo.currentIndexChanged.connect(self._update_fraction_enabled)
        self.fraction_spin = QDoubleSpinBox()
        self.fraction_spin.setRange(0.0, 1.0)
        self.fraction_spin.setSingleStep(0.05)
        self.fraction_spin.setValue(0.5)
        self.fraction_spin.setToolTip(
            "Share of each batch drawn from the generator when layer pairs are also given."
        )
        picker.add_rows(data_layout)
        data_layout.addRow("Generator", self.generator_combo)
        data_layout.addRow("Synthetic fraction", self.fraction_spin)

        run_box = QGroupBox("Training")
        run_layout = QFormLayout(run_box)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip(
            "Model to fine-tune, or a new network trained from scratch with the 'lite' recipe."
        )
        self.model_combo.currentIndexChanged.connect(self._on_base_changed)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10_000_000)
        self.steps_spin.setToolTip("Optimisation steps (the learning rate decays to 0 by the end).")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setToolTip("Training patches per step.")
        self.tune_check = QCheckBox("Tune thresholds at the end")
        self.tune_check.setChecked(True)
        self.tune_check.setToolTip(
            "Choose probability/NMS thresholds on validation data after training."
        )
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip(
            "Folder name of the new model in the user models folder; never overwritten."
        )
        self.name_edit.textEdited.connect(self._on_name_edited)
        run_layout.addRow("Base model", self.model_combo)
        run_layout.addRow("Steps", self.steps_spin)
        run_layout.addRow("Batch size", self.batch_spin)
        run_layout.addRow(self.tune_check)
        run_layout.addRow("Output name", self.name_edit)

        self.start_button = QPushButton("Start training")
        self.start_button.setToolTip(
            "Train in the background into a new folder of the user models; the model is listed "
            "once its first checkpoint is saved."
        )
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(
            "Stop after the current step and keep what was trained as a model (nothing is kept "
            "if no step was made)."
        )
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self._clear_progress()  # no step count before a run
        self._steps = (0, 0)  # (step, total) of the last optimisation step
        self.loss_plot = LossPlot()
        self.validation_label = QLabel("")
        self.validation_label.setWordWrap(True)
        self.validation_label.setToolTip(
            "What the validation loss and the tuned thresholds of the run are computed on."
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
        layout.addWidget(run_box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.validation_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._update_fraction_enabled()

    def _models_changed_from_any_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # raised once this widget is deleted
            self._models_changed.emit()  # queued to the GUI thread when called from a worker

    def _refresh_models(self) -> None:
        """List the models (with notes such as unfinished training), keeping the choice."""
        combo = self.model_combo
        current = combo.currentData()
        key = None if current is None else current.path
        keep = combo.count() > 0
        combo.blockSignals(True)
        combo.clear()
        for entry in registry.list_models():
            text, tooltip = model_label(entry)
            combo.addItem(text, entry)
            combo.setItemData(combo.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        combo.addItem(SCRATCH, None)
        paths = [None if e is None else e.path for e in map(combo.itemData, range(combo.count()))]
        combo.setCurrentIndex(paths.index(key) if keep and key in paths else 0)
        combo.blockSignals(False)
        selected = combo.currentData()
        if (None if selected is None else selected.path) != key or not keep:
            self._on_base_changed()
        else:
            self._update_default_name()

    def _on_base_changed(self, *_: Any) -> None:
        """Show the run defaults of the chosen base (fine-tune) or of the 'lite' recipe."""
        entry = self.model_combo.currentData()
        probe = TrainSettings(
            out_dir=Path(), config="lite", base_model=None if entry is None else entry.path
        )
        try:
            recipe = make_recipe(probe)
        except ValueError as exc:
            self._set_status(str(exc))
        else:
            self.steps_spin.setValue(recipe.steps)
            self.batch_spin.setValue(recipe.batch_size)
        self._update_default_name()

    def _update_fraction_enabled(self, *_: Any) -> None:
        both = self.pair_list.count() > 0 and self.generator_combo.currentData() is not None
        self.fraction_spin.setEnabled(both)

    def _on_name_edited(self, text: str) -> None:
        self._name_edited = bool(text.strip())

    def _update_default_name(self, *_: Any) -> None:
        if self._name_edited:
            return
        entry = self.model_combo.currentData()
        base = entry.name if entry is not None else "scratch"
        self.name_edit.setText(default_output_name(base, _paths.user_models_dir()))

    # ------------------------------------------------------------------------------ running
    def is_running(self) -> bool:
        return self.worker is not None

    def start(self) -> None:
        """Check the inputs, snapshot the layers and start training in a worker."""
        if self.is_running():
            return
        try:
            settings = self._build_settings()
            validation = split_validation(settings.labels, make_recipe(settings)).text
        except ValueError as exc:
            self._refuse(str(exc))
            return
        self._cancel = threading.Event()
        self._result = None
        self.loss_plot.clear()
        self._steps = (0, settings.steps)
        self._show_progress("preparing...", 0, 0)  # busy until the first step or data count
        self.validation_label.setText(f"Validation: {validation}.")
        worker = create_worker(
            drive, train, settings, self._cancel, _start_thread=False,
            _connect={"yielded": self._on_event, "returned": self._on_returned,
                      "errored": self._on_errored, "finished": self._on_finished},
        )
        cancel = self._cancel
        self.destroyed.connect(lambda *_: cancel.set())  # closing napari stops the run
        self.worker = worker
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._set_status(f"Training '{Path(settings.out_dir).name}'...")
        self.training_started.emit()
        worker.start()

    def cancel(self) -> None:
        """Stop after the current step; the core keeps the last checkpoint."""
        if self._cancel is not None and self.is_running():
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._set_status("Cancelling after the current step; keeping the last checkpoint...")

    def _build_settings(self) -> TrainSettings:
        generator = self.generator_combo.currentData()
        pairs = self.pair_picker.pairs()
        if not pairs and generator is None:
            raise ValueError("No training data: add an image/labels pair or choose a generator.")
        images, labels = snapshot_pairs(pairs)
        out_dir = output_dir(self.name_edit.text().strip(), _paths.user_models_dir())
        both = generator is not None and bool(pairs)
        entry = self.model_combo.currentData()
        settings = TrainSettings(
            out_dir=out_dir,
            config="lite",
            base_model=None if entry is None else entry.path,
            generator=generator,
            images=images,
            labels=labels,
            synthetic_fraction=float(self.fraction_spin.value()) if both else None,
            steps=int(self.steps_spin.value()),
            batch_size=int(self.batch_spin.value()),
            optimize_thresholds=self.tune_check.isChecked(),
        )
        settings.validate()
        return settings

    def _on_event(self, event: TrainEvent) -> None:
        if event.kind == "step":
            self._steps = (event.step, event.total_steps)
            self._show_progress("step %v / %m", event.step, event.total_steps)
            self.loss_plot.add_point("train", event.step, event.loss)
            self.progress.emit(event.step, event.total_steps)
        elif event.kind == "epoch":
            self.loss_plot.add_point("val", event.step, event.val_loss)
            self._set_status(
                f"Step {event.step}/{event.total_steps}: loss {_fmt(event.loss)}, "
                f"validation loss {_fmt(event.val_loss)}"
            )
        elif event.kind in ("prepare", "thresholds"):
            what = event.message or event.kind
            if event.total:
                self._show_progress(f"{what} %v / %m", event.done, event.total)
            elif event.step == 0:
                self._show_progress(f"{what}...", 0, 0)
            self._set_status(f"{what[:1].upper()}{what[1:]}...")

    def _clear_progress(self) -> None:
        """An empty bar: no steps to show (before a run, or a run that made none)."""
        self._show_progress("", 0, 1)

    def _show_progress(self, fmt: str, value: int, maximum: int) -> None:
        self.progress_bar.setFormat(fmt)
        self.progress_bar.setRange(0, maximum)
        self.progress_bar.setValue(value)

    def _on_returned(self, result: tuple[Path, bool]) -> None:
        folder, cancelled = result
        self._result = ("cancelled" if cancelled else "finished", str(folder))

    def _on_errored(self, exc: BaseException) -> None:
        plain = isinstance(exc, (ValueError, OSError)) and str(exc)
        reason = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        self._result = ("failed", reason.splitlines()[0] if reason else type(exc).__name__)

    def _on_finished(self) -> None:
        self.worker = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        step, total = self._steps
        if step:
            self._show_progress("step %v / %m", step, max(total, 1))
        else:
            self._clear_progress()
        kind, value = self._result or ("failed", "training stopped without a result")
        if (_paths.user_models_dir() / self.name_edit.text().strip()).exists():
            self._name_edited = False  # the name is taken now: offer a fresh default
        self._refresh_models()
        if kind == "failed":
            message = f"Training failed: {value}"
            show_error(message)
            self._set_status(message)
            self.training_failed.emit(value)
        elif kind == "cancelled":
            message = (f"Cancelled at step {step}/{total}; the last checkpoint is saved in "
                       f"{value}" if Path(value).is_dir() else
                       "Cancelled before the first training step; nothing was saved.")
            self._set_status(message)
            show_info(message)
            self.training_cancelled.emit(value)
        else:
            message = f"Done: model saved in {value}"
            self._set_status(message)
            show_info(message)
            self.training_finished.emit(value)

    def _refuse(self, message: str) -> None:
        show_error(message)
        self._set_status(message)
        self.refused.emit(message)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
