"""Segment dock widget in a real viewer: run, live threshold sliders, cache, cancel/close.

Scale, normalisation, refused input and the model list are in
``test_segment_widget_settings.py``; fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import threading

import numpy as np

import napari_anystar
from napari_anystar._widgets import segment as segment_module
from napari_anystar._widgets._segment_output import OBJECT_PROBABILITY
from napari_anystar.model import registry, segmenter
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.object_size import SizeEstimate
from napari_anystar.model.predict import EDGE_BAND, predict_network
from napari_anystar.normalization import LEGACY, Normalization

from .segment_helpers import (
    SHAPE,
    TIMEOUT,
    _blobs,
    _labels_layers,
    _our_labels,
    _reference,
    _run,
    _set_and_wait,
)


# ------------------------------------------------------------------------------ preload
def test_opening_the_widget_loads_and_warms_the_selected_model(qtbot, make_napari_viewer,
                                                               entry, monkeypatch, errors):
    from collections import OrderedDict

    from napari_anystar._widgets import _segment_choosers
    from napari_anystar._widgets.segment import SegmentWidget
    from napari_anystar.model import segmenter

    warmed, compiled = [], []
    monkeypatch.setattr(_segment_choosers, "warm_labels_display", warmed.append)
    monkeypatch.setattr(segmenter, "warm_compiled", lambda: compiled.append(True))
    monkeypatch.setattr(registry, "_models", OrderedDict())  # nothing loaded yet
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    assert widget.selected_model() == entry
    assert widget.status_label.text() == f"Loading model '{entry.name}' in the background..."
    qtbot.waitUntil(lambda: widget.status_label.text() == f"Model '{entry.name}' ready.",
                    timeout=TIMEOUT)
    assert len(registry._models) == 1
    (model,) = registry._models.values()
    # StarDist's receptive-field probes, otherwise paid by the first tiled prediction
    assert hasattr(model, "_tile_overlap") and errors == []
    # napari's labels display for the dtype of the labels a Run shows, and the NMS's
    # compiled routines
    assert warmed == [np.int32] and compiled == [True]


def test_warming_the_labels_display_compiles_naparis_label_colouring():
    """In a fresh process, napari compiles its label colouring on the first labels layer of
    a dtype; ``warm_labels_display`` does that without a viewer (for a background worker)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from napari.utils.colormaps import _accelerated_cmap as acc\n"
        "from napari_anystar._widgets._layers import warm_labels_display\n"
        "loop = acc._zero_preserving_modulo_inner_loop\n"
        "def int32():\n"
        "    return sorted({s[0].ndim for s in loop.signatures if str(s[0].dtype) == 'int32'})\n"
        "before = int32()\n"
        "if sys.argv[1] == 'warm':\n"
        "    warm_labels_display(np.int32)\n"
        "print(before, int32())\n")
    out = {mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                text=True, timeout=300).stdout.strip().splitlines()[-1]
           for mode in ("cold", "warm")}
    assert out["cold"] == "[] []"
    assert out["warm"].startswith("[] [") and "2" in out["warm"].split("] [")[1]


