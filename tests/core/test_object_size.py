"""Scale suggestion from the network's own objects: extents, weighting, crop, equivariance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import drain
from napari_anystar.model import object_size, registry
from napari_anystar.model.object_size import (
    FALLBACK_SCALE,
    TRAINING_DIAMETER,
    TooFewObjectsError,
    auto_scale,
    centre_crop,
    estimate_scale,
    object_extents,
    quick_objects,
    weighted_median,
)
from napari_anystar.model.predict import NetworkOutput, PredictSettings, scaled_shape
from napari_anystar.synth import SynthSettings, generate


def _output(points, radii, n_rays, scale=None, shape=(64, 64, 64)):
    n = len(points)
    return NetworkOutput(
        image_shape=shape, scaled_shape=shape, scale=scale, n_tiles=(1, 1, 1), tiles_total=1,
        grid=(1, 1, 1), min_prob=0.05, points=np.asarray(points, np.int64),
        cand_prob=np.linspace(0.9, 0.8, n).astype(np.float32),
        cand_dist=np.repeat(np.asarray(radii, np.float32)[:, None], n_rays, axis=1),
        prob=np.zeros(shape, np.float32))


def test_weighted_median_follows_the_weights():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    np.testing.assert_array_equal(weighted_median(values, np.ones(3)), [2.0, 20.0])
    np.testing.assert_array_equal(weighted_median(values, np.array([1.0, 1.0, 10.0])),
                                  [3.0, 30.0])


def test_centre_crop_bounds_the_scaled_size():
    image = np.arange(100 * 50 * 30).reshape(100, 50, 30)
    crop = centre_crop(image, (2.0, 1.0, 0.5), max_edge=40)
    assert crop.shape == (20, 40, 30)
    np.testing.assert_array_equal(crop, image[40:60, 5:45, :])
    assert centre_crop(image, (1.0, 1.0, 1.0), max_edge=200).shape == image.shape


def test_object_extents_are_polyhedron_sizes_in_input_voxels(tiny_model_dir):
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    n_rays = int(model.config.n_rays)
    far_apart = [(16, 16, 16), (48, 48, 48)]
    output = _output(far_apart, [4.0, 6.0], n_rays)
    extents = object_extents(output, model, 0.5)
    assert extents.shape == (2, 3)
    # golden-spiral rays reach close to +-1 along each axis
    np.testing.assert_allclose(extents, [[8.0] * 3, [12.0] * 3], rtol=0.1)
    scaled = _output(far_apart, [4.0, 6.0], n_rays, scale=(2.0, 1.0, 0.5))
    np.testing.assert_allclose(object_extents(scaled, model, 0.5),
                               extents / np.array([2.0, 1.0, 0.5]), rtol=1e-6)
    # a threshold above both candidates keeps none
    assert object_extents(output, model, 0.95).shape == (0, 3)


def test_quick_objects_drop_candidates_centred_inside_a_likelier_kept_one(tiny_model_dir):
    """Candidates in decreasing probability: (16,16,16) r 6 is kept; (18,16,16) lies inside
    it and goes; (16,16,24) r 3 is outside it (8 > 6) and stays; (40,40,40) far away stays;
    (41,40,40) is inside that one; a candidate below the threshold is never kept."""
    from stardist.rays3d import rays_from_json

    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    rays = rays_from_json(model.config.rays_json)
    n_rays = len(rays)
    points = [(16, 16, 16), (18, 16, 16), (16, 16, 24), (40, 40, 40), (41, 40, 40), (5, 5, 5)]
    output = _output(points, [6.0, 6.0, 3.0, 4.0, 4.0, 2.0], n_rays)
    output.cand_prob[:] = [0.9, 0.85, 0.8, 0.7, 0.6, 0.3]
    assert quick_objects(output, rays, 0.5).tolist() == [0, 2, 3]
    assert quick_objects(output, rays, 0.2).tolist() == [0, 2, 3, 5]
    assert quick_objects(output, rays, 0.95).tolist() == []
    output.cand_prob[:] = [0.6, 0.85, 0.8, 0.7, 0.9, 0.3]   # now the inner ones come first
    assert sorted(quick_objects(output, rays, 0.5).tolist()) == [1, 2, 4]


@pytest.mark.bundled_model
@pytest.mark.slow
def test_suggested_scale_follows_the_object_size():
    """Blow the same volume up 1.6x: the suggested scale shrinks by about 1.6x."""
    entry = registry.default_model()
    model = registry.load_model(entry)
    prob = registry.model_thresholds(entry)[0]
    sample = generate("as-brightfg-plainbg", 9004, SynthSettings(augment=False))
    small = drain(estimate_scale(model, sample.image, None, prob))[1]
    large_image = ndi.zoom(sample.image, 1.6, order=1)
    steps, large = drain(estimate_scale(model, large_image, None, prob))
    assert steps[0] == (0, 2) and steps[-1] == (2, 2)
    assert large.n_objects >= 5 and small.n_objects >= 5
    ratio = np.array(small.scale) / np.array(large.scale)
    np.testing.assert_allclose(ratio, 1.6, rtol=0.2)
    # at the suggested scale the objects are about the training size
    np.testing.assert_allclose(np.array(small.object_size) * small.scale, TRAINING_DIAMETER,
                               rtol=0.35)


def test_too_few_objects_is_a_clear_error(tiny_model_dir):
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    image = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    with pytest.raises(TooFewObjectsError, match="too few to estimate") as err:
        drain(estimate_scale(model, image, PredictSettings(), 0.99))
    assert err.value.n_objects == 0


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model and a probability threshold that keeps its 0.5% likeliest voxels."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    prob, _ = model.predict(model.anystar_normalization.apply(_noise()))
    return model, float(np.quantile(prob, 0.995))


def _noise() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)


def test_auto_scale_is_suggest_from_raw_voxels(tiny):
    model, prob = tiny
    start_elsewhere = PredictSettings(scale=(2.0, 2.0, 2.0))  # auto ignores the given scale
    steps, choice = drain(auto_scale(model, _noise(), start_elsewhere, prob))
    expected = drain(estimate_scale(model, _noise(), PredictSettings(), prob))[1]
    assert steps == [(0, 2), (1, 2), (2, 2)]
    assert choice.estimate == expected and not choice.fell_back
    scale, note = choice  # unpacks as (scale, note)
    assert scale == expected.scale
    assert note.startswith("objects ~") and f"{expected.n_objects} found" in note


def test_auto_scale_falls_back_instead_of_failing(tiny, monkeypatch):
    model, prob = tiny
    choice = drain(auto_scale(model, _noise(), None, 0.99))[1]
    assert choice.scale == FALLBACK_SCALE == (1.0, 1.0, 1.0) and choice.fell_back
    assert choice.note == ("found 0 object(s), too few to measure their size: using the "
                           "fallback scale (1, 1, 1).")
    monkeypatch.setattr(object_size, "SCALE_LIMITS", (0.1, 0.1))  # would shrink to 3 voxels
    choice = drain(auto_scale(model, _noise(), None, prob))[1]
    assert choice.scale == FALLBACK_SCALE and choice.fell_back
    assert choice.note.startswith("no usable scale (The volume is too small")
    with pytest.raises(ValueError, match="constant"):  # an unusable volume is still an error
        drain(auto_scale(model, np.ones((32, 32, 32)), None, prob))


def test_suggest_targets_the_models_recorded_training_size(tmp_path):
    import json
    import types

    from napari_anystar.model import model_settings
    from napari_anystar.model.object_size import TRAINING_DIAMETER, training_diameter
    from napari_anystar.train.object_diameter import (
        equivalent_diameters,
        volume_weighted_median,
    )

    assert training_diameter(types.SimpleNamespace()) == TRAINING_DIAMETER
    assert training_diameter(types.SimpleNamespace(anystar_object_diameter=13.5)) == 13.5
    (tmp_path / "anystar.json").write_text(json.dumps({"object_diameter": 13.5}))
    assert model_settings.object_diameter(tmp_path) == 13.5
    (tmp_path / "anystar.json").write_text(json.dumps({"object_diameter": "big"}))
    with pytest.raises(model_settings.InvalidModelError, match="object_diameter"):
        model_settings.check_settings(tmp_path)
    labels = np.zeros((20, 20, 20), np.int32)
    labels[:10, :10, :10] = 1  # 1000 voxels: 12.4 across
    labels[15:17, 15:17, 15:17] = 2  # 8 voxels
    diameters = equivalent_diameters(labels)
    assert np.allclose(sorted(diameters), [(6 * 8 / np.pi) ** (1 / 3), (6000 / np.pi) ** (1 / 3)])
    assert volume_weighted_median(diameters) == pytest.approx(12.407, abs=1e-3)


class PieceCutter:
    """A stand-in network that sees objects of ``size`` input voxels on a regular grid and,
    like a network trained on smaller objects, cuts any that look larger than ``max_whole``
    voxels into pieces of ``piece`` voxels. Records the scales it was run at."""

    def __init__(self, n_rays: int, size: float, max_whole: float = 20.0, piece: float = 14.0):
        self.n_rays, self.size, self.max_whole, self.piece = n_rays, size, max_whole, piece
        self.scales: list[float] = []

    def objects(self, shape: tuple[int, ...], s: float) -> tuple[np.ndarray, float]:
        """Centres (scaled voxels) and extent of the objects seen at scale ``s``."""
        apparent = self.size * s
        extent = self.piece if apparent > self.max_whole else apparent
        centres = [np.arange(extent / 2, n - extent / 2 + 1e-6, extent) for n in shape]
        return np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, 3), extent

    def __call__(self, crop, settings):
        s = 1.0 if settings.scale is None else settings.scale[0]
        self.scales.append(s)
        shape = tuple(round(n * s) for n in crop.shape)
        points, extent = self.objects(shape, s)
        output = _output(np.rint(points), [extent / 2] * len(points), self.n_rays,
                         scale=settings.scale, shape=shape)
        yield from ()
        return output


@pytest.mark.parametrize(("size", "edge", "first"), [(32.0, 128, 0.5), (64.0, 160, 0.25)])
def test_objects_cut_into_pieces_start_the_estimate_at_a_coarser_scale(tiny_model_dir, size,
                                                                      edge, first):
    """Objects 32 or 64 voxels across, which the network cuts into 14-voxel pieces while they
    look larger than 20: the first round halves the scale until they are whole, and the
    estimate brings them to the training size. Without that rule it stays far too large."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    image = np.random.default_rng(0).random((edge,) * 3, np.float32)
    cutter = PieceCutter(int(model.config.n_rays), size)
    steps, estimate = drain(estimate_scale(model, image, None, 0.5, network=cutter))
    assert steps == [(0, 2), (1, 2), (2, 2)]
    want = TRAINING_DIAMETER / size
    np.testing.assert_allclose(estimate.scale, want, rtol=0.1)
    assert min(cutter.scales) < 0.5 * max(cutter.scales)
    assert estimate.coarse_start == (first,) * 3
    choice = drain(auto_scale(model, image, None, 0.5,
                              network=PieceCutter(int(model.config.n_rays), size)))[1]
    assert choice.scale == estimate.scale
    assert choice.note.endswith(f"Measured first at ({first:g}, {first:g}, {first:g}), because "
                                "at raw voxels the network cut the objects into pieces.")

    naive, slow = (PieceCutter(int(model.config.n_rays), size) for _ in range(2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(object_size, "FRAGMENT_RATIO", np.inf)
        stuck = drain(estimate_scale(model, image, None, 0.5, network=naive, rounds=2))[1]
        converged = drain(estimate_scale(model, image, None, 0.5, network=slow))[1]
    assert min(stuck.scale) > 1.4 * want  # two rounds from raw voxels stay far too large
    # rounds until converged get closer (14-voxel pieces shrink it by 14 % a round), slower
    assert np.all(np.asarray(converged.scale) < 0.8 * np.asarray(stuck.scale))
    assert len(slow.scales) > len(cutter.scales)


class Flattener:
    """A stand-in network that measures objects of ``size`` (Z, Y, X) voxels as more alike
    along the axes than they are: ``TRAINING_DIAMETER * (apparent / TRAINING_DIAMETER) **
    0.5`` per axis, as the network does far from its training size. Records its scales."""

    def __init__(self, rays, size: tuple[float, float, float]):
        self.rays, self.size = rays, np.asarray(size, float)
        self.scales: list[tuple[float, ...]] = []

    def __call__(self, crop, settings):
        s = np.ones(3) if settings.scale is None else np.asarray(settings.scale, float)
        self.scales.append(tuple(s))
        shape = tuple(round(n * k) for n, k in zip(crop.shape, s, strict=True))
        extent = TRAINING_DIAMETER * (self.size * s / TRAINING_DIAMETER) ** 0.5
        centres = [np.arange(e / 2, n - e / 2 + 1e-6, e) for e, n in zip(extent, shape,
                                                                         strict=True)]
        points = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, 3)
        v = self.rays.vertices
        radius = 1.0 / np.sqrt(np.sum((v / (extent / 2)) ** 2, axis=1))  # an ellipsoid
        output = _output(np.rint(points), [1.0] * len(points), len(v), scale=settings.scale,
                         shape=shape)
        output.cand_dist[:] = radius.astype(np.float32)
        yield from ()
        return output


def test_rounds_continue_until_the_scale_settles(tiny_model_dir):
    """Nuclei 12 voxels along Z and 40 along Y/X (lateral sampling finer than the network's
    training data): each round moves the Y/X scale only part of the way, so two rounds stop
    35 % off; rounds until a round moves no axis by over CONVERGED get within 15 %, and the
    progress total grows with them."""
    from stardist.rays3d import rays_from_json

    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    rays = rays_from_json(model.config.rays_json)
    image = np.zeros((48, 160, 160), np.float32)
    want = np.array([1.0, 0.3, 0.3])  # TRAINING_DIAMETER / (12, 40, 40)
    two = drain(estimate_scale(model, image, None, 0.5, network=Flattener(rays, (12, 40, 40)),
                               rounds=2))[1]
    assert np.all(np.asarray(two.scale)[1:] > 1.3 * want[1:])
    network = Flattener(rays, (12, 40, 40))
    steps, settled = drain(estimate_scale(model, image, None, 0.5, network=network))
    np.testing.assert_allclose(settled.scale, want, rtol=object_size.CONVERGED)
    n = steps[-1][0]  # rounds run (the network also ran once at half scale, to check pieces)
    assert 2 < n <= object_size.MAX_ROUNDS
    assert steps[:2] == [(0, 2), (1, 2)] and steps[-1] == (n, n)
    last = np.asarray(settled.scale) / np.asarray(network.scales[-1])
    assert np.all(np.abs(np.log(last)) <= np.log1p(object_size.CONVERGED))


def test_objects_below_training_size_never_try_a_coarser_scale(tiny_model_dir):
    """Objects the network measures below the training size are not pieces: no round runs
    at half the scale (small objects would vanish there and look like fragments)."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    image = np.random.default_rng(0).random((64, 64, 64), np.float32)
    cutter = PieceCutter(int(model.config.n_rays), 8.0)
    estimate = drain(estimate_scale(model, image, None, 0.5, network=cutter))[1]
    assert cutter.scales[0] == 1.0 and cutter.scales[1] == pytest.approx(1.5)
    assert len(cutter.scales) == 2 and estimate.coarse_start is None
    np.testing.assert_allclose(estimate.scale, TRAINING_DIAMETER / 8.0, rtol=0.05)


def test_whole_objects_that_merge_at_half_scale_keep_the_raw_voxel_start(tiny_model_dir):
    """Training-size objects (20 voxels, whole) that halve in number at half the scale are
    not pieces: the estimate starts at raw voxels, as before."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    image = np.random.default_rng(0).random((96, 96, 96), np.float32)
    cutter = PieceCutter(int(model.config.n_rays), 20.0, max_whole=24.0)
    estimate = drain(estimate_scale(model, image, None, 0.5, network=cutter))[1]
    assert cutter.scales[:2] == [1.0, 0.5]  # the check ran and found no pieces
    assert cutter.scales[2] == pytest.approx(TRAINING_DIAMETER / 20.0, rel=0.05)
    np.testing.assert_allclose(estimate.scale, TRAINING_DIAMETER / 20.0, rtol=0.1)
    assert estimate.coarse_start is None


def test_a_later_round_that_finds_nothing_keeps_the_last_estimate(tiny_model_dir):
    """Rounds past the first two that cannot measure (no objects there) end the estimate at
    the round before instead of failing it; one of the first two still fails it."""
    from stardist.rays3d import rays_from_json

    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    rays = rays_from_json(model.config.rays_json)
    image = np.zeros((48, 160, 160), np.float32)

    def vanishing(after: int):
        """The stand-in network, finding nothing from its call ``after + 1`` on."""
        network = Flattener(rays, (12, 40, 40))

        def run(crop, settings):
            output = yield from network(crop, settings)
            if len(network.scales) > after:
                none = slice(0, 0)
                output = dataclasses.replace(output, points=output.points[none],
                                             cand_prob=output.cand_prob[none],
                                             cand_dist=output.cand_dist[none])
            return output
        return run

    steps, settled = drain(estimate_scale(model, image, None, 0.5, network=vanishing(99)))
    assert steps[-1] == (4, 4)  # four rounds when every round measures
    three = drain(estimate_scale(model, image, None, 0.5, rounds=3, network=vanishing(99)))[1]
    # calls: round 1, the half-scale check, rounds 2 and 3; round 4 finds nothing
    steps, kept = drain(estimate_scale(model, image, None, 0.5, network=vanishing(4)))
    assert kept == three != settled and steps[-1] == (3, 3)
    with pytest.raises(TooFewObjectsError):  # round 2 finds nothing
        drain(estimate_scale(model, image, None, 0.5, network=vanishing(2)))


class FewLarge(PieceCutter):
    """:class:`PieceCutter` for a volume holding only a few nuclei, at ``centres`` (input
    voxels; an early embryo): each one that looks larger than ``max_whole`` voxels is cut
    into a grid of ``piece``-voxel pieces around its centre."""

    def __init__(self, n_rays: int, centres, size: float):
        super().__init__(n_rays, size)
        self.centres = np.asarray(centres, float)

    def objects(self, shape: tuple[int, ...], s: float) -> tuple[np.ndarray, float]:
        apparent = self.size * s
        if apparent <= self.max_whole:
            return self.centres * s, apparent
        n = int(np.ceil(apparent / self.piece))
        offsets = (np.arange(n) - (n - 1) / 2) * self.piece
        grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1)
        return (self.centres[:, None] * s + grid.reshape(1, -1, 3)).reshape(-1, 3), self.piece


