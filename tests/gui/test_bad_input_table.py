"""Issue 13's bad-input table for the Segment widget: one row per input, in a real viewer.

Every row also checks that the user's image is unchanged and that a user Labels layer with
the name the widget would use ("<image> labels") is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

from napari_anystar._widgets._segment_output import SEGMENTED_FRAMES
from napari_anystar.model.input_budget import BUDGET_ENV, format_bytes

from .segment_helpers import SHAPE, TIMEOUT, _blobs, _reference, _run, _set_and_wait


def _ours(viewer) -> list:
    return [layer for layer in viewer.layers
            if layer._type_string == "labels" and "napari_anystar" in layer.metadata]


def _recorded(image: np.ndarray, reads: list, broken: dict | None = None) -> da.Array:
    """``image`` as a dask array of Z planes that records (main thread?, z) per plane read
    (with the synchronous scheduler, reads run in the thread that computes), or raises
    MemoryError once ``broken["now"]`` is set."""
    def plane(chunk: np.ndarray, block_info: Any = None) -> np.ndarray:
        if broken and broken["now"]:
            raise MemoryError("Unable to allocate 4.00 GiB for an array")
        if block_info:
            z = block_info[0]["array-location"][0][0]
            reads.append((threading.current_thread() is threading.main_thread(), z))
        return chunk

    chunks = (1, *image.shape[1:])
    return da.from_array(image, chunks=chunks).map_blocks(plane, meta=image[:0, :0, :0])


# ---------------------------------------------------------------------------- rows
def _lazy(qtbot, viewer, widget, entry, errors, monkeypatch, track) -> None:
    image, reads = _blobs(), []
    track(viewer.add_image(_recorded(image, reads), name="lazy"))
    before = len(reads)
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.run()
    # run() itself reads nothing: every read is in the worker, none on the GUI thread
    assert not any(main for main, _ in reads[before:])
    assert sorted(z for _, z in reads[before:]) == list(range(SHAPE[0]))  # once, in the worker
    labels = blocker.args[0]
    assert widget.status_label.text().startswith(
        "'lazy' is a lazy 295 kB layer: reading it in the background. ")
    reference = _reference(entry, image, widget.predict_settings())
    np.testing.assert_array_equal(labels.data, reference.labels(*widget.thresholds()))
    assert labels.name == "lazy labels (AnyStar)" and labels.metadata["region"] is None
    assert errors == []


def _over_budget(qtbot, viewer, widget, entry, errors, monkeypatch, track) -> None:
    image = _blobs()
    layer = track(viewer.add_image(image, name="big", scale=(2.0, 1.0, 1.0),
                                   translate=(5.0, -3.0, 0.0)))
    viewer.dims.set_point(0, 5.0 + 2.0 * 20)  # the displayed slice: z = 20
    camera = viewer.scene.camera
    height, width = viewer.canvas.size
    camera.zoom = max(height, width) / 24  # at most 24 x 24 voxels in view ...
    camera.center = (0.0, 20.0, 30.0)  # ... around world y = 20 (voxel 23), x = 30
    half_y, half_x = height / 2 / camera.zoom, width / 2 / camera.zoom
    y0, y1 = int(np.floor(23 - half_y)), int(np.ceil(23 + half_y))
    x0, x1 = int(np.floor(30 - half_x)), int(np.ceil(30 + half_x))
    assert 16 <= y1 - y0 <= 24 and 16 <= x1 - x0 <= 24
    budget = 20 * (y1 - y0) * (x1 - x0) * 4  # 20 of the 32 slices of the view fit
    monkeypatch.setenv(BUDGET_ENV, str(budget / 1e9))

    labels = _run(qtbot, widget)

    where = f"z 10-29, y {y0}-{y1 - 1}, x {x0}-{x1 - 1}"
    assert widget.status_label.text().startswith(
        f"'big' is 295 kB, over the memory budget ({format_bytes(budget)}): segmenting the "
        f"region in view, {where} ({format_bytes(budget)}); zoom out or raise {BUDGET_ENV} "
        "for a larger one. ")
    assert labels.name == f"big labels [{where}]"
    assert labels.metadata["region"] == ((10, 30), (y0, y1), (x0, x1))
    region = image[10:30, y0:y1, x0:x1]
    reference = _reference(entry, region, widget.predict_settings())
    np.testing.assert_array_equal(labels.data, reference.labels(*widget.thresholds()))
    assert labels.data.max() > 0
    for corner in [(0, 0, 0), np.subtract(region.shape, 1)]:  # the labels lie on the region
        np.testing.assert_allclose(labels.data_to_world(corner),
                                   layer.data_to_world(np.add(corner, (10, y0, x0))))
    np.testing.assert_allclose(labels.scale, (2.0, 1.0, 1.0))
    assert errors == []


def _two_frames(qtbot, viewer, widget, entry, errors, monkeypatch, track) -> None:
    series = np.stack([_blobs(seed=s) for s in range(3)])
    track(viewer.add_image(series, name="movie", scale=(1.0, 2.0, 1.0, 1.0)))
    settings = widget.predict_settings()
    references = {t: _reference(entry, series[t], settings) for t in (0, 2)}

    viewer.dims.set_current_step(0, 2)
    widget.show_prob_check.setChecked(True)
    labels = _run(qtbot, widget)
    probability = viewer.layers["movie probability"]  # the run's frame only, placed at it
    assert probability.data.shape[0] == 1 and probability.translate[0] == 2.0
    assert widget.status_label.text().startswith(
        "'movie' is 4D: segmenting the displayed 3D volume (frame 2). ")
    assert labels.data.shape == (3, *SHAPE) and labels.data.dtype == np.int32
    np.testing.assert_allclose(labels.scale, (1.0, 2.0, 1.0, 1.0))
    thresholds = widget.thresholds()
    np.testing.assert_array_equal(labels.data[2], references[2].labels(*thresholds))
    assert not labels.data[:2].any()  # no labels on the frames not segmented
    frame2 = labels.data[2].copy()

    viewer.dims.set_current_step(0, 0)
    assert _run(qtbot, widget) is labels  # the same 4D layer ...
    assert probability.translate[0] == 0.0
    np.testing.assert_array_equal(labels.data[0], references[0].labels(*thresholds))
    np.testing.assert_array_equal(labels.data[2], frame2)  # ... keeps frame 2's labels
    assert not labels.data[1].any()

    prob, nms = _set_and_wait(qtbot, widget, widget.prob_slider, 0.7)  # acts on frame 0 only
    np.testing.assert_array_equal(labels.data[0], references[0].labels(prob, nms))
    np.testing.assert_array_equal(labels.data[2], frame2)
    assert not labels.data[1].any()
    assert labels.metadata[SEGMENTED_FRAMES][(2,)]["prob_thresh"] == thresholds[0]
    assert labels.metadata[SEGMENTED_FRAMES][(0,)]["prob_thresh"] == prob
    viewer.dims.set_current_step(0, 1)  # the displayed slice of frame 1 shows no labels
    assert not np.asarray(labels._slice.image.raw).any()
    assert errors == []


def _frames_over_budget(qtbot, viewer, widget, entry, errors, monkeypatch, track) -> None:
    series = np.stack([_blobs(seed=s) for s in range(3)])  # 295 kB per frame
    track(viewer.add_image(series, name="film"))
    monkeypatch.setenv(BUDGET_ENV, "0.0003")  # one frame fits, labels of all frames do not
    viewer.dims.set_current_step(0, 1)
    labels = _run(qtbot, widget)
    assert widget.status_label.text().startswith(
        "'film' is 4D: segmenting the displayed 3D volume (frame 1). Labels are kept for this "
        "frame only: a labels layer of all frames needs 885 kB, over the memory budget "
        "(300 kB). ")
    assert labels.name == "film labels [frame 1]" and labels.data.shape == (1, *SHAPE)
    np.testing.assert_allclose(labels.translate, (1.0, 0.0, 0.0, 0.0))  # at frame 1
    reference = _reference(entry, series[1], widget.predict_settings())
    np.testing.assert_array_equal(labels.data[0], reference.labels(*widget.thresholds()))
    z = viewer.dims.current_step[1]
    np.testing.assert_array_equal(np.asarray(labels._slice.image.raw), labels.data[0, z])
    viewer.dims.set_current_step(0, 0)  # not shown on another frame
    assert not np.asarray(labels._slice.image.raw).any()
    assert errors == []


def _read_error(qtbot, viewer, widget, entry, errors, monkeypatch, track) -> None:
    broken = {"now": False}
    track(viewer.add_image(_recorded(_blobs(), [], broken), name="broken"))
    broken["now"] = True  # displayed fine; reading it for the network fails
    message = (f"Could not read 'broken': MemoryError: Unable to allocate 4.00 GiB for an "
               f"array. Zoom in or lower {BUDGET_ENV} to read less.")
    with qtbot.waitSignal(widget.run_failed, timeout=TIMEOUT) as blocker:
        widget.run()
    assert blocker.args == [message] and errors == [message]
    assert widget.status_label.text() == message
    assert _ours(viewer) == []
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=TIMEOUT)


@dataclass(frozen=True)
class Row:
    """An input from the issue's table and what the widget must do with it."""

    act: Callable[..., None]  # adds the image layer (passing it to ``track``), runs, checks
    name: str  # the image layer's name


