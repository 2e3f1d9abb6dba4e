"""Block-wise segmentation: geometry, stitching across block borders, unique ids, resume,
sources, the whole-volume normalisation, and the real network against whole-volume labels."""

from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from conftest import drain, gaussian_blobs
from napari_anystar.model import blockwise, registry
from napari_anystar.model.block_exec import (
    InlineExecutor,
    auto_workers,
    block_executor,
    connect,
)
from napari_anystar.model.block_io import STATE_DIR, open_source
from napari_anystar.model.block_tasks import FixedBounds, sample_bounds
from napari_anystar.model.blocks import (
    BlockGrid,
    BlockObjects,
    RayGeometry,
    plan_grid,
)
from napari_anystar.model.predict import PredictSettings
from napari_anystar.normalization import LEGACY

SHAPE = (30, 40, 44)
CORE = (12, 16, 16)
MARGIN = (6, 6, 6)


# ------------------------------------------------------------------------ geometry
def test_cores_tile_the_volume_and_read_regions_add_the_margin():
    grid = plan_grid(SHAPE, (1.0, 1.0, 1.0), CORE, MARGIN)
    assert grid.counts == (3, 3, 3) and len(grid) == 27
    cover = np.zeros(SHAPE, int)
    for i in range(len(grid)):
        cover[grid.core_box(i)] += 1
        core, read = grid.core_box(i), grid.read_box(i)
        for c, r, m, n in zip(core, read, MARGIN, SHAPE, strict=True):
            assert r.start == max(0, c.start - m) and r.stop == min(n, c.stop + m)
    assert (cover == 1).all()
    voxels = np.argwhere(np.ones(SHAPE, bool))[::97]
    owners = grid.owner(voxels.astype(float))
    for v, owner in zip(voxels, owners, strict=True):
        box = grid.core_box(int(owner))
        assert all(b.start <= x < b.stop for b, x in zip(box, v, strict=True))
    assert sorted(grid.neighbours(13)) == list(range(27))
    assert grid.neighbours(0) == [0, 1, 3, 4, 9, 10, 12, 13]
    assert grid.last_neighbour(0) == 13
    aligned = plan_grid(SHAPE, (1.0, 1.0, 1.0), CORE, MARGIN, divisor=(8, 8, 8))
    for i in range(len(aligned)):
        for c, r, m, n in zip(aligned.core_box(i), aligned.read_box(i), MARGIN, SHAPE,
                              strict=True):
            assert r.start % 8 == 0 and (r.stop % 8 == 0 or r.stop == n)
            assert r.start <= max(0, c.start - m) and r.stop >= min(n, c.stop + m)


def test_default_grid_follows_the_scale_and_rejects_tiny_blocks():
    grid = plan_grid((500, 500, 500), (0.5, 1.0, 2.0))
    assert grid.core == (256, 128, 64) and grid.margin == (64, 32, 16)
    with pytest.raises(ValueError, match="Block size"):
        plan_grid(SHAPE, (1.0, 1.0, 1.0), (4, 16, 16))


# ------------------------------------------------------------- stitching (exact, no net)
@pytest.fixture(scope="module")
def rays(tiny_model_dir) -> RayGeometry:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    return RayGeometry.from_rays_json(config["rays_json"], (1.0, 1.0, 1.0))


def border_spheres(grid: BlockGrid, n_rays: int) -> BlockObjects:
    """Spheres centred on and next to core borders (each straddles two to eight cores),
    some overlapping spheres owned by different blocks, distinct probabilities."""
    rng = np.random.default_rng(1)
    centres = []
    for z in (grid.core[0], 2 * grid.core[0]):
        for y in (grid.core[1], 2 * grid.core[1]):
            for x in (grid.core[2] - 0.4, 2 * grid.core[2] + 0.3):
                centres.append((z - 0.5, y + rng.uniform(-2, 2), x))
    centres += [(5, 5, 5), (20.0, 15.2, 17.0), (20.0, 17.8, 15.0)]  # the last two overlap
    points = np.array(centres, float)
    radii = rng.uniform(3.0, 5.0, len(points))
    dist = np.repeat(radii[:, None], n_rays, axis=1).astype(np.float32)
    prob = rng.permutation(np.linspace(0.5, 0.95, len(points))).astype(np.float32)
    return BlockObjects(points, dist, prob)


