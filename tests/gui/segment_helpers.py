"""Plain helpers shared by the Segment widget tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import numpy as np

from conftest import drain
from napari_anystar._widgets.segment import SegmentWidget
from napari_anystar.model import registry
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.predict import predict_network

TIMEOUT = 60_000  # ms; generous for a loaded 2-core CI machine
SHAPE = (32, 48, 48)


def _blobs(seed: int = 0, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    image = rng.normal(0.0, 0.05, shape)
    for centre in rng.uniform((6, 8, 8), np.subtract(shape, (6, 8, 8)), (12, 3)):
        image += np.exp(-((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) / 18)
    return image.astype(np.float32)


def _docked(make_napari_viewer, *, refine: bool = False):
    """A docked Segment widget; ``refine`` False (StarDist-exact labels, which most tests
    compare with; outline refinement has its own tests)."""
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.refine_check.setChecked(refine)
    viewer.window.add_dock_widget(widget, name="Segment")
    return viewer, widget


def _run(qtbot, widget):
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.run()
    return blocker.args[0]


def _set_and_wait(qtbot, widget, slider, value):
    """Move a slider and wait for the labels of exactly these thresholds to be shown."""
    slider.setValue(value)
    wanted = widget.thresholds()

    def shown():
        layer = _our_labels(widget.viewer)
        assert (layer.metadata["prob_thresh"], layer.metadata["nms_thresh"]) == wanted

    qtbot.waitUntil(shown, timeout=TIMEOUT)
    return wanted


def _our_labels(viewer):
    found = [
        layer
        for layer in viewer.layers
        if layer._type_string == "labels" and "napari_anystar" in layer.metadata
    ]
    assert len(found) == 1
    return found[0]


def _labels_layers(viewer):
    return [layer for layer in viewer.layers if layer._type_string == "labels"]


def _reference(entry, image, settings):
    model = registry.load_model(entry)
    return InstanceSolver(drain(predict_network(model, image, settings))[1], model)
