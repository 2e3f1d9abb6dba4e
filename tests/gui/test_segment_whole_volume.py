"""Issue 15 item 4: "Run on whole volume" in the Segment widget segments a lazy layer block by
block into a zarr store and shows it as a lazily read Labels layer; Cancel stops between
blocks and keeps what was written."""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from conftest import drain
from napari_anystar._paths import user_cache_dir
from napari_anystar._widgets import _segment_whole
from napari_anystar._widgets._segment_input import plan_volume, visible_yx
from napari_anystar.model import blockwise

from .segment_helpers import SHAPE, TIMEOUT, _blobs

BLOCKS = (16, 24, 24)  # 2 x 2 x 2 blocks of the (32, 48, 48) blob image


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(_segment_whole, "BLOCK_SIZE", BLOCKS)


def _lazy(viewer, image, name="lazy"):
    return viewer.add_image(da.from_array(image, chunks=(8, 48, 48)), name=name,
                            scale=(2.0, 1.0, 1.0), translate=(5.0, -3.0, 0.0))


def test_button_only_for_lazy_layers(viewer_widget):
    viewer, widget = viewer_widget
    button = widget.whole_button
    viewer.add_image(_blobs(), name="small")
    assert widget.selected_layer().name == "small"
    assert button.isHidden() and not button.isEnabled()
    _lazy(viewer, _blobs())
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("lazy"))
    assert not button.isHidden() and button.isEnabled()
    assert "whole volume" in button.toolTip()
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("small"))
    assert button.isHidden() and not button.isEnabled()


def test_whole_volume_labels_are_the_block_wise_store(qtbot, viewer_widget, entry, errors,
                                                      small_blocks, tmp_path):
    viewer, widget = viewer_widget
    image = _blobs()
    user = viewer.add_labels(np.zeros(SHAPE, np.int32), name="lazy labels (whole volume)")
    layer = _lazy(viewer, image)
    lazy_data = layer.data
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("lazy"))
    camera = viewer.scene.camera
    camera.zoom = max(viewer.canvas.size) / 20  # about 20 x 20 voxels in view
    camera.center = (0.0, 10.0, 10.0)
    region = plan_volume(layer, viewer.dims.point, view=visible_yx(viewer, layer)).region
    assert region is not None and region.shape[1] < SHAPE[1] and region.shape[2] < SHAPE[2]

    widget.refine_check.setChecked(True)  # the whole volume is refined as the box is
    section = widget.whole_section
    progress, added = [], []
    section.progressed.connect(lambda done, total: progress.append((done, total)))
    section.layer_added.connect(added.append)
    with qtbot.waitSignal(section.finished, timeout=4 * TIMEOUT) as blocker:
        widget.whole_button.click()
        assert not widget.whole_button.isEnabled() and widget.cancel_button.isEnabled()
    labels = blocker.args[0]
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)

    assert progress[0] == (0, 8) and progress[-1] == (8, 8)
    assert added == [labels]
    assert labels.name == "lazy labels (whole volume) [2]"
    assert isinstance(labels.data, da.Array)
    assert tuple(labels.scale) == (2.0, 1.0, 1.0) and tuple(labels.translate) == (5.0, -3.0, 0.0)
    store = Path(labels.metadata["store"])
    assert store.parent == user_cache_dir() / _segment_whole.STORE_FOLDER
    assert widget.progress_bar.value() == 8 and widget.progress_bar.maximum() == 8

    ref = tmp_path / "reference.zarr"
    _, result = drain(blockwise.segment_blocks(entry, image, ref, widget.predict_settings(),
                                               widget.thresholds(), BLOCKS, refine=True))
    expected = zarr.open_array(str(ref), mode="r")[:]
    shown = np.asarray(labels.data)
    assert result.n_blocks == 8 and result.n_objects > 0
    np.testing.assert_array_equal(shown, expected)
    assert zarr.open_array(str(store), mode="r").attrs["anystar"]["refined"] is True
    assert widget.status_label.text() == (
        f"{result.n_objects} objects in the whole volume (8 blocks), saved in {store}.")
    outside = shown.copy()
    outside[region.slices] = 0
    assert outside.max() > 0  # labels beyond the region Run would segment

    assert layer.data is lazy_data
    np.testing.assert_array_equal(np.asarray(layer.data), image)
    assert not user.data.any() and user.name == "lazy labels (whole volume)"
    assert widget.run_button.isEnabled() and widget.whole_button.isEnabled()
    assert errors == []