@pytest.fixture
def fake_network(monkeypatch, rays):
    """``predict_block`` that 'finds' given spheres: a block gets those whose centre lies in
    its core (what the real one keeps); records the blocks it was asked for."""
    truth: dict[str, BlockObjects] = {}
    calls: list[int] = []

    def predict(entry, data, settings, thresholds, grid, index):
        calls.append(index)
        spheres = truth["spheres"]
        assert data.shape == tuple(b.stop - b.start for b in grid.read_box(index))
        own = grid.owner(spheres.points) == index
        return BlockObjects(spheres.points[own], spheres.dist[own], spheres.prob[own]).ordered()

    monkeypatch.setattr(blockwise, "predict_block", predict)
    return truth, calls


def whole_volume(spheres: BlockObjects, rays: RayGeometry) -> np.ndarray:
    """The same spheres rendered in one piece by StarDist's renderer (likeliest first)."""
    from stardist.lib.stardist3d import c_polyhedron_to_label

    order = np.argsort(-spheres.prob)
    return c_polyhedron_to_label(
        spheres.dist[order], spheres.points[order].astype(np.float32), rays.vertices,
        rays.faces, np.arange(1, len(order) + 1, dtype=np.int32), np.int32(0), np.int32(0),
        np.int32(0), np.int32(0), SHAPE)


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, SHAPE).astype(np.uint16)


def entry_of(folder) -> registry.ModelEntry:
    return registry.ModelEntry(folder.name, folder, "folder")


def run_blocks(tiny_model_dir, image, out, core=CORE, **kwargs):
    kwargs = {"margin": MARGIN, "refine": False, "polarity": "bright", **kwargs}
    job = blockwise.segment_blocks(entry_of(tiny_model_dir), image, out,
                                   PredictSettings(norm=LEGACY), (0.5, 0.4), core, **kwargs)
    return drain(job)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a renumbering of the objects (a bijection between ids)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
            and np.array_equal(a == 0, b == 0))


def test_objects_across_block_borders_are_whole_and_once(tiny_model_dir, fake_network,
                                                         rays, tmp_path):
    truth, calls = fake_network
    grid = plan_grid(SHAPE, (1.0, 1.0, 1.0), CORE, MARGIN)
    spheres = border_spheres(grid, rays.vertices.shape[0])
    truth["spheres"] = spheres
    progress, result = run_blocks(tiny_model_dir, volume(), tmp_path / "l.zarr")
    labels = zarr.open(str(tmp_path / "l.zarr"), mode="r")[:]
    reference = whole_volume(spheres, rays)
    assert sorted(calls) == list(range(27))
    assert progress[0] == (0, 27) and progress[-1] == (27, 27)
    assert result.n_objects == len(spheres) == len(np.unique(labels)) - 1
    assert set(np.unique(labels)) == set(range(len(spheres) + 1))  # ids 1..n, unique
    assert same_partition(labels, reference)  # none cut, none doubled, overlaps as StarDist
    straddling = [i for i in range(1, labels.max() + 1)
                  if len({int(grid.owner(v[None].astype(float))[0])
                          for v in np.argwhere(labels == i)}) > 1]
    assert len(straddling) >= 8
    assert result.clipped == 0 and result.blocks_resumed == 0
    attrs = zarr.open(str(tmp_path / "l.zarr"), mode="r").attrs["anystar"]
    assert attrs["complete"] and attrs["n_objects"] == len(spheres)
    assert not (tmp_path / "l.zarr" / STATE_DIR).exists()


