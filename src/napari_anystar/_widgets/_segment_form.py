"""Controls of the Segment dock widget (layout only; behaviour lives in ``segment.py``)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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
from superqt import QLabeledDoubleSlider

from napari_anystar._widgets._segment_models import ModelChooser
from napari_anystar.model.object_size import DEFAULT_SCALE_POLICY, TRAINING_DIAMETER
from napari_anystar.model.polarity import DEFAULT_POLARITY
from napari_anystar.model.predict import DEFAULT_MIN_PROB, DEVICES
from napari_anystar.model.refine import DEFAULT_REFINE
from napari_anystar.normalization import ANYSTAR, Normalization

SCALE_MODES = (
    ("Auto (Suggest from raw voxels)", "auto"),
    ("From voxel size", "voxel_size"),
    ("Manual", "manual"),
)
AXES = ("Z", "Y", "X")
POLARITY_CHOICES = (
    ("Auto (bright or dark)", "auto"),
    ("Brighter than the background", "bright"),
    ("Darker than the background", "dark"),
)

HELP = {
    "image": "3D image layer to segment (never modified). For a 4D+ layer (e.g. a time series) "
    "the 3D volume currently displayed is used.",
    "prob": "Probability threshold: lower it to get more objects, raise it to get fewer.",
    "nms": "Non-maximum suppression (overlap) threshold: raise it to keep more touching objects.",
    "norm": "Intensity normalisation: the low/high percentiles mapped to 0 and 1, then "
    "clipped to [0, 1] if 'clip' is ticked. Set to the selected model's recorded "
    "normalisation (the one it was trained with) whenever the model changes.",
    "scale_mode": "Auto: Run first measures the objects the network finds at raw voxels and "
    "rescales them to the network's training size (as Suggest), then segments at that scale "
    "(shown in the boxes); where it finds no object it keeps scale 1 and warns. From voxel size: "
    "the layer's voxel size divided by its X voxel size (isotropic voxels, e.g. voxel size "
    "(2, 0.5, 0.5) -> (4, 1, 1)). Manual: the scale boxes.",
    "scale": "Rescale factors (Z, Y, X) applied before the network (editable in Manual mode). "
    f"Choose them so objects are about {TRAINING_DIAMETER:g} voxels across (the network's "
    "training size).",
    "suggest": "Run the network, measure the objects it finds and set the scale so that they "
    "are the size the network was trained on (~12 voxels along each axis), in Manual mode. "
    "Uses the current scale as the starting point.",
    "tiles": "Split the volume into Z x Y x X tiles (automatic: windows of about 64^3 voxels).",
    "device": "Where the network runs: Auto uses a GPU when TensorFlow sees one.",
    "run": "Segment the image: the network runs in the background (per-tile progress), then "
    "the sliders change the labels live without running it again.",
    "cancel": "Stop the running job after the current tile (or slab of a lazy layer being "
    "read); the labels on screen stay.",
    "objects": "Which objects to segment. Bright: objects brighter than what surrounds them "
    "(fluorescence). Dark: darker (e.g. nuclei in micro-CT); the network then sees the "
    "negated image. Auto: Run segments the image as given and, if the objects it finds are "
    "darker than their surroundings, segments the negated image instead (the status says so).",
    "refine": "Redraw each object's outline where the image puts its edge (half-way between "
    "the object's intensity and the background around it, above any uneven "
    "illumination) instead of the network's "
    "star-convex shape. Same objects, closer outlines on fluorescence data; untick for "
    "StarDist's own shapes.",
    "whole": "Shown for a lazy (dask/zarr) layer or one over the memory budget, which Run "
    "segments in the region in view: apply the current thresholds and scale to the whole "
    "volume block by block in the background, written to a zarr store in the user's cache "
    "folder and shown as a lazily loaded labels layer as blocks complete.",
    "show_prob": "Also show the network's object probability map as an image layer.",
}


def _form(box: QGroupBox) -> QFormLayout:
    """A form that puts a field below its label when the dock is too narrow for both."""
    form = QFormLayout(box)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def _spin_row(spins: list[QAbstractSpinBox]) -> QWidget:
    """Number boxes side by side, with no labels between them (the dock may be narrow)."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for spin in spins:
        layout.addWidget(spin, 1)
    return row


def _axis_tooltips(spins: list[QAbstractSpinBox], help_text: str) -> None:
    for axis, spin in zip(AXES, spins, strict=True):
        spin.setToolTip(f"{axis}: {help_text}")


def _threshold_slider(low: float, tooltip: str) -> QLabeledDoubleSlider:
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(low, 1.0)
    slider.setDecimals(2)
    slider.setSingleStep(0.01)
    slider.setToolTip(tooltip)
    return slider


