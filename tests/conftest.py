"""Test-wide settings: quiet, CPU-only, small-thread TensorFlow; per-test user folders."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

from napari_anystar._tf import import_tensorflow

# Load TensorFlow (Keras 2, symbols bound locally: see _tf.py) before any test or viewer does.
import_tensorflow()


def drain(generator) -> tuple[list, object]:
    """Run a generator to its end: (everything it yielded, the value it returned)."""
    yielded = []
    while True:
        try:
            yielded.append(next(generator))
        except StopIteration as stop:
            return yielded, stop.value


def gaussian_blobs(shape=(24, 32, 40), seed=0, *, n: int = 6, sigma: float = 3.0
                   ) -> np.ndarray:
    """``n`` bright Gaussian blobs (``sigma`` voxels) on noise, uint16, ZYX."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    image = rng.normal(100, 5, size=shape).astype(np.float32)
    for _ in range(n):
        centre = [rng.uniform(4, s - 4) for s in shape]
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        image += 800 * np.exp(-dist2 / (2 * sigma**2))
    return image.astype(np.uint16)


def sharpen_tiny_model(model, prob: np.ndarray, ray_length: float, weights_path) -> None:
    """Make a random tiny model segment: its logits stretched so that ~3% of the voxels of
    ``prob`` (its own probabilities on a test image) pass 0.5, its rays ~``ray_length``
    voxels long; the weights are saved to ``weights_path``.

    (Random weights give probabilities ~0.5 and distances ~0 everywhere.)
    """
    prob = np.clip(np.asarray(prob, np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(prob / (1 - prob))
    shift, stretch = np.quantile(logit, 0.97), 6.0 / max(float(logit.std()), 1e-6)
    layers = model.keras_model.get_layer("prob"), model.keras_model.get_layer("dist")
    kernel, bias = layers[0].get_weights()
    layers[0].set_weights([kernel * stretch, (bias - shift) * stretch])
    kernel, bias = layers[1].get_weights()
    layers[1].set_weights([kernel * 0.1, bias * 0.1 + ray_length])
    model.keras_model.save_weights(str(weights_path))


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point the per-user data/config/cache folders at a fresh temporary folder."""
    root = tmp_path_factory.mktemp("anystar-user")
    monkeypatch.setenv("ANYSTAR_HOME", str(root))
    yield root


@pytest.fixture(autouse=True)
def _bundled_models_only_when_asked(request, monkeypatch, tmp_path_factory):
    """Hide the shipped models unless the test is marked ``bundled_model``.

    Most tests build their own tiny model and must not have the shipped default picked
    instead of it.
    """
    if request.node.get_closest_marker("bundled_model") is None:
        from napari_anystar.model import registry

        monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", tmp_path_factory.mktemp("bundled"))


@pytest.fixture
def network_calls(monkeypatch):
    """Scales the segmentation pipeline runs the network at (None: raw voxels), in order."""
    from napari_anystar.model import segmenter

    calls = []
    real = segmenter.predict_network

    def counted(model, volume, settings):
        calls.append(settings.scale)
        return real(model, volume, settings)

    monkeypatch.setattr(segmenter, "predict_network", counted)
    return calls


def hook_forward(model, monkeypatch, wrap) -> None:
    """Replace ``model``'s network forward (:func:`~napari_anystar.model.predict.network_forward`,
    what every prediction of the package calls per tile) by ``wrap(real_forward)``."""
    from napari_anystar._tf import tf_call
    from napari_anystar.model.predict import FORWARD_ATTR, network_forward

    real = tf_call(network_forward, model)
    monkeypatch.setattr(model, FORWARD_ATTR, wrap(real), raising=False)


def forward_calls(model, monkeypatch, record=lambda x: x.shape) -> list:
    """``record(x)`` of each input ``x`` of ``model``'s network forward from now on, in order
    (the calls still run: :func:`hook_forward`)."""
    calls: list = []

    def recording(real):
        def forward(x):
            calls.append(record(x))
            return real(x)
        return forward

    hook_forward(model, monkeypatch, recording)
    return calls


def make_tiny_stardist3d(basedir, name: str = "tiny", *, n_rays: int = 32, grid=(2, 2, 2),
                         n_depth: int = 2, n_filter_base: int = 8, seed: int = 0):
    """A random-weight StarDist3D saved in StarDist's own folder format; returns its folder."""
    import json
    from pathlib import Path

    import numpy as np
    from stardist import Rays_GoldenSpiral

    from napari_anystar._tf import import_tensorflow, stardist_models

    tf = import_tensorflow()
    Config3D, StarDist3D = stardist_models().Config3D, stardist_models().StarDist3D

    np.random.seed(seed)
    tf.random.set_seed(seed)
    import tf_keras

    tf_keras.utils.set_random_seed(seed)  # Keras initialisers: same weights in every process
    config = Config3D(
        rays=Rays_GoldenSpiral(n_rays),
        grid=tuple(grid),
        n_channel_in=1,
        unet_n_depth=n_depth,
        unet_n_filter_base=n_filter_base,
        train_patch_size=(32, 32, 32),
        train_batch_size=1,
        use_gpu=False,
    )
    model = StarDist3D(config, name=name, basedir=str(basedir))
    folder = Path(basedir) / name
    model.keras_model.save_weights(str(folder / "weights_best.h5"))
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.5, "nms": 0.4}))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a tiny random-weight StarDist3D (32 rays, grid 2); treat it as read-only."""
    return make_tiny_stardist3d(tmp_path_factory.mktemp("models"))