def test_resume_after_an_interrupted_run_skips_the_done_blocks(tiny_model_dir, fake_network,
                                                               rays, tmp_path):
    truth, calls = fake_network
    grid = plan_grid(SHAPE, (1.0, 1.0, 1.0), CORE, MARGIN)
    truth["spheres"] = border_spheres(grid, rays.vertices.shape[0])
    job = blockwise.segment_blocks(entry_of(tiny_model_dir), volume(), tmp_path / "l.zarr",
                                   PredictSettings(norm=LEGACY), (0.5, 0.4), CORE,
                                   margin=MARGIN, refine=False, polarity="bright")
    for _ in range(11):  # the (0, 27) before the first block, then ten blocks
        next(job)
    job.close()
    assert calls == list(range(10))
    assert (tmp_path / "l.zarr" / STATE_DIR / "state.json").is_file()
    calls.clear()
    _, result = run_blocks(tiny_model_dir, volume(), tmp_path / "l.zarr")
    assert calls == list(range(10, 27))
    assert result.blocks_resumed == 10
    _, _ = run_blocks(tiny_model_dir, volume(), tmp_path / "whole.zarr")
    resumed = zarr.open(str(tmp_path / "l.zarr"), mode="r")[:]
    assert np.array_equal(resumed, zarr.open(str(tmp_path / "whole.zarr"), mode="r")[:])


