"""Cancel while the Segment widget reads a lazy layer (issue 13): the read stops after the Z
slab being read, the run ends "Cancelled.", and no labels layer is added or changed."""

from __future__ import annotations

import threading
from typing import Any

import dask.array as da
import numpy as np
import pytest

from napari_anystar.model import input_budget

from .segment_helpers import SHAPE, TIMEOUT, _blobs, _labels_layers, _run


class SlowPlanes:
    """A dask array of Z planes whose planes from ``held_from`` on wait for ``gate`` (set by
    the test); records every plane read."""

    def __init__(self, image: np.ndarray) -> None:
        self.gate, self.waiting = threading.Event(), threading.Event()
        self.held_from = image.shape[0]  # nothing held until a test says so
        self.reads: list[int] = []

        def plane(chunk: np.ndarray, block_info: Any = None) -> np.ndarray:
            if block_info:
                z = block_info[0]["array-location"][0][0]
                self.reads.append(z)
                if z >= self.held_from:
                    self.waiting.set()
                    assert self.gate.wait(TIMEOUT / 1000)
            return chunk

        self.array = da.from_array(image, chunks=(1, *image.shape[1:])).map_blocks(
            plane, meta=image[:0, :0, :0])


@pytest.fixture
def slow_planes(monkeypatch):
    """``SlowPlanes`` of the blob image, read one plane per slab; never left waiting."""
    monkeypatch.setattr(input_budget, "READ_PART_BYTES", 1)  # every plane is a slab
    planes = SlowPlanes(_blobs())
    yield planes
    planes.gate.set()


@pytest.mark.parametrize("earlier_run", [False, True], ids=["first run", "after a run"])
def test_cancel_during_the_read_stops_it_and_changes_no_layer(qtbot, viewer_widget, errors,
                                                              slow_planes, earlier_run):
    viewer, widget = viewer_widget
    image = viewer.add_image(slow_planes.array, name="lazy")
    previous = _run(qtbot, widget) if earlier_run else None
    kept = previous.data.copy() if previous is not None else None
    kept_metadata = dict(previous.metadata) if previous is not None else None
    layers_before = list(viewer.layers)

    slow_planes.reads.clear()
    slow_planes.held_from = 1  # plane 0 is read at once, plane 1 waits for the gate
    finished: list[Any] = []
    widget.run_finished.connect(finished.append)
    widget.run()
    qtbot.waitUntil(lambda: slow_planes.waiting.is_set()
                    and widget.status_label.text() == f"Reading: 1 / {SHAPE[0]} slabs",
                    timeout=TIMEOUT)
    assert widget.progress_bar.value() == 1 and widget.progress_bar.maximum() == SHAPE[0]
    assert widget.cancel_button.isEnabled()

    with qtbot.waitSignal(widget.run_cancelled, timeout=TIMEOUT):
        widget.cancel_button.click()
        assert widget.status_label.text() == "Cancelling after the current step..."
        slow_planes.gate.set()  # the slab being read ends; no further slab is read
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)

    assert sorted(slow_planes.reads) == [0, 1]
    assert widget.status_label.text() == "Cancelled."
    assert widget.progress_bar.value() == 0
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert finished == [] and errors == []
    assert list(viewer.layers) == layers_before  # no layer added or removed
    assert image.data is slow_planes.array
    if previous is None:
        assert _labels_layers(viewer) == []
    else:
        assert _labels_layers(viewer) == [previous]
        np.testing.assert_array_equal(previous.data, kept)
        assert previous.metadata == kept_metadata