@pytest.mark.parametrize("centres", [[(48, 48, 48)], [(30, 30, 30), (66, 66, 66)]])
def test_one_or_two_large_nuclei_are_measured_not_cut_into_pieces(tiny_model_dir, centres):
    """An early embryo: one or two nuclei 40 voxels across. At raw voxels the network cuts
    them into 14-voxel pieces; at half the scale it finds them whole, and those one or two
    objects set the scale (to the training size). Demanding three objects there left the
    estimate to the pieces, over 1.4x too large (on real volumes ``auto_scale`` then often
    fell back to raw voxels, where the network cuts every nucleus into tens of pieces)."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    image = np.random.default_rng(0).random((96, 96, 96), np.float32)
    n_rays = int(model.config.n_rays)
    estimate = drain(estimate_scale(model, image, None, 0.5,
                                    network=FewLarge(n_rays, centres, 40.0)))[1]
    assert estimate.n_objects == len(centres) and estimate.coarse_start == (0.5,) * 3
    np.testing.assert_allclose(estimate.scale, TRAINING_DIAMETER / 40.0, rtol=0.05)
    choice = drain(auto_scale(model, image, None, 0.5,
                              network=FewLarge(n_rays, centres, 40.0)))[1]
    assert not choice.fell_back and choice.scale == estimate.scale
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(object_size, "MIN_OBJECTS", 3)
        before = drain(auto_scale(model, image, None, 0.5,
                                  network=FewLarge(n_rays, centres, 40.0)))[1]
    assert min(before.scale) > 1.4 * TRAINING_DIAMETER / 40.0


def test_a_volume_too_small_for_its_objects_runs_at_the_smallest_usable_scale(
        tiny_model_dir, monkeypatch):
    """A crop around one nucleus 40 voxels across, 40 x 48 x 48 voxels: the training size
    wants scale 0.3, which would leave 12 x 14 x 14 voxels, too few for a network that needs
    16 (the bundled one). The estimate raises each such axis to the smallest scale the
    network runs the volume at and says so, instead of falling back to raw voxels, where the
    network cuts the nucleus into 27 pieces."""
    model = registry.load_model(registry.resolve_model(tiny_model_dir))
    monkeypatch.setattr(object_size, "min_network_size", lambda model: 16)
    image = np.random.default_rng(0).random((40, 48, 48), np.float32)
    n_rays = int(model.config.n_rays)
    usable = object_size.smallest_usable_scale(image.shape, 16)
    assert usable == (0.4, 0.334, 0.334)
    assert min(scaled_shape(image.shape, usable)) == 16
    choice = drain(auto_scale(model, image, None, 0.5,
                              network=FewLarge(n_rays, [(20, 24, 24)], 40.0)))[1]
    assert not choice.fell_back and choice.estimate.raised
    assert choice.scale == usable and choice.estimate.n_objects == 1
    assert "too small to bring its objects to the training size" in choice.note
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(object_size, "smallest_usable_scale", lambda shape, size: (0.0,) * 3)
        before = drain(auto_scale(model, image, None, 0.5,
                                  network=FewLarge(n_rays, [(20, 24, 24)], 40.0)))[1]
    assert before.fell_back and before.note.startswith("no usable scale")
    # a volume large enough for the training size is not raised
    estimate = drain(estimate_scale(model, np.zeros((96, 96, 96), np.float32), None, 0.5,
                                    network=FewLarge(n_rays, [(48, 48, 48)], 40.0)))[1]
    assert not estimate.raised