def test_resume_refuses_other_settings_and_finished_stores(tiny_model_dir, fake_network,
                                                           rays, tmp_path):
    truth, _ = fake_network
    truth["spheres"] = BlockObjects.empty(rays.vertices.shape[0])
    job = blockwise.segment_blocks(entry_of(tiny_model_dir), volume(), tmp_path / "l.zarr",
                                   PredictSettings(norm=LEGACY), (0.5, 0.4), CORE,
                                   margin=MARGIN, refine=False, polarity="bright")
    next(job), next(job)
    job.close()
    with pytest.raises(ValueError, match="interrupted run with other settings"):
        run_blocks(tiny_model_dir, volume() // 2, tmp_path / "l.zarr")
    with pytest.raises(ValueError, match="interrupted run with other settings"):
        run_blocks(tiny_model_dir, volume(), tmp_path / "l.zarr", refine=True)
    run_blocks(tiny_model_dir, volume(), tmp_path / "done.zarr")
    with pytest.raises(ValueError, match="already exists"):
        run_blocks(tiny_model_dir, volume(), tmp_path / "done.zarr")


# ------------------------------------------------------- outline refinement, block-wise
REFINE_SHAPE = (32, 80, 80)
REFINE_CORE = (16, 20, 20)
REFINE_MARGIN = (10, 10, 10)  # twice the spheres' largest radius


def crowded_spheres(n_rays: int) -> BlockObjects:
    """Spheres (radius 3-5) centred on and next to every core border, some touching or
    overlapping (owned by different blocks), and a few anywhere; distinct probabilities."""
    rng = np.random.default_rng(4)
    centres = [(z + rng.uniform(-1.5, 1.5), y + rng.uniform(-2, 2), x + rng.uniform(-2, 2))
               for z in (8, 16, 24) for y in (20, 40, 60) for x in (20, 40, 60)]
    centres += list(rng.uniform((3, 3, 3), np.array(REFINE_SHAPE) - 3, (12, 3)))
    points = np.array(centres, float)
    radii = rng.uniform(3.0, 5.0, len(points))
    dist = np.repeat(radii[:, None], n_rays, axis=1).astype(np.float32)
    prob = rng.permutation(np.linspace(0.3, 0.95, len(points))).astype(np.float32)
    return BlockObjects(points, dist, prob)


def test_refined_block_labels_equal_refined_whole_volume_labels(tiny_model_dir, fake_network,
                                                                 rays, tmp_path):
    """Block-wise refinement (context, owners two blocks away, the whole volume's intensity
    bounds) gives exactly the outlines refining the whole volume at once gives."""
    from scipy import ndimage as ndi
    from stardist.lib.stardist3d import c_polyhedron_to_label

    from napari_anystar.model.block_render import RefineSpec, render_ring
    from napari_anystar.model.object_size import TRAINING_DIAMETER
    from napari_anystar.model.refine import OutlineRefiner

    truth, _ = fake_network
    spheres = crowded_spheres(rays.vertices.shape[0])
    truth["spheres"] = spheres
    order = np.argsort(-spheres.prob)
    render = [spheres.points[order].astype(np.float32), rays.vertices, rays.faces,
              np.arange(1, len(order) + 1, dtype=np.int32), np.int32(0), np.int32(0),
              np.int32(0), np.int32(0), REFINE_SHAPE]
    polyhedra = c_polyhedron_to_label(spheres.dist[order], *render)
    # the image's objects are larger than the polyhedra, with their own brightness
    bright = c_polyhedron_to_label(spheres.dist[order] * 1.3, *render)
    level = np.random.default_rng(5).uniform(0.5, 1.0, len(order) + 1)
    level[0] = 0
    image = ndi.gaussian_filter(level[bright], 1.0)
    image += np.random.default_rng(6).normal(0, 0.05, REFINE_SHAPE)
    image = (image * 1000 + 200).astype(np.uint16)
    reference = OutlineRefiner(image, (TRAINING_DIAMETER,) * 3)(polyhedra)
    assert np.count_nonzero(reference != polyhedra) > 1000  # refinement changes outlines

    out = tmp_path / "r.zarr"
    _, result = run_blocks(tiny_model_dir, image, out, REFINE_CORE, margin=REFINE_MARGIN,
                           refine=True)
    labels = zarr.open(str(out), mode="r")[:]
    assert result.refined and result.n_blocks == 32
    assert result.n_objects == len(spheres) == len(np.unique(labels)) - 1
    assert same_partition(labels, reference)  # exactly, none cut or doubled
    straddling = [i for i in range(1, labels.max() + 1)
                  if len(set(result.grid.owner(np.argwhere(labels == i).astype(float)))) > 1]
    assert len(straddling) >= 20
    attrs = zarr.open(str(out), mode="r").attrs["anystar"]
    assert attrs["refined"] and attrs["refine"]["bounds"][0] == float(image.min())
    spec = RefineSpec(*(tuple(attrs["refine"][k]) for k in ("diameter", "bounds", "context")))
    assert spec.context == (52, 52, 52) and render_ring(result.grid, spec) == (4, 4, 4)
    _, plain = run_blocks(tiny_model_dir, image, tmp_path / "p.zarr", REFINE_CORE,
                          margin=REFINE_MARGIN)
    assert not plain.refined
    assert same_partition(zarr.open(str(tmp_path / "p.zarr"), mode="r")[:], polyhedra)


def test_cli_block_mode_refines_unless_told_not_to(tiny_model_dir, tmp_path, capsys):
    from test_cli_segment import run_cli

    tifffile.imwrite(tmp_path / "v.tif", gaussian_blobs())
    for extra, refined in (([], True), (["--no-refine"], False)):
        out = tmp_path / f"{refined}.zarr"
        code, _, err = run_cli(capsys, str(tmp_path / "v.tif"), "--out", str(out), "--model",
                               str(tiny_model_dir), "--block-size", "16", "--scale", "1",
                               "--prob-thresh", "0.9", "--workers", "0", *extra)
        assert code == 0, err
        assert zarr.open(str(out), mode="r").attrs["anystar"]["refined"] is refined
        assert not any("refine" in line for line in err), err


# ------------------------------------------------------------------------ inputs
def test_sources_are_read_lazily_in_zyx(tmp_path):
    image = volume()
    tifffile.imwrite(tmp_path / "raw.tif", image)
    tifffile.imwrite(tmp_path / "packed.tif", image, compression="zlib")
    nib.save(nib.Nifti1Image(image.T, np.eye(4)), tmp_path / "v.nii.gz")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=SHAPE, dtype="uint16")[:] = image
    box = (slice(3, 9), slice(0, 40, 3), slice(10, 12))
    raw = open_source(tmp_path / "raw.tif")
    assert isinstance(raw, np.memmap)
    for name in ("raw.tif", "packed.tif", "v.nii.gz", "g.zarr"):
        source = open_source(tmp_path / name)
        assert tuple(source.shape) == SHAPE, name
        assert np.array_equal(np.asarray(source[box]), image[box]), name
    group.create_array("other", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(ValueError, match="2 arrays"):
        open_source(tmp_path / "g.zarr")
    with pytest.raises(ValueError, match="unsupported"):
        open_source(tmp_path / "v.png")


def test_whole_volume_normalisation_equals_csbdeep_and_subsamples_large_volumes():
    from csbdeep.data import PercentileNormalizer

    image = volume().astype(np.float32) * 3
    fixed = sample_bounds(image, LEGACY)
    reference = PercentileNormalizer(LEGACY.low, LEGACY.high).before(image, "ZYX")
    assert np.array_equal(fixed.csbdeep().before(image, "ZYX"), reference)
    assert np.array_equal(fixed.csbdeep().before(image[:5], "ZYX"), reference[:5])
    strided = sample_bounds(image, LEGACY, max_samples=SHAPE[0] * SHAPE[1] * SHAPE[2] // 8)
    assert isinstance(strided, FixedBounds) and strided.lo == pytest.approx(fixed.lo, abs=30)
    with pytest.raises(ValueError, match="constant"):
        sample_bounds(np.zeros(SHAPE), LEGACY)


# ------------------------------------------------------------------------ executors
def test_a_bad_scheduler_address_is_one_clear_line():
    with pytest.raises(ValueError, match="cannot connect to the Dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(ValueError, match="workers must be 0 or more"), block_executor(-1):
        pass
    with block_executor(0) as executor:
        assert isinstance(executor, InlineExecutor)


def test_workers_default_to_a_local_cluster_beyond_one_block(monkeypatch, tmp_path):
    from napari_anystar._cli.segment_big import _workers, wanted

    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert auto_workers(1) == 0 and auto_workers(2) == 2
    tifffile.imwrite(tmp_path / "v.tif", volume())
    auto = argparse.Namespace(inputs=[str(tmp_path / "v.tif")], out="l.tif", block_size=None,
                              workers=None, scheduler=None)
    assert not wanted(auto)  # a plain TIFF stays on the normal path
    assert not wanted(argparse.Namespace(**{**vars(auto), "workers": 0}))
    assert wanted(argparse.Namespace(**{**vars(auto), "workers": 2}))
    single = [tmp_path / "v.tif"]
    assert _workers(auto, single, None, None) == 0  # one block: this process
    assert _workers(auto, single, CORE, None) == 2  # 27 blocks
    assert _workers(auto, single, None, (8.0, 8.0, 8.0)) == 2  # cores of 16 at scale 8
    assert _workers(auto, single * 2, None, None) == 2  # two volumes
    assert _workers(argparse.Namespace(**{**vars(auto), "workers": 0}), single, CORE,
                    None) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert auto_workers(9) == 1


# ------------------------------------------------------------------ the real network
def blobs(shape, n, seed) -> tuple[np.ndarray, np.ndarray]:
    """Bright blurred spheres (radius 4-6) on noise, some centred on core borders."""
    from scipy import ndimage as ndi

    from napari_anystar.synth.labels import spheres_label_map

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n, 3)) * np.array(shape)
    centres[: n // 3, 2] = shape[2] / 2 + rng.uniform(-1, 1, n // 3)
    radii = rng.uniform(4.0, 6.0, n)
    truth = spheres_label_map(shape, centres.astype(np.float32), radii.astype(np.float32),
                              np.zeros(shape, np.float32), 5.0)
    image = ndi.gaussian_filter((truth > 0) * 1.0, 1.0) + rng.normal(0, 0.05, shape)
    return (image * 1000 + 200).astype(np.uint16), truth


@pytest.mark.slow
@pytest.mark.bundled_model
@pytest.mark.parametrize("refine", [False, True])
def test_bundled_model_block_labels_match_whole_volume_labels(tmp_path, refine):
    from napari_anystar._generators import result_of
    from napari_anystar.analysis import pooled_scores
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.object_size import training_diameter
    from napari_anystar.model.predict import predict_network
    from napari_anystar.model.refine import OutlineRefiner

    entry = registry.default_model()
    model = registry.load_model(entry)
    prob, nms = registry.model_thresholds(entry)
    image, _ = blobs((32, 64, 96), 45, seed=3)
    settings = PredictSettings(norm=model.anystar_normalization)
    whole = InstanceSolver(result_of(predict_network(model, image, settings)), model)
    reference = whole.labels(prob, nms)
    if refine:
        reference = OutlineRefiner.at_scale(image, None, training_diameter(model))(reference)
    _, result = drain(blockwise.segment_blocks(entry, image, tmp_path / "l.zarr", settings,
                                               (prob, nms), (32, 32, 48), margin=(24, 24, 24),
                                               refine=refine))
    labels = zarr.open(str(tmp_path / "l.zarr"), mode="r")[:]
    assert result.n_blocks == 4 and reference.max() >= 20
    scores = pooled_scores([reference], [labels], iou_thresholds=(0.9,))
    assert scores.recall[0] >= 0.95 and scores.precision[0] >= 0.95
    assert len(np.unique(labels)) - 1 == result.n_objects
    assert abs(result.n_objects - reference.max()) <= 1


@pytest.mark.slow
def test_a_local_dask_worker_gives_the_same_labels(tiny_model_dir, tmp_path):
    image, _ = blobs((24, 32, 40), 8, seed=5)
    entry = entry_of(tiny_model_dir)
    model = registry.load_model(entry)
    prob = float(np.quantile(model.predict(LEGACY.apply(image))[0], 0.995))
    args = (PredictSettings(norm=LEGACY), (prob, 0.35), (12, 16, 20))
    _, inline = drain(blockwise.segment_blocks(entry, image, tmp_path / "a.zarr", *args,
                                               margin=(8, 8, 8)))
    with block_executor(workers=1) as executor:
        _, dask = drain(blockwise.segment_blocks(entry, image, tmp_path / "b.zarr", *args,
                                                 margin=(8, 8, 8), executor=executor))
    assert inline.n_objects == dask.n_objects > 0
    assert np.array_equal(zarr.open(str(tmp_path / "a.zarr"), mode="r")[:],
                          zarr.open(str(tmp_path / "b.zarr"), mode="r")[:])


def test_auto_polarity_is_decided_on_the_centre_crop_and_kept_on_resume(
        tiny_model_dir, fake_network, rays, tmp_path, monkeypatch):
    """*auto*: the crop's objects decide; dark ones negate the volume (its normalisation
    bounds too), and a resumed run keeps the recorded decision without asking again."""
    truth, _ = fake_network
    truth["spheres"] = BlockObjects.empty(rays.vertices.shape[0])
    asked = []

    def dark(entry, crop, settings, thresholds):
        asked.append(settings.invert)
        return 0.1 if settings.invert else -0.1  # dark as given, bright negated

    monkeypatch.setattr(blockwise, "crop_contrast_task", dark)
    image = volume()
    job = blockwise.segment_blocks(entry_of(tiny_model_dir), image, tmp_path / "d.zarr",
                                   PredictSettings(norm=LEGACY), (0.5, 0.4), CORE,
                                   margin=MARGIN, refine=True)
    next(job), next(job)
    job.close()
    assert asked == [False, True]  # the volume as given, then negated
    run_blocks(tiny_model_dir, image, tmp_path / "d.zarr", refine=True, polarity="auto")
    assert asked == [False, True]  # resumed: the recorded decision
    attrs = zarr.open(str(tmp_path / "d.zarr"), mode="r").attrs["anystar"]
    assert attrs["invert"] and attrs["polarity"] == "auto"
    low, high = np.percentile(-image.astype(np.float32), (LEGACY.low, LEGACY.high))
    assert attrs["bounds"] == pytest.approx([low, high])  # of the negated volume
    assert attrs["refine"]["bounds"][0] == -float(image.max())
    run_blocks(tiny_model_dir, image, tmp_path / "b.zarr", polarity="bright")
    plain = zarr.open(str(tmp_path / "b.zarr"), mode="r").attrs["anystar"]
    assert not plain["invert"] and asked == [False, True]
    assert plain["bounds"] == pytest.approx(np.percentile(image, (LEGACY.low, LEGACY.high)))


@pytest.mark.parametrize("measured, negated", [((float("nan"), 0.3), True),
                                               ((float("nan"), -0.3), False),
                                               ((-0.2, -0.1), False),
                                               ((0.2,), False)])
def test_auto_polarity_on_a_crop_keeps_a_negation_whose_objects_are_bright(
        tiny_model_dir, fake_network, rays, tmp_path, monkeypatch, measured, negated):
    truth, _ = fake_network
    truth["spheres"] = BlockObjects.empty(rays.vertices.shape[0])
    answers, asked = list(measured), []

    def contrast(entry, crop, settings, thresholds):
        asked.append(settings.invert)
        return answers.pop(0)

    monkeypatch.setattr(blockwise, "crop_contrast_task", contrast)
    _, result = run_blocks(tiny_model_dir, volume(), tmp_path / "n.zarr", polarity="auto")
    assert asked == [False, True][:len(measured)] and answers == []
    assert result.settings.invert == negated