class SegmentForm(QWidget):
    """The Segment widget's controls, grouped as input, thresholds, prediction and run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip(HELP["image"])
        self.model_chooser = ModelChooser()
        self.model_combo = self.model_chooser.combo
        self.no_models_label = self.model_chooser.hint

        # candidates below DEFAULT_MIN_PROB are not kept by the network step
        self.prob_slider = _threshold_slider(DEFAULT_MIN_PROB, HELP["prob"])
        self.nms_slider = _threshold_slider(0.0, HELP["nms"])

        self.norm_low = self._double_spin(0.0, 100.0, 0.0, 0.1, 2, HELP["norm"])
        self.norm_high = self._double_spin(0.0, 100.0, 100.0, 0.1, 2, HELP["norm"])
        self.norm_clip_check = QCheckBox("clip")
        self.norm_clip_check.setToolTip(HELP["norm"])
        self.set_normalization(ANYSTAR)
        self.scale_mode_combo = QComboBox()
        for title, value in SCALE_MODES:
            self.scale_mode_combo.addItem(title, value)
        self.scale_mode_combo.setToolTip(HELP["scale_mode"])
        self.scale_spins = [self._double_spin(0.05, 20.0, 1.0, 0.1, 3, HELP["scale"]) for _ in AXES]
        self.scale_mode_combo.currentIndexChanged.connect(self._on_scale_mode)
        self.set_scale_mode(DEFAULT_SCALE_POLICY)
        self._on_scale_mode()
        self.objects_combo = QComboBox()
        for title, value in POLARITY_CHOICES:
            self.objects_combo.addItem(title, value)
        self.objects_combo.setCurrentIndex(self.objects_combo.findData(DEFAULT_POLARITY))
        self.objects_combo.setToolTip(HELP["objects"])
        self.suggest_scale_button = QPushButton("Suggest")
        self.suggest_scale_button.setToolTip(HELP["suggest"])
        self.auto_tiles_check = QCheckBox("Automatic")
        self.auto_tiles_check.setChecked(True)
        self.auto_tiles_check.setToolTip(HELP["tiles"])
        self.tile_spins = []
        for _ in AXES:
            spin = QSpinBox()
            spin.setRange(1, 64)
            spin.setEnabled(False)
            self.tile_spins.append(spin)
        _axis_tooltips(self.tile_spins, HELP["tiles"])
        _axis_tooltips(self.scale_spins, HELP["scale"])
        self.auto_tiles_check.toggled.connect(self._on_auto_tiles)
        self.device_combo = QComboBox()
        for value in DEVICES:
            self.device_combo.addItem(value.capitalize() if value == "auto" else value.upper(),
                                      value)
        self.device_combo.setToolTip(HELP["device"])
        self.refine_check = QCheckBox("Refine outlines to the image")
        self.refine_check.setChecked(DEFAULT_REFINE)
        self.refine_check.setToolTip(HELP["refine"])
        self.show_prob_check = QCheckBox("Show probability map")
        self.show_prob_check.setToolTip(HELP["show_prob"])

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(HELP["run"])
        self.whole_button = QPushButton("Run on whole volume")
        self.whole_button.setToolTip(HELP["whole"])
        self.whole_button.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(HELP["cancel"])
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._layout()

    def _on_auto_tiles(self, auto: bool) -> None:
        for spin in self.tile_spins:
            spin.setEnabled(not auto)

    def normalization(self) -> Normalization:
        """The normalisation the boxes show."""
        return Normalization(self.norm_low.value(), self.norm_high.value(),
                             self.norm_clip_check.isChecked())

    def set_normalization(self, norm: Normalization) -> None:
        self.norm_low.setValue(norm.low)
        self.norm_high.setValue(norm.high)
        self.norm_clip_check.setChecked(norm.clip)

    def scale_mode(self) -> str:
        """"auto", "voxel_size" or "manual" (see :data:`SCALE_MODES`)."""
        return self.scale_mode_combo.currentData()

    def polarity(self) -> str:
        """"auto", "bright" or "dark" (see :data:`POLARITY_CHOICES`)."""
        return self.objects_combo.currentData()

    def set_scale_mode(self, mode: str) -> None:
        self.scale_mode_combo.setCurrentIndex(self.scale_mode_combo.findData(mode))

    def scale(self) -> tuple[float, float, float]:
        """The scale the boxes show."""
        return tuple(spin.value() for spin in self.scale_spins)

    def set_scale(self, scale: tuple[float, ...]) -> None:
        for spin, value in zip(self.scale_spins, scale, strict=True):
            spin.setValue(value)

    def _on_scale_mode(self, *_: object) -> None:
        for spin in self.scale_spins:
            spin.setEnabled(self.scale_mode() == "manual")

    @staticmethod
    def _double_spin(
        low: float, high: float, value: float, step: float, decimals: int, tooltip: str
    ) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(decimals)
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setValue(value)
        spin.setToolTip(tooltip)
        return spin

    def _layout(self) -> None:
        inputs = QGroupBox("Input")
        form = _form(inputs)
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_chooser)

        thresholds = QGroupBox("Thresholds (live)")
        form = _form(thresholds)
        form.addRow("Probability", self.prob_slider)
        form.addRow("NMS", self.nms_slider)

        prediction = QGroupBox("Prediction")
        form = _form(prediction)
        self.norm_low.setPrefix("low ")
        self.norm_high.setPrefix("high ")
        norm = _spin_row([self.norm_low, self.norm_high])
        norm.layout().addWidget(self.norm_clip_check)
        form.addRow("Objects", self.objects_combo)
        form.addRow("Percentiles", norm)
        form.addRow("Scale mode", self.scale_mode_combo)
        form.addRow("Scale (Z, Y, X)", _spin_row(self.scale_spins))
        form.addRow("", self.suggest_scale_button)
        form.addRow("Tiles", self.auto_tiles_check)
        form.addRow("", _spin_row(self.tile_spins))
        form.addRow("Device", self.device_combo)
        form.addRow(self.refine_check)
        form.addRow(self.show_prob_check)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.whole_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        for box in (inputs, thresholds, prediction):
            layout.addWidget(box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