# ------------------------------------------------------------------------------ run
def test_run_adds_labels_placed_over_image_with_metadata(qtbot, viewer_widget, entry):
    viewer, widget = viewer_widget
    image = _blobs()
    original = image.copy()
    viewer.add_image(image, name="blobs", scale=(2.0, 1.0, 1.0), translate=(5.0, -3.0, 0.0))
    widget.set_scale_mode("voxel_size")
    assert widget.scale() == (2.0, 1.0, 1.0)  # anisotropy
    assert not any(spin.isEnabled() for spin in widget.scale_spins)
    widget.set_scale_mode("manual")
    assert widget.scale() == (2.0, 1.0, 1.0) and all(s.isEnabled() for s in widget.scale_spins)
    widget.set_scale((1.0, 1.0, 1.0))  # keep the test small
    widget.show_prob_check.setChecked(True)

    layer = _run(qtbot, widget)

    assert layer is viewer.layers["blobs labels"]
    assert layer.data.shape == SHAPE
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    np.testing.assert_allclose(layer.translate, (5.0, -3.0, 0.0))
    meta = layer.metadata
    prob, nms = widget.thresholds()
    assert (meta["prob_thresh"], meta["nms_thresh"]) == (prob, nms) == (0.5, 0.4)  # thresholds.json
    assert meta["model"] == entry.name
    assert meta["model_sha256"] == registry.model_fingerprint(entry)
    assert meta["ray_scale"] == 1.0  # no anystar.json: StarDist's own ray lengths
    assert meta["plugin_version"] == napari_anystar.__version__
    assert meta["scale"] == (1.0, 1.0, 1.0) and meta["scale_mode"] == "manual"
    assert meta["normalization"] == LEGACY.to_json()  # the model records none
    assert meta["tiling"] == "auto" and len(meta["n_tiles"]) == 3
    assert meta["n_objects"] == len(np.unique(layer.data[layer.data > 0])) > 0
    expected = registry.load_model(entry).predict_instances(  # StarDist's own result
        image,
        prob_thresh=prob,
        nms_thresh=nms,
        n_tiles=meta["n_tiles"],
        normalizer=Normalization.from_json(meta["normalization"]).csbdeep(),
        show_tile_progress=False,
        predict_kwargs={"b": EDGE_BAND},  # the same edge rule
    )[0]
    np.testing.assert_array_equal(layer.data, expected)
    np.testing.assert_array_equal(viewer.layers["blobs"].data, original)  # input untouched

    prob_layer = viewer.layers["blobs probability"]
    grid = np.asarray(registry.load_model(entry).config.grid)
    np.testing.assert_allclose(prob_layer.scale, np.array([2.0, 1.0, 1.0]) * grid)
    np.testing.assert_allclose(prob_layer.translate, (5.0, -3.0, 0.0))
    assert prob_layer.data.shape == tuple(np.ceil(np.divide(SHAPE, grid)).astype(int))
    assert widget.progress_bar.value() == widget.progress_bar.maximum() > 0
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["blobs"]
    object_prob = meta[OBJECT_PROBABILITY]  # the network's probability of every object
    assert len(object_prob) == layer.data.max() + 1 and np.all(object_prob[1:] > prob)

    widget.show_prob_check.setChecked(False)  # unticked: the map no longer covers the labels
    assert "blobs probability" not in viewer.layers and "blobs labels" in viewer.layers
    widget.show_prob_check.setChecked(True)
    assert viewer.layers["blobs probability"].data.shape == prob_layer.data.shape


def test_threshold_sliders_update_the_same_layer(qtbot, viewer_widget, entry):
    viewer, widget = viewer_widget
    image = _blobs()  # the image the model was sharpened on
    viewer.add_image(image, name="blobs")
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.run()
        widget.prob_slider.setValue(0.7)  # moved while the network runs
    layer = blocker.args[0]
    assert layer.metadata["prob_thresh"] == 0.5  # the run uses the thresholds it started with
    qtbot.waitUntil(lambda: layer.metadata["prob_thresh"] == 0.7, timeout=TIMEOUT)  # then these
    reference = _reference(entry, image, widget.predict_settings())
    np.testing.assert_array_equal(layer.data, reference.labels(0.7, 0.4))

    counts = []
    for value in (0.8, 0.6, 0.4):  # lower probability threshold -> never fewer objects
        prob, nms = _set_and_wait(qtbot, widget, widget.prob_slider, value)
        assert _our_labels(viewer) is layer
        np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))
        assert layer.metadata["n_objects"] == len(np.unique(layer.data[layer.data > 0]))
        counts.append(layer.metadata["n_objects"])
    assert counts == sorted(counts) and counts[-1] > counts[0]

    prob, nms = _set_and_wait(qtbot, widget, widget.nms_slider, 0.05)
    assert _our_labels(viewer) is layer
    np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))
    assert layer.metadata["n_objects"] < counts[-1]  # stricter NMS keeps fewer objects

    for value in (0.9, 0.7, 0.3, 0.2):  # a burst: only the latest request is shown
        widget.nms_slider.setValue(value)
    prob, nms = _set_and_wait(qtbot, widget, widget.nms_slider, 0.5)
    qtbot.waitUntil(lambda: not widget.labels_pending(), timeout=TIMEOUT)
    np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))
    assert len(_labels_layers(viewer)) == 1


