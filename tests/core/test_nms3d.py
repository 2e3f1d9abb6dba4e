"""The cached-overlap NMS (_nms3d*) keeps exactly the candidates StarDist's 3D NMS keeps."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.model import _nms3d_decide, _nms3d_pairs
from napari_anystar.model._nms3d import (
    F,
    Geometry,
    RowStore,
    Undecidable,
    halfspace_volume,
    render_decision,
)
from napari_anystar.model._nms3d_greedy import GreedyNMS

# (probability, NMS) over the sliders' range (probability 0.05-0.95, NMS 0.1-0.6) and two edge
# values, in a scrambled order: values cached at one pair are reused at others
GRID = [(0.5, 0.35), (0.5, 0.1), (0.2, 0.35), (0.5, 0.6), (0.2, 0.1), (0.95, 0.35), (0.2, 0.6),
        (0.8, 0.45), (0.5, 0.35), (0.05, 0.1), (0.95, 0.6), (0.05, 0.35), (0.2, 0.45),
        (0.05, 0.6), (0.95, 0.1), (0.35, 0.0), (0.2, 0.05)]


def _rays(n: int = 32):
    from stardist.rays3d import Rays_GoldenSpiral

    return Rays_GoldenSpiral(n)


def _candidates(seed: int, n: int = 260, box: int = 36, stretch: float = 1.0):
    """Overlapping, irregular star polyhedra (some with tied probabilities); ``stretch``
    lengthens them along z (an anisotropy far from 1 in StarDist's NMS)."""
    rng = np.random.default_rng(seed)
    rays = _rays()
    points = rng.integers(0, box, (n, 3)) * np.array([max(1, round(stretch)), 1, 1])
    base = rng.uniform(1.5, 5.0, (n, 1))
    shape = np.clip(1 + 0.3 * rng.standard_normal((n, len(rays.vertices))), 0.2, None)
    axis = np.sqrt((rays.vertices[:, 0] * stretch) ** 2 + rays.vertices[:, 1] ** 2
                   + rays.vertices[:, 2] ** 2)
    dist = (base * shape * axis[None]).astype(np.float32)
    prob = rng.random(n).astype(np.float32)
    prob[rng.choice(n, n // 10, replace=False)] = prob[0]          # ties in the order
    return prob, dist, points.astype(np.int64), rays


def _stardist(prob, dist, points, rays, sel, t):
    from stardist.nms import non_maximum_suppression_3d_sparse

    inds = non_maximum_suppression_3d_sparse(dist[sel], prob[sel], points[sel], rays,
                                             nms_thresh=t)[-1]
    return sel[inds]


@pytest.mark.parametrize("seed,stretch", [(0, 1.0), (1, 2.5)])
def test_survivors_identical_to_stardist_on_a_threshold_grid(seed, stretch):
    prob, dist, points, rays = _candidates(seed, stretch=stretch)
    nms = GreedyNMS(prob, dist, points, rays)
    kept_counts = set()
    for p, t in GRID:
        sel = np.flatnonzero(prob > np.float32(p))
        ours = nms.survivors(sel, t)
        ref = _stardist(prob, dist, points, rays, sel, t)
        assert np.array_equal(ours, ref), (p, t)
        kept_counts.add(len(ours))
    values = nms.values
    assert len(kept_counts) > 5                          # the thresholds matter
    assert values.n_rows > 100 and values.n_volumes > 0    # pairs went past the cheap bounds
    assert np.count_nonzero(values.cnt[:values.n_rows] >= 0) > 0   # and to stage 5


def test_neighbour_lists_rebuilt_lower_keep_their_values_and_stardists_answers(monkeypatch):
    """With a short floor ladder the lists start high and are rebuilt lower as the grid
    reaches lower thresholds; every cached pair value stays attached to its pair."""
    monkeypatch.setattr(_nms3d_pairs, "FLOOR_BASE", 4)
    prob, dist, points, rays = _candidates(0)
    nms = GreedyNMS(prob, dist, points, rays)
    floors = set()
    for p, t in [(0.95, 0.35), (0.8, 0.35), (0.65, 0.35), *GRID]:
        sel = np.flatnonzero(prob > np.float32(p))
        assert np.array_equal(nms.survivors(sel, t), _stardist(prob, dist, points, rays, sel, t))
        floors |= {e.floor for e in nms.values._edges.values()}
    values = nms.values
    assert len(floors) >= 3 and len(values._trees) >= 3           # lists were rebuilt lower
    assert min(floors) <= prob.min() and max(floors) > 0.5        # from high to everything
    for row in range(values.n_rows):                                # rows follow their pairs
        i, slot, j = values.pair[row]
        e = values._edges[int(i)]
        assert e.nb[slot] == j and e.row[slot] == row


def test_survivors_identical_when_every_value_is_near_the_threshold(monkeypatch):
    """A huge tolerance sends most pairs to the exact stage 1-2 path and StarDist's own pair
    routine (where that cannot settle a pair, Undecidable is the expected answer)."""
    monkeypatch.setattr(_nms3d_pairs, "EPS", 0.2)
    monkeypatch.setattr(_nms3d_decide, "EPS", 0.2)
    prob, dist, points, rays = _candidates(2)
    nms = GreedyNMS(prob, dist, points, rays)
    checked = 0
    for p, t in GRID[:8]:
        sel = np.flatnonzero(prob > np.float32(p))
        try:
            ours = nms.survivors(sel, t)
        except Undecidable:
            continue
        assert np.array_equal(ours, _stardist(prob, dist, points, rays, sel, t)), (p, t)
        checked += 1
    assert checked >= 5 and nms.values.n_oracle > 0


def test_interrupted_pass_resumes_with_the_same_result():
    prob, dist, points, rays = _candidates(3)
    sel = np.flatnonzero(prob > np.float32(0.2))
    nms = GreedyNMS(prob, dist, points, rays)
    asked = iter(range(1000))
    assert nms.survivors(sel, 0.3, stop=lambda: next(asked) == 20) is None
    assert np.array_equal(nms.survivors(sel, 0.3), _stardist(prob, dist, points, rays, sel, 0.3))


def test_empty_and_single_selections():
    prob, dist, points, rays = _candidates(4, n=30)
    nms = GreedyNMS(prob, dist, points, rays)
    assert len(nms.survivors(np.array([], np.int64), 0.3)) == 0
    assert nms.survivors(np.array([7]), 0.3).tolist() == [7]


def test_rendering_threads_follow_openmps_default(monkeypatch):
    """Long StarDist loops get OpenMP's default thread count: ``OMP_NUM_THREADS`` where set
    (a block executor's share per worker), else the cores this process may use."""
    import os

    from napari_anystar.model import _nms3d

    calls = []

    class Lib:
        def omp_set_num_threads(self, n):
            calls.append(n)

    monkeypatch.setattr(_nms3d, "_openmp", lambda: Lib())
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _nms3d.default_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")
    _nms3d.default_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    _nms3d.default_threads()
    _nms3d.single_thread()
    assert calls == [3, 2, len(os.sched_getaffinity(0)), 1]


def test_row_store_keeps_rows_across_growth():
    store = RowStore(10_000, (3, 2), F)
    rng = np.random.default_rng(0)
    idx = rng.permutation(10_000)[:700]
    rows = rng.random((700, 3, 2)).astype(F)
    for a in range(0, 700, 70):                     # several growths
        store.put(idx[a:a + 70], rows[a:a + 70])
    assert np.array_equal(store[idx], rows)
    assert np.array_equal(store[int(idx[5])], rows[5])
    assert np.count_nonzero(store.slot >= 0) == 700


def test_geometry_stores_only_the_candidates_it_computes():
    """Per-candidate vertices and halfspaces take room for the candidates used, not for all
    stored ones (a large array touched sparsely costs a zeroed huge page per touch)."""
    rng = np.random.default_rng(1)
    rays = _rays()
    n = 200_000
    points = rng.integers(0, 500, (n, 3))
    dist = rng.uniform(2.0, 4.0, (n, len(rays.vertices))).astype(F)
    g = Geometry(dist, points, rays.vertices, rays.faces)
    idx = rng.choice(n, 50, replace=False)
    hs = g.kernel_halfspaces(idx)
    assert hs.shape == (50, len(rays.faces), 4)
    assert np.count_nonzero(g.polyverts.slot >= 0) == 50
    assert len(g.polyverts._data) < 1000 and len(g._hs._data) < 1000
    # the stored rows are the candidates' own: vertices at centre + dist * ray
    expect = points[idx][:, None, :] + dist[idx][:, :, None] * rays.vertices[None]
    assert np.allclose(g.polyverts[idx], expect, atol=1e-4)


def _spiky(seed: int, n: int, n_rays: int):
    """Irregular star polyhedra, a tenth of their rays almost zero, centred on integer,
    half and quarter voxels: voxels near the edges of their ray cones, where a face's
    float32 test can pass for a voxel whose direction lies in the next face's cone."""
    rng = np.random.default_rng(seed)
    rays = _rays(n_rays)
    # far from the origin: float32 rounding grows with the coordinates
    points = rng.integers(180, 200, (n, 3)) + rng.choice([0.0, 0.5, 0.25], (n, 3))
    dist = rng.uniform(2, 8, (n, 1)) * np.clip(1 + 0.4 * rng.standard_normal((n, n_rays)),
                                               0.01, None)
    dist[rng.random((n, n_rays)) < 0.1] *= 1e-3
    return dist.astype(F), points.astype(F), rays


def test_voxel_test_matches_stardists_renderer():
    """Stage 5's voxel test looks only at the faces whose ray cone may hold a voxel's
    direction; it equals StarDist's ``inside_polyhedron`` over all faces (its renderer)."""
    from stardist.geometry import polyhedron_to_label

    inside = 0
    # seeds whose polyhedra include such voxels (one or two in a hundred seeds)
    for seed, n_rays in ((14, 32), (35, 32), (3, 64)):
        dist, points, rays = _spiky(seed, 120, n_rays)
        dist[0] = 1e-3                              # a degenerate one: every face is tested
        g = Geometry(dist, points, rays.vertices, rays.faces)
        for i in range(len(dist)):
            g.ensure(np.array([i]))
            b = np.maximum(g.bbox[i] + np.array([-1, 1, -1, 1, -1, 1]), 0)
            vox = np.stack(np.meshgrid(*(np.arange(b[2 * k], b[2 * k + 1] + 1)
                                         for k in range(3)), indexing="ij"), -1).reshape(-1, 3)
            rendered = polyhedron_to_label(dist[i:i + 1], points[i:i + 1], rays, (216,) * 3,
                                           verbose=False)
            full = rendered[tuple(vox.T)] > 0
            assert np.array_equal(g.inside(i, vox), full), (seed, i)
            inside += int(full.sum())
    assert inside > 10000


def test_warming_compiles_what_the_nms_calls():
    """The preload compiles the NMS's numba routines for the argument types the NMS passes:
    a solve afterwards adds no compiled signature (numba would compile it then)."""
    from napari_anystar.model import _nms3d_clip, _nms3d_voxels
    from napari_anystar.model._nms3d import warm_compiled

    warm_compiled()
    compiled = {f: list(f.signatures) for f in (_nms3d_voxels.count_both,
                                                _nms3d_voxels.inside_many,
                                                _nms3d_clip._clipped_volume)}
    assert all(len(sigs) >= 1 for sigs in compiled.values())
    prob, dist, points, rays = _candidates(3)
    nms = GreedyNMS(prob, dist, points, rays)
    nms.survivors(np.flatnonzero(prob > 0.2), 0.3)
    values = nms.values
    assert values.cnt[:values.n_rows].max() > 0 and values.n_volumes > 0  # stages 3-5 ran
    nms.geom.inside(0, points[:5].astype(np.int64))
    assert {f: list(f.signatures) for f in compiled} == compiled


def test_polytope_volumes_match_qhull():
    """Kernel and convex-hull overlaps of real-looking pairs, and polytopes with corners on
    later planes (a cube cut through its corners, repeated planes), against Qhull."""
    from scipy.spatial import ConvexHull, HalfspaceIntersection

    def qhull(hs, ip):
        return ConvexHull(HalfspaceIntersection(hs, ip).intersections).volume

    prob, dist, points, rays = _candidates(4, n=120)
    g = Geometry(dist, points, rays.vertices, rays.faces)
    g.ensure(np.arange(len(prob)))
    checked = 0
    for i in range(len(prob)):
        for j in range(i + 1, len(prob)):
            ip = 0.5 * (g.points[i].astype(np.float64) + g.points[j].astype(np.float64))
            for hs in (np.concatenate(list(g.kernel_halfspaces(np.array([i, j])))),
                       np.concatenate([g.hull_halfspaces(i), g.hull_halfspaces(j)])):
                margin = np.max((hs[:, :3] @ ip + hs[:, 3]) / np.linalg.norm(hs[:, :3], axis=1))
                if margin > -1e-3:
                    continue
                lo = np.maximum(g.lo[i], g.lo[j]) - 1.0
                hi = np.minimum(g.hi[i], g.hi[j]) + 1.0
                got = halfspace_volume(hs, ip, lo, hi)
                assert got == pytest.approx(qhull(hs, ip), rel=2e-7), (i, j)
                checked += 1
    assert checked > 50
    cube = np.concatenate([np.concatenate([np.eye(3), -np.eye(3)]), -np.ones((6, 1))], 1)
    corners = np.array([[1.0, 1, 1, -2], [1.0, 1, 1, -2], [-1.0, 0, 0, -1]])  # through corners
    for hs in (cube, np.concatenate([cube, corners])):
        ip = np.full(3, -0.1)
        assert halfspace_volume(hs, ip, np.full(3, -3.0), np.full(3, 3.0)) == pytest.approx(
            qhull(hs, ip), rel=1e-7)
    assert halfspace_volume(cube, np.full(3, 5.0), np.full(3, -3.0), np.full(3, 3.0)) == 0.0


def test_render_decision_matches_the_c_loop():
    """Stage 5 stops counting at the first count above ``float((A + 1e-10) * t)``."""
    rng = np.random.default_rng(6)
    counts = rng.integers(0, 400, 3000)
    amin = rng.uniform(1, 500, 3000).astype(np.float32)
    ts = rng.choice(np.float32([0.0, 0.1, 0.3, 0.5, 0.77, 1.0]), 3000)
    expected = []
    for c, a, t in zip(counts, amin, ts, strict=True):
        a64 = np.float64(a) + 1e-10
        limit = np.float32(a64 * np.float64(t))
        res = 0
        for _ in range(int(c)):
            res += 1
            if np.float32(res) > limit:
                break
        expected.append(np.float32(np.float64(np.float32(res)) / a64) > t)
    got = np.array([render_decision(np.array([c]), np.array([a]), t)[0]
                    for c, a, t in zip(counts, amin, ts, strict=True)])
    assert np.array_equal(got, expected)
    assert 0 < got.sum() < len(got)