def test_unticked_refinement_gives_stardist_outlines(qtbot, viewer_widget, entry, errors,
                                                     small_blocks, tmp_path):
    viewer, widget = viewer_widget
    image = _blobs()
    _lazy(viewer, image)
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("lazy"))
    widget.refine_check.setChecked(False)
    with qtbot.waitSignal(widget.whole_section.finished, timeout=4 * TIMEOUT) as blocker:
        widget.whole_button.click()
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)
    store = Path(blocker.args[0].metadata["store"])
    assert zarr.open_array(str(store), mode="r").attrs["anystar"]["refined"] is False
    ref = tmp_path / "plain.zarr"
    drain(blockwise.segment_blocks(entry, image, ref, widget.predict_settings(),
                                   widget.thresholds(), BLOCKS, refine=False))
    np.testing.assert_array_equal(np.asarray(blocker.args[0].data),
                                  zarr.open_array(str(ref), mode="r")[:])
    assert errors == []

def test_cancel_stops_between_blocks_and_keeps_the_layer(qtbot, viewer_widget, errors,
                                                         small_blocks, monkeypatch):
    viewer, widget = viewer_widget
    gate, waiting, calls = threading.Event(), threading.Event(), []
    real = blockwise.predict_block

    def held(*args):
        calls.append(args[-1])
        if args[-1] >= 1:  # block 0 at once, block 1 waits for the test
            waiting.set()
            assert gate.wait(TIMEOUT / 1000)
        return real(*args)

    monkeypatch.setattr(blockwise, "predict_block", held)
    _lazy(viewer, _blobs())
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("lazy"))
    section = widget.whole_section
    finished = []
    section.finished.connect(finished.append)
    try:
        with qtbot.waitSignal(section.layer_added, timeout=4 * TIMEOUT) as blocker:
            widget.whole_button.click()
        labels = blocker.args[0]
        qtbot.waitUntil(waiting.is_set, timeout=TIMEOUT)
        assert widget.status_label.text() == "Whole volume: 1 / 8 blocks"
        with qtbot.waitSignal(section.cancelled, timeout=TIMEOUT):
            widget.cancel_button.click()
            gate.set()
    finally:
        gate.set()
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)
    assert widget.status_label.text() == "Cancelled."
    assert calls == [0, 1]  # stopped between blocks
    assert finished == [] and errors == []
    assert labels in viewer.layers and isinstance(labels.data, da.Array)
    assert labels.data.shape == SHAPE
    assert widget.run_button.isEnabled() and widget.whole_button.isEnabled()


def test_a_failing_read_gives_one_line_and_no_layer(qtbot, viewer_widget, monkeypatch):
    viewer, widget = viewer_widget
    shown: list[str] = []
    monkeypatch.setattr(_segment_whole, "show_error", shown.append)

    broken_now = threading.Event()  # set once napari has read the layer for its display

    def broken(chunk):
        if broken_now.is_set():
            raise MemoryError("Unable to allocate 4.00 GiB for an array")
        return chunk

    image = _blobs()
    viewer.add_image(da.from_array(image, chunks=(8, 48, 48)).map_blocks(
        broken, meta=image[:0, :0, :0]), name="broken")
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("broken"))
    layers = list(viewer.layers)
    broken_now.set()
    with qtbot.waitSignal(widget.whole_section.failed, timeout=TIMEOUT) as blocker:
        widget.whole_button.click()
    message = blocker.args[0]
    assert message == ("Whole-volume segmentation failed: MemoryError: Unable to allocate "
                       "4.00 GiB for an array")
    assert shown == [message] and widget.status_label.text() == message
    assert list(viewer.layers) == layers
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)
    assert widget.whole_button.isEnabled() and not widget.cancel_button.isEnabled()