def test_warmup_after_run_prepares_lower_thresholds(qtbot, viewer_widget, entry):
    viewer, widget = viewer_widget
    image = _blobs()
    viewer.add_image(image, name="blobs")
    with qtbot.waitSignal(widget.warmup_finished, timeout=TIMEOUT) as warm:
        layer = _run(qtbot, widget)
        assert widget._life.warmup is not None  # started after the first labels
    assert warm.args == [True] and widget._life.warmup is None
    values = widget._run.result.solver._nms.values
    done = (values.n_volumes, values.n_oracle)
    assert sum(done) > 0  # the warm-up did the NMS pair work ...
    prob, nms = _set_and_wait(qtbot, widget, widget.prob_slider, 0.3)
    assert (values.n_volumes, values.n_oracle) == done  # ... so the slider had none left
    reference = _reference(entry, image, widget.predict_settings())
    np.testing.assert_array_equal(layer.data, reference.labels(prob, nms))
    np.testing.assert_array_equal(layer.data, reference.reference_labels(prob, nms))
    assert layer.metadata["n_objects"] > 0


def test_new_run_stops_the_running_warmup(qtbot, viewer_widget, monkeypatch):
    viewer, widget = viewer_widget
    release, calls, ended = threading.Event(), [], []
    real_warm = InstanceSolver.warm

    def blocking_warm(self, prob, nms, interrupt=None):
        calls.append(round(prob, 2))
        assert release.wait(10)
        return real_warm(self, prob, nms, interrupt)

    monkeypatch.setattr(InstanceSolver, "warm", blocking_warm)
    viewer.add_image(_blobs(), name="blobs")
    _run(qtbot, widget)
    widget.warmup_finished.connect(ended.append)
    qtbot.waitUntil(lambda: calls == [0.49], timeout=TIMEOUT)  # first chunk, holding the lock
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT):
        widget.run()  # cached network; its solve waits for the chunk
        assert widget._life.warmup is None
        release.set()
    qtbot.waitUntil(lambda: len(ended) == 2, timeout=TIMEOUT)
    assert ended == [False, True]  # the old warm-up stopped, the new one ran to its end
    assert calls[:2] == [0.49, 0.49] and len(set(calls)) == len(calls) - 1  # old: one chunk
    assert widget._life.warmup is None


def test_second_run_reuses_network_output(qtbot, viewer_widget, monkeypatch):
    viewer, widget = viewer_widget
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return predict_network(*args, **kwargs)

    monkeypatch.setattr(segmenter, "predict_network", counting)
    viewer.add_image(_blobs(), name="blobs")
    first = _run(qtbot, widget)
    first_data = first.data.copy()
    second = _run(qtbot, widget)
    assert len(calls) == 1
    assert second is first and len(_labels_layers(viewer)) == 1
    np.testing.assert_array_equal(second.data, first_data)
    assert "cached" in widget.status_label.text()

    widget.norm_high.setValue(99.0)  # other normalisation -> other network output
    _run(qtbot, widget)
    assert len(calls) == 2