ROWS = {
    "lazy dask layer: read in the worker, never on the GUI thread": Row(_lazy, "lazy"),
    "layer over the memory budget: the region in view": Row(_over_budget, "big"),
    "4D layer, two frames: one 4D labels layer, each frame its own": Row(_two_frames, "movie"),
    "4D layer whose labels exceed the budget: the frame's labels only": Row(
        _frames_over_budget, "film"),
    "read error of a lazy layer: one line, no layer": Row(_read_error, "broken"),
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_bad_input_row(row, qtbot, viewer_widget, entry, errors, monkeypatch):
    viewer, widget = viewer_widget
    mine = np.zeros(SHAPE, np.int32)
    mine[:4, :4, :4] = 7
    user_labels = viewer.add_labels(mine.copy(), name=f"{row.name} labels")
    added = {}

    def track(layer: Any) -> Any:  # the user's image as added (dask arrays are immutable)
        data = layer.data
        added.update(layer=layer, data=data,
                     copy=data.copy() if isinstance(data, np.ndarray) else None)
        return layer

    with dask.config.set(scheduler="synchronous"):
        row.act(qtbot, viewer, widget, entry, errors, monkeypatch, track)
    layer = added["layer"]
    assert layer in viewer.layers and layer.name == row.name  # the user's image is untouched
    assert layer.data is added["data"] and "napari_anystar" not in layer.metadata
    if added["copy"] is not None:
        np.testing.assert_array_equal(layer.data, added["copy"])
    assert user_labels.name == f"{row.name} labels"  # ... and so is their labels layer
    np.testing.assert_array_equal(user_labels.data, mine)
    assert "napari_anystar" not in user_labels.metadata
    assert user_labels not in _ours(viewer)
