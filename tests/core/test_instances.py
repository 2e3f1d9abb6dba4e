"""Live thresholds: InstanceSolver labels are identical to StarDist's predict_instances."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

from conftest import drain, hook_forward, make_tiny_stardist3d
from napari_anystar.model import instances
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.predict import EDGE_BAND, PredictSettings, predict_network
from napari_anystar.normalization import LEGACY, Normalization


def _volume(shape, seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape).astype(np.float32), 1.5) * 1000


@pytest.fixture(scope="module")
def nms_model(tmp_path_factory):
    """Tiny random StarDist3D (grid 1,2,2) whose outputs are rescaled to busy NMS inputs.

    Random weights give probabilities ~0.5 and distances ~0; the last two layers are
    rescaled so probabilities spread over (0, 1) and distances are a few voxels: hundreds of
    overlapping candidates, which exercises every stage of StarDist's 3D NMS.
    """
    from stardist.models import StarDist3D

    folder = make_tiny_stardist3d(tmp_path_factory.mktemp("nms"), "nms", grid=(1, 2, 2))
    model = StarDist3D(None, name="nms", basedir=str(folder.parent))
    x = LEGACY.apply(_volume((20, 32, 32)))
    prob, dist = model.predict(x)
    prob = np.clip(prob, 1e-6, 1 - 1e-6)
    layer_p, layer_d = model.keras_model.get_layer("prob"), model.keras_model.get_layer("dist")
    (kp, bp), (kd, bd) = layer_p.get_weights(), layer_d.get_weights()
    logit = np.log(prob / (1 - prob))
    sp = 1.0 / logit.std()
    layer_p.set_weights([kp * sp, np.array([-2.0 - sp * (logit - bp[0]).mean()], np.float32)])
    sd = 0.6 / dist.std()
    layer_d.set_weights([kd * sd, (3.0 - sd * (dist - bd).mean()) * np.ones_like(bd)])
    return model


def _network(model, image, settings):
    return drain(predict_network(model, image, settings))[1]


def _reference(model, image, settings, p, n, n_tiles=None):
    labels, _ = model.predict_instances(
        image, prob_thresh=p, nms_thresh=n, n_tiles=n_tiles,
        scale=settings.scale, normalizer=settings.for_model(model).norm.csbdeep(),
        show_tile_progress=False, predict_kwargs={"b": EDGE_BAND})
    return labels


def _assert_identical(solver, model, image, settings, pairs, n_tiles=None):
    for p, n in pairs:
        ours = solver.labels(p, n)
        ref = _reference(model, image, settings, p, n, n_tiles)
        assert ours.dtype == ref.dtype and ours.shape == image.shape
        assert np.array_equal(ours, ref), (p, n)
    return ours


def test_labels_identical_to_predict_instances(nms_model):
    image = _volume((20, 32, 32))
    settings = PredictSettings()
    out = _network(nms_model, image, settings)
    solver = InstanceSolver(out, nms_model)
    assert solver.n_candidates(0.35) > 80          # a busy NMS
    pairs = [(0.45, 0.3), (0.4, 0.6), (0.5, 0.1)]
    _assert_identical(solver, nms_model, image, settings, pairs)
    counts = [solver.labels(p, n).max() for p, n in pairs]
    assert min(counts) >= 5 and len(set(counts)) > 1
    assert solver.n_fallbacks == 0


def test_labels_identical_when_tiled(nms_model):
    image = _volume((12, 112, 112), seed=1)
    settings = PredictSettings(n_tiles=(1, 2, 2))
    out = _network(nms_model, image, settings)
    assert out.tiles_total == 4
    solver = InstanceSolver(out, nms_model)
    _assert_identical(solver, nms_model, image, settings, [(0.6, 0.3), (0.65, 0.5)],
                      n_tiles=(1, 2, 2))


def test_labels_identical_with_scale(nms_model):
    image = _volume((16, 36, 36), seed=2)
    settings = PredictSettings(scale=(1.2, 0.8, 0.8), norm=Normalization(2.0, 99.5, clip=True))
    out = _network(nms_model, image, settings)
    solver = InstanceSolver(out, nms_model)
    labels = _assert_identical(solver, nms_model, image, settings, [(0.45, 0.3), (0.5, 0.5)])
    assert labels.shape == (16, 36, 36) and labels.max() > 0


def test_threshold_changes_do_not_rerun_the_network(nms_model, monkeypatch):
    out = _network(nms_model, _volume((20, 32, 32), seed=4), PredictSettings())
    solver = InstanceSolver(out, nms_model)

    def forbidden(*args, **kwargs):
        raise AssertionError("network called")

    hook_forward(nms_model, monkeypatch, lambda real: forbidden)
    monkeypatch.setattr(nms_model.keras_model, "predict", forbidden)
    a = solver.labels(0.55, 0.4)
    b = solver.labels(0.5, 0.2)
    a[...] = -1                                  # callers get copies
    assert np.array_equal(solver.labels(0.55, 0.4), solver.reference_labels(0.55, 0.4))
    assert b.max() > 0


def test_lower_probability_threshold_never_fewer_candidates(nms_model):
    out = _network(nms_model, _volume((20, 32, 32), seed=5), PredictSettings())
    solver = InstanceSolver(out, nms_model)
    ps = np.linspace(out.min_prob, 0.95, 25)
    counts = [solver.n_candidates(p) for p in ps]
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert counts[0] == out.n_candidates > counts[-1]
    assert counts == [out.count_candidates(p) for p in ps]


def test_threshold_validation(nms_model):
    out = _network(nms_model, _volume((20, 32, 32)), PredictSettings())
    solver = InstanceSolver(out, nms_model)
    for p, n in [(out.min_prob / 2, 0.4), (1.5, 0.4), (0.5, -0.1), (0.5, 1.2)]:
        with pytest.raises(ValueError, match="threshold"):
            solver.labels(p, n)
    assert solver.labels(0.99, 0.4).max() == 0


def test_warm_up_precomputes_without_changing_results(nms_model):
    out = _network(nms_model, _volume((20, 32, 32), seed=6), PredictSettings())
    warmed, fresh = InstanceSolver(out, nms_model), InstanceSolver(out, nms_model)
    entered = []

    @contextlib.contextmanager
    def lock():
        entered.append(True)
        yield

    steps, done = drain(warmed.warm_up(0.6, 0.3, floor=0.4, step=0.05, lock=lock))
    assert steps == pytest.approx([0.55, 0.5, 0.45, 0.4]) and done is True
    assert len(entered) == len(steps)                   # one lock per chunk
    values = warmed._nms.values
    assert values.n_volumes + values.n_oracle > 0           # it did the pair work ...
    assert warmed._results == {}                          # ... without making label images
    before = (values.n_volumes, values.n_oracle)
    labels = warmed.labels(0.45, 0.3)
    assert (values.n_volumes, values.n_oracle) == before    # nothing left to compute there
    assert np.array_equal(labels, warmed.reference_labels(0.45, 0.3))
    assert labels.max() > 0
    for p, n in [(0.42, 0.3), (0.5, 0.6), (0.65, 0.1), (0.38, 0.3)]:   # other pairs unchanged
        assert np.array_equal(warmed.labels(p, n), fresh.labels(p, n)), (p, n)
    assert np.array_equal(warmed.labels(0.38, 0.3), warmed.reference_labels(0.38, 0.3))

    capped = InstanceSolver(out, nms_model)
    limit = capped.n_candidates(0.5)
    steps, done = drain(capped.warm_up(0.6, 0.3, floor=0.4, step=0.05, max_candidates=limit))
    assert steps == pytest.approx([0.55, 0.5]) and done is False   # stops at the cap


def test_interrupted_warm_up_resumes_and_keeps_results(nms_model):
    out = _network(nms_model, _volume((20, 32, 32), seed=7), PredictSettings())
    solver = InstanceSolver(out, nms_model)
    assert solver.warm(0.5, 0.3, interrupt=lambda: True) is False
    asked = itertools.count()
    steps, done = drain(solver.warm_up(0.6, 0.3, floor=0.45, step=0.05,
                                        interrupt=lambda: next(asked) == 10))
    assert next(asked) > 10 and done is True
    assert steps == pytest.approx([0.55, 0.55, 0.5, 0.45])   # the cut chunk is taken up again
    values = solver._nms.values
    before = (values.n_volumes, values.n_oracle)
    for p in (0.55, 0.5, 0.45):
        assert np.array_equal(solver.labels(p, 0.3), solver.reference_labels(p, 0.3)), p
    assert (values.n_volumes, values.n_oracle) == before


def test_labels_identical_across_thresholds_after_warming_elsewhere(nms_model):
    """Overlap values cached at some threshold pairs decide others: a grid over the sliders'
    range (probability 0.2-0.95, NMS 0.1-0.6) matches StarDist's own NMS and rendering, on a
    solver warmed first at other thresholds and on a fresh one visiting it in another order."""
    image = _volume((8, 16, 20), seed=3)
    out = _network(nms_model, image, PredictSettings())
    warmed, fresh = InstanceSolver(out, nms_model), InstanceSolver(out, nms_model)
    drain(warmed.warm_up(0.45, 0.5, floor=0.3, step=0.05))
    assert warmed._nms.values.n_rows > 0 and warmed.n_candidates(0.2) > 50
    grid = [(p, n) for p in (0.2, 0.35, 0.5, 0.95) for n in (0.1, 0.35, 0.6)]
    counts = set()
    for p, n in grid:
        labels = warmed.labels(p, n)
        assert np.array_equal(labels, warmed.reference_labels(p, n)), (p, n)
        counts.add(int(labels.max()))
    for p, n in reversed(grid):
        assert np.array_equal(fresh.labels(p, n), warmed.labels(p, n)), (p, n)
    assert len(counts) > 5 and warmed.n_fallbacks == 0 == fresh.n_fallbacks


def test_warm_grid_prepares_the_nms_axis_and_a_grid(nms_model, monkeypatch):
    monkeypatch.setattr(instances, "GRID_NMS", (0.1, 0.5))    # a short NMS range: cheaper
    out = _network(nms_model, _volume((20, 32, 32), seed=9), PredictSettings())
    solver = InstanceSolver(out, nms_model)
    entered = []

    @contextlib.contextmanager
    def lock():
        entered.append(True)
        yield

    steps, done = drain(solver.warm_grid(0.5, 0.3, floor=0.3, step=0.2, grid_step=0.2,
                                         lock=lock))
    # NMS 0.1, 0.3, 0.5 at 0.5, then those at probability 0.4, 0.6, 0.8, nearest first
    assert done is True and len(steps) == len(entered) == 3 + 3 * 3
    assert steps[:3] == [0.5] * 3 and steps[3:5] == [0.4, 0.6] and steps[-1] == 0.8
    assert set(steps) == {0.4, 0.5, 0.6, 0.8}
    values = solver._nms.values
    before = (values.n_volumes, values.n_oracle)
    assert sum(before) > 0 and solver._results == {}
    for p, n in [(0.5, 0.3), (0.4, 0.1), (0.6, 0.5)]:                  # on the axis / grid
        assert np.array_equal(solver.labels(p, n), solver.reference_labels(p, n)), (p, n)
    assert (values.n_volumes, values.n_oracle) == before                 # nothing left to do

    capped = InstanceSolver(out, nms_model)
    limit = capped.n_candidates(0.5)
    steps, done = drain(capped.warm_grid(0.5, 0.3, floor=0.3, step=0.4, grid_step=0.2,
                                         max_candidates=limit))
    assert done is False and min(steps) == 0.5      # thresholds with more candidates skipped


def test_interrupted_warm_grid_takes_the_pair_up_again(nms_model):
    out = _network(nms_model, _volume((20, 32, 32), seed=10), PredictSettings())
    solver = InstanceSolver(out, nms_model)
    asked = itertools.count()
    job = solver.warm_grid(0.6, 0.3, floor=0.55, step=0.3, grid_step=0.7,
                           interrupt=lambda: next(asked) == 3)
    steps, done = drain(job)
    # NMS 0.35 (cut, taken up again), 0.05, 0.65 at 0.6, then NMS 0.05, 0.75 at 0.7
    assert done is True and steps == [0.6] * 4 + [0.7] * 2
    assert np.array_equal(solver.labels(0.6, 0.35), solver.reference_labels(0.6, 0.35))


def test_object_probabilities_match_stardist_details(nms_model):
    image = _volume((20, 32, 32))
    settings = PredictSettings()
    solver = InstanceSolver(_network(nms_model, image, settings), nms_model)
    checked = 0
    for p, n in [(0.45, 0.3), (0.5, 0.1)]:
        labels = solver.labels(p, n)
        probs = solver.object_probabilities(p, n)
        assert probs.shape == (labels.max() + 1,) and np.isnan(probs[0])
        assert len(np.unique(labels[labels > 0])) == len(probs) - 1  # the object count
        _, details = nms_model.predict_instances(
            image, prob_thresh=p, nms_thresh=n,
            normalizer=settings.for_model(nms_model).norm.csbdeep(), show_tile_progress=False,
            predict_kwargs={"b": EDGE_BAND})
        if len(details["prob"]) == labels.max():  # every kept polyhedron visible: label i+1 = i
            np.testing.assert_allclose(probs[1:], details["prob"], rtol=1e-6)
            checked += 1
        assert np.all(probs[1:] > p)
    assert checked >= 1