def test_user_layer_with_our_name_is_left_alone(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    mine = np.zeros(SHAPE, dtype=np.int32)
    mine[:4, :4, :4] = 7
    user_layer = viewer.add_labels(mine.copy(), name="blobs labels")
    widget.auto_tiles_check.setChecked(False)
    for spin, tiles in zip(widget.tile_spins, (1, 2, 2), strict=True):
        spin.setValue(tiles)
    progress = []
    widget.run_progress.connect(lambda done, total: progress.append((done, total)))
    layer = _run(qtbot, widget)
    assert layer.metadata["tiling"] == "manual" and layer.metadata["n_tiles"] == (1, 2, 2)
    total = progress[0][1]
    assert progress == [(done, total) for done in range(total + 1)]  # per-tile progress
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == total
    assert layer is not user_layer and layer.name != "blobs labels"
    np.testing.assert_array_equal(user_layer.data, mine)
    assert "napari_anystar" not in user_layer.metadata


def test_time_series_uses_displayed_volume(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    series = np.stack([_blobs(seed=s) for s in range(3)])
    viewer.add_image(series, name="movie", scale=(1.0, 2.0, 1.0, 1.0))
    viewer.dims.set_current_step(0, 2)
    for spin in widget.scale_spins:
        spin.setValue(1.0)
    layer = _run(qtbot, widget)
    assert layer.data.shape == (3, *SHAPE)  # one 4D layer: labels only at the segmented frame
    assert layer.metadata["frame"] == (2,)
    np.testing.assert_allclose(layer.scale, (1.0, 2.0, 1.0, 1.0))
    assert layer.data[2].any() and not layer.data[:2].any()
    assert "displayed" in widget.status_label.text()
    np.testing.assert_array_equal(viewer.layers["movie"].data, series)


# ---------------------------------------------------------------------- cancel/close
def test_cancel_stops_at_tile_boundary_without_layer(qtbot, viewer_widget, blocking_network):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")

    def cancel_on_first_tile(done, total):
        if done == 0:
            widget.cancel()
            blocking_network["release"].set()

    widget.run_progress.connect(cancel_on_first_tile)
    with qtbot.waitSignal(widget.run_cancelled, timeout=TIMEOUT):
        widget.run()
    qtbot.waitUntil(blocking_network["closed"].is_set, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget._life.worker is None, timeout=TIMEOUT)
    assert blocking_network["tiles"] == 1
    assert widget.status_label.text() == "Cancelled."
    assert _labels_layers(viewer) == []
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_closing_viewer_mid_run_stops_cleanly(qtbot, viewer_widget, blocking_network):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    with qtbot.waitSignal(widget.run_progress, timeout=TIMEOUT):
        widget.run()
    viewer.close()
    blocking_network["release"].set()
    qtbot.waitUntil(blocking_network["closed"].is_set, timeout=TIMEOUT)
    assert blocking_network["tiles"] == 1


def test_cancel_after_the_last_tile_drops_the_result(qtbot, viewer_widget, monkeypatch):
    """Cancel while the labels of a one-tile run are being solved: "Cancelled.", no layer."""
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    solving, release = threading.Event(), threading.Event()
    original = segmenter.solve

    def slow_solve(*args):
        solving.set()
        assert release.wait(30)
        return original(*args)

    monkeypatch.setattr(segmenter, "solve", slow_solve)
    widget.run()
    qtbot.waitUntil(solving.is_set, timeout=TIMEOUT)
    with qtbot.waitSignal(widget.run_cancelled, timeout=TIMEOUT):
        widget.cancel()
        release.set()
    assert widget.status_label.text() == "Cancelled."
    assert _labels_layers(viewer) == []
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_suggest_after_a_run_resolves_the_labels_at_the_new_scale(qtbot, viewer_widget,
                                                                   monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(_blobs(), name="blobs")
    first = _run(qtbot, widget)
    suggested = SizeEstimate((1.5, 1.25, 1.25), (8.0, 9.6, 9.6), 12)

    def fake_scale_job(entry, image, settings, prob_thresh, cache):
        yield "size", 0, 1
        return suggested

    monkeypatch.setattr(segment_module, "scale_job", fake_scale_job)
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT) as blocker:
        widget.suggest_scale()
    layer = blocker.args[0]
    assert layer is first  # the same layer, updated in place
    assert tuple(layer.metadata["scale"]) == suggested.scale == widget.scale()
