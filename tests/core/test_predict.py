"""Network part of Segment: settings, input checks, normalisation, tiling, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import drain, forward_calls
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.predict import (
    EDGE_BAND,
    NetworkOutput,
    PredictSettings,
    auto_n_tiles,
    check_volume,
    predict_network,
)
from napari_anystar.model.segment import segment_volume
from napari_anystar.normalization import ANYSTAR, LEGACY, Normalization


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from stardist.models import StarDist3D

    return StarDist3D(None, name=tiny_model_dir.name, basedir=str(tiny_model_dir.parent))


def _volume(shape, seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape).astype(np.float32), 1.5) * 1000



@pytest.mark.parametrize("kwargs", [
    dict(norm=Normalization(50.0, 10.0, False)), dict(norm=Normalization(-1.0, 99.0, True)),
    dict(norm=Normalization(1.0, 101.0, False)), dict(norm=(1.0, 99.8)),
    dict(scale=(1.0, 0.0, 1.0)), dict(scale=(1.0, 1.0)), dict(n_tiles=(1, 0, 1)),
    dict(n_tiles=(1, 1.5, 1)), dict(device="tpu"),
])
def test_settings_validate_rejects(kwargs):
    with pytest.raises(ValueError):
        PredictSettings(**kwargs).validate()


def test_settings_defaults():
    s = PredictSettings()
    s.validate()
    assert s.norm is None and s.scale is None and s.n_tiles is None and s.device == "auto"


def test_settings_take_the_models_own_normalisation(model):
    assert PredictSettings().for_model(model).norm == LEGACY  # a model with no record
    model.anystar_normalization = ANYSTAR  # as registry.load_model sets it
    try:
        assert PredictSettings(scale=(2.0, 1.0, 1.0)).for_model(model) == PredictSettings(
            norm=ANYSTAR, scale=(2.0, 1.0, 1.0))
        given = PredictSettings(norm=Normalization(2.0, 99.0, clip=False))
        assert given.for_model(model) is given  # an explicit normalisation wins
    finally:
        del model.anystar_normalization


@pytest.mark.parametrize("image, words", [
    (np.ones((32, 32)), "3D"),
    (np.ones((4, 16, 16, 16)), "3D"),
    (np.ones((8, 16, 16, 3)), "RGB"),
    (np.ones((8, 16, 16, 4)), "RGB"),
    (np.zeros((0, 16, 16)), "empty"),
    (np.full((16, 16, 16), 7.0), "constant"),
    (np.where(np.eye(16)[None] > 0, np.nan, 1.0) * np.ones((16, 1, 1)), "NaN"),
    (np.where(np.eye(16)[None] > 0, np.inf, 1.0) * np.ones((16, 1, 1)), "infinite"),
    (np.arange(4 * 16 * 16, dtype=float).reshape(4, 16, 16), "too small"),
])
def test_check_volume_errors(image, words):
    with pytest.raises(ValueError, match=words) as err:
        check_volume(image)
    assert "\n" not in str(err.value)


def test_check_volume_too_small_after_scaling():
    image = np.arange(16**3, dtype=float).reshape(16, 16, 16)
    check_volume(image)
    with pytest.raises(ValueError, match="too small"):
        check_volume(image, scale=(0.25, 1.0, 1.0))


@pytest.mark.parametrize("norm", [ANYSTAR, LEGACY])
def test_the_network_sees_the_normalised_volume(model, norm):
    """predict_network with ``norm`` = StarDist's predict on ``norm.apply``'d input."""
    img = _volume((24, 40, 40), seed=4)
    img[0, 0, :5] = 50_000  # bright outliers: clipping matters
    out = drain(predict_network(model, img, PredictSettings(norm=norm)))[1]
    prob, _ = model.predict(norm.apply(img))
    np.testing.assert_allclose(out.prob, prob, atol=1e-5)
    other = drain(predict_network(model, img, PredictSettings(norm=Normalization(5, 95, True))))
    assert not np.allclose(other[1].prob, prob, atol=1e-3)


def test_auto_n_tiles_gives_about_64_voxel_windows():
    assert auto_n_tiles((32, 48, 48)) == (1, 1, 1)
    assert auto_n_tiles((128, 128, 128)) == (2, 2, 2)
    assert auto_n_tiles((51, 260, 130)) == (1, 4, 2)
    for shape in [(100, 200, 300), (64, 65, 500)]:
        windows = np.array(shape) / np.array(auto_n_tiles(shape))
        assert np.all((windows >= 42) & (windows <= 96))


def test_predict_network_single_tile(model):
    img = _volume((24, 40, 40))
    events, out = drain(predict_network(model, img, PredictSettings()))
    assert isinstance(out, NetworkOutput)
    assert events == [(0, 1), (1, 1)] and out.tiles_total == 1
    assert out.image_shape == img.shape == out.scaled_shape
    assert out.prob.shape == tuple(int(np.ceil(s / g)) for s, g in zip(img.shape, out.grid,
                                                                      strict=True))
    n = out.n_candidates
    assert n > 0 and out.points.shape == (n, 3) and out.cand_dist.shape == (n, 32)
    assert out.cand_prob.dtype == np.float32 and np.all(out.cand_prob > out.min_prob)
    assert np.all(out.cand_dist >= 1e-3)
    # candidates lie on the grid, inside the image
    assert np.all(out.points % np.array(out.grid) == 0)
    assert np.all((out.points >= 0) & (out.points < np.array(img.shape)))
    # the stored probabilities are the network's probabilities at those points
    g = np.array(out.grid)
    assert np.array_equal(out.prob[tuple((out.points // g).T)], out.cand_prob)


def test_auto_tiling_covers_volume_and_reports_each_tile(model):
    img = _volume((24, 130, 130))
    settings = PredictSettings()
    events, out = drain(predict_network(model, img, settings))
    assert out.n_tiles == (1, 2, 2)
    total = out.tiles_total
    assert total == 4
    assert events == [(k, total) for k in range(total + 1)]
    # the dense probability map is filled everywhere, and equals the untiled prediction
    _, whole = drain(predict_network(model, img, PredictSettings(n_tiles=(1, 1, 1))))
    assert out.prob.shape == whole.prob.shape
    assert np.allclose(out.prob, whole.prob, atol=1e-4)


@pytest.mark.parametrize("n_tiles", [(1, 1, 1), (1, 2, 2)])
def test_candidates_reach_the_volume_edges(model, n_tiles):
    """No edge band (``EDGE_BAND`` 0): every grid cell above the floor is a candidate, up to
    the volume's first and last cells, so an object the volume's edge cuts can be found
    (StarDist's default band of 2 cells drops every centre within 4 voxels of an edge)."""
    img = _volume((24, 130, 130))
    _, out = drain(predict_network(model, img, PredictSettings(n_tiles=n_tiles), min_prob=0.0))
    g = np.array(out.grid)
    cells = (out.points // g).T
    above = out.prob > 0.0  # every cell the network gives any probability
    assert out.n_candidates == int(above.sum()) > 0
    assert np.array_equal(np.sort(np.ravel_multi_index(tuple(cells), out.prob.shape)),
                          np.flatnonzero(above))
    assert np.array_equal(cells.min(axis=1), [0, 0, 0])
    assert np.array_equal(cells.max(axis=1), np.array(out.prob.shape) - 1)


def test_scale_resizes_before_the_network(model):
    img = _volume((24, 40, 40))
    unscaled = drain(predict_network(model, img, PredictSettings()))[1]
    ones = drain(predict_network(model, img, PredictSettings(scale=(1.0, 1.0, 1.0))))[1]
    np.testing.assert_array_equal(ones.prob, unscaled.prob)  # scale 1: the same network input
    _, out = drain(predict_network(model, img, PredictSettings(scale=(1.5, 0.8, 0.8))))
    assert out.image_shape == (24, 40, 40)
    assert out.scaled_shape == (36, 32, 32)
    assert out.scale == (1.5, 0.8, 0.8)
    assert np.all(out.points < np.array(out.scaled_shape))


def test_cancel_stops_before_all_tiles(model, monkeypatch):
    calls = forward_calls(model, monkeypatch)
    gen = predict_network(model, _volume((24, 130, 130)), PredictSettings(n_tiles=(1, 2, 2)))
    assert next(gen) == (0, 4)
    assert next(gen) == (1, 4)
    gen.close()
    assert len(calls) == 1


def test_cpu_device_and_missing_gpu(model):
    img = _volume((24, 40, 40))
    _, out_cpu = drain(predict_network(model, img, PredictSettings(device="cpu")))
    _, out_auto = drain(predict_network(model, img, PredictSettings()))
    assert np.allclose(out_cpu.prob, out_auto.prob, atol=1e-5)
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(ValueError, match="GPU"):
            next(predict_network(model, img, PredictSettings(device="gpu")))


def test_segment_volume_equals_predict_instances(model):
    img = _volume((24, 40, 40), seed=3)
    settings = PredictSettings(norm=Normalization(2.0, 99.0, clip=True))
    events, labels = drain(segment_volume(model, img, settings, 0.5, 0.4, refine=False))
    assert events[-1] == (1, 1)
    ref, _ = model.predict_instances(img, prob_thresh=0.5, nms_thresh=0.4,
                                     normalizer=settings.norm.csbdeep(),
                                     show_tile_progress=False,
                                     predict_kwargs={"b": EDGE_BAND})
    assert labels.shape == img.shape and labels.max() > 0
    assert np.array_equal(labels, ref)
    # the fast path too, with this model's degenerate (1e-3 voxel) polyhedra
    _, out = drain(predict_network(model, img, settings))
    assert np.array_equal(InstanceSolver(out, model).labels(0.5, 0.4), ref)


def test_ray_scale_multiplies_the_candidate_distances(model):
    image = np.random.default_rng(3).random((24, 32, 32)).astype(np.float32)
    plain = drain(predict_network(model, image, PredictSettings()))[1]
    model.anystar_ray_scale = 1.25
    try:
        wider = drain(predict_network(model, image, PredictSettings()))[1]
    finally:
        del model.anystar_ray_scale
    np.testing.assert_array_equal(wider.points, plain.points)
    np.testing.assert_array_equal(wider.cand_prob, plain.cand_prob)
    np.testing.assert_allclose(wider.cand_dist, plain.cand_dist * np.float32(1.25), rtol=1e-6)


def _counted_predict_calls(model, monkeypatch) -> list:
    """Input shapes of Keras ``predict`` calls (StarDist's receptive-field probes)."""
    calls: list = []
    real = model.keras_model.predict

    def counted(x, **kwargs):
        calls.append(x.shape)
        return real(x, **kwargs)

    monkeypatch.setattr(model.keras_model, "predict", counted)
    return calls


def test_warm_network_pays_the_receptive_field_and_the_trace_before_the_first_prediction(
        tiny_model_dir, monkeypatch):
    from stardist.models import StarDist3D

    from napari_anystar.model.predict import FORWARD_ATTR, warm_network

    def fresh():
        return StarDist3D(None, name=tiny_model_dir.name, basedir=str(tiny_model_dir.parent))

    img, tiled = _volume((24, 40, 40)), PredictSettings(n_tiles=(1, 1, 2))
    cold = fresh()
    cold_probes = _counted_predict_calls(cold, monkeypatch)
    cold_tiles = forward_calls(cold, monkeypatch)
    drain(predict_network(cold, img, tiled))
    assert len(cold_probes) == 2 and all(shape[1:4] != img.shape for shape in cold_probes)
    assert len(cold_tiles) >= 1                   # the network itself runs through the forward

    warm = fresh()
    warm_probes = _counted_predict_calls(warm, monkeypatch)
    warm_network(warm)
    assert warm_probes == cold_probes             # the one-time probes, paid before any volume
    traced = getattr(warm, FORWARD_ATTR).traced
    assert traced.experimental_get_tracing_count() == 1
    del warm_probes[:]
    warm_tiles = forward_calls(warm, monkeypatch)
    drain(predict_network(warm, img, tiled))
    assert warm_tiles == cold_tiles
    drain(predict_network(warm, _volume((32, 48, 40)), PredictSettings()))  # another shape
    assert warm_probes == []                      # the predictions run only the volumes
    assert traced.experimental_get_tracing_count() == 1  # one trace for every input shape
    assert warm._axes_tile_overlap("ZYX") == cold._axes_tile_overlap("ZYX")


def test_forward_equals_keras_predict(model):
    from napari_anystar._tf import tf_call
    from napari_anystar.model.predict import network_forward

    x = _volume((24, 40, 48))[..., np.newaxis]
    ours = tf_call(lambda: network_forward(model)(x))
    keras = tf_call(model.keras_model.predict, x[np.newaxis], verbose=0)
    assert len(ours) == len(keras) == 2
    for a, b in zip(ours, keras, strict=True):
        assert a.shape == b.shape[1:]
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6)
