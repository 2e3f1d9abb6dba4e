"""Fixtures for the Segment widget tests: sharpened tiny models, a docked widget, spies."""

from __future__ import annotations

import shutil
import threading

import pytest

from conftest import drain, sharpen_tiny_model
from napari_anystar._widgets import segment as segment_module
from napari_anystar.model import registry, segmenter
from napari_anystar.model.predict import PredictSettings, predict_network

from .segment_helpers import _blobs, _docked


@pytest.fixture(scope="module")
def seg_model_dir(tiny_model_dir, tmp_path_factory):
    """``tiny_model_dir`` with sharpened output layers, so thresholds matter and NMS is fast.

    Random weights give probabilities of ~0.5 everywhere (thousands of candidates). Here the
    probability logits are stretched so that ~3% of the blob image's candidate voxels pass 0.5
    and the ray distances are ~3 voxels, so neighbouring candidates overlap and NMS has work
    to do.
    """
    from napari_anystar._tf import stardist_models

    StarDist3D = stardist_models().StarDist3D
    folder = tmp_path_factory.mktemp("segment-model") / "tiny-sharp"
    shutil.copytree(tiny_model_dir, folder)
    model = StarDist3D(None, name=folder.name, basedir=str(folder.parent))
    output = drain(predict_network(model, _blobs(), PredictSettings()))[1]
    # cand_prob: all voxels of the grid (no edge band)
    sharpen_tiny_model(model, output.cand_prob, 3.0, folder / "weights_best.h5")
    return folder


@pytest.fixture(scope="module")
def wide_model_dir(seg_model_dir, tmp_path_factory):
    """``seg_model_dir`` with rays twice as long: objects ~12 voxels, an auto scale near 1."""
    from napari_anystar._tf import stardist_models

    folder = tmp_path_factory.mktemp("wide-model") / "tiny-wide"
    shutil.copytree(seg_model_dir, folder)
    model = stardist_models().StarDist3D(None, name=folder.name, basedir=str(folder.parent))
    layer = model.keras_model.get_layer("dist")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 2.0, bias * 2.0])
    model.keras_model.save_weights(str(folder / "weights_best.h5"))
    return folder


@pytest.fixture
def entry(seg_model_dir):
    return registry.remember_model_folder(seg_model_dir)


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(segment_module, "show_error", shown.append)
    return shown


@pytest.fixture
def warnings(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(segment_module, "show_warning", shown.append)
    return shown


@pytest.fixture
def viewer_widget(make_napari_viewer, entry, errors):
    """Viewer and widget with a manual scale (the tests choose it; auto has its own tests)."""
    viewer, widget = _docked(make_napari_viewer)
    widget.set_scale_mode("manual")
    return viewer, widget


@pytest.fixture
def blocking_network(monkeypatch):
    """A fake predict_network that waits for ``release`` after each tile and records closing."""
    state = {"release": threading.Event(), "closed": threading.Event(), "tiles": 0}

    def fake(model, image, settings):
        try:
            for done in range(5):
                state["tiles"] = done
                yield done, 4
                assert state["release"].wait(10)
                state["release"].clear()
        finally:
            state["closed"].set()

    monkeypatch.setattr(segmenter, "predict_network", fake)
    return state
