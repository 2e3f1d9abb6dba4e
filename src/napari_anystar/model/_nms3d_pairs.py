"""Pair values of StarDist's 3D NMS that depend on neither threshold nor candidate set.

For every candidate i that is ever kept, its neighbours (bounding boxes overlapping) are
listed by decreasing ``bbi``, down to a probability floor, with cheap values: ``bbi``
(stage 1's box term, exact), ``ub`` (an upper bound of every overlap StarDist measures:
vertex boxes) and ``sph`` (an upper bound of the kernel and convex-hull overlaps: the
unscaled outer balls). Pairs that need more get a
row with, computed on demand: ``km`` (how far inside both kernels the midpoint of the centres
is: StarDist's Qhull needs it inside), ``klb`` (a lower bound of the kernel overlap: balls
inside both kernels, then the star polytope of the intersection's radial function), ``kv``
/ ``cv`` (kernel / convex-hull overlap: polytope volumes, :mod:`._nms3d_clip`) and ``cnt``
(stage 5's voxel overlap, counted exactly). All overlaps are divided by ``A_min`` as StarDist
does. A list covers the neighbours at or above its floor; a candidate set reaching below it
gets the list rebuilt with a lower floor (about twice the candidates,
:meth:`PairValues.floor_for`), its computed values kept: a first solve at a high threshold
pays only for its own neighbours.

Stages 1-2 depend on the anisotropy of the candidate set, but (math, up to float rounding
covered by ``EPS``) the inner ellipsoid overlap is at most the kernel overlap and the outer
one at least the convex-hull overlap; for sets whose anisotropy has max / min at most
``kappa_ref`` both are also bounded by overlaps of balls. So each neighbour carries
thresholds valid for all those sets (``th`` columns): suppressed for t below ``S_THR`` or, if
stage 5 says so, between ``S5_LO`` and ``S5_HI``; kept for t above ``K_THR``
(:mod:`._nms3d_decide` compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._nms3d import EPS, F, Geometry, bbox_inter, halfspace_volume, iou, lens_volume

#: directions of the radial lower bound of a kernel overlap
RADIAL_RAYS = 128
#: pairs per vectorised chunk of the radial bound (memory: chunk * rays * 2 faces * 4 bytes)
CHUNK = 48
#: midpoint margin (voxels) beyond which Qhull's answer on feasibility is trusted
MARGIN = 1e-3
#: candidates at the highest probability floor of the neighbour lists (the ladder doubles it)
FLOOR_BASE = 256
#: margin of the anisotropy ratio (max / min) the cached thresholds are made for over the
#: largest one met so far
KAPPA_MARGIN = 1.02


def above(x: np.ndarray) -> np.ndarray:
    """t below this means ``x > t + tau(t)`` (tau = EPS * max(t, 1e-3))."""
    return np.minimum(x / (1 + EPS), x - EPS * 1e-3)


def below(x: np.ndarray) -> np.ndarray:
    """t above this means ``x < t - tau(t)``."""
    return np.maximum(x / (1 - EPS), x + EPS * 1e-3)


S_THR, S5_LO, S5_HI, K_THR = range(4)


@dataclass
class Edges:
    """Neighbours of one candidate, nearest first, with their threshold-free values."""

    floor: float       # every neighbour with probability >= floor is listed
    nb: np.ndarray     # candidate indices, by decreasing stage 1 box overlap
    d2: np.ndarray     # squared centre distance (float32, as the C code's k-d tree)
    nbbi: np.ndarray   # minus the stage 1 box overlap (float32, exact; increasing)
    amin: np.ndarray   # min of both volumes (float32)
    ub: np.ndarray     # upper bound of every overlap
    sph: np.ndarray    # upper bound of kernel and convex-hull overlaps
    row: np.ndarray    # row of the lazily computed values (-1: none yet)
    th: np.ndarray     # (n, 4) thresholds S_THR, S5_LO, S5_HI, K_THR


class PairValues:
    """Threshold-free overlaps of candidate pairs, computed on demand and cached."""

    def __init__(self, geom: Geometry, prob: np.ndarray) -> None:
        from stardist.rays3d import Rays_GoldenSpiral

        self.g = geom
        self.prob = np.asarray(prob, F)
        self._descending = np.sort(self.prob)[::-1]
        self._floors: dict[float, float] = {}     # lowest -> floor_for(lowest)
        #: floor -> (k-d tree of the candidates at or above it, their indices, largest radius)
        self._trees: dict[float, tuple[Any, np.ndarray, float]] = {}
        self._edges: dict[int, Edges] = {}
        rays = Rays_GoldenSpiral(RADIAL_RAYS)
        self._dirs = rays.vertices.astype(F)
        self._dir_faces = rays.faces
        d = self._dirs.astype(np.float64)
        f = self._dir_faces
        # the signed volume of a face's tetrahedron is rho_a rho_b rho_c det(d_a, d_b, d_c) / 6
        self._dir_det = np.einsum("fd,fd->f", d[f[:, 0]], np.cross(d[f[:, 1]], d[f[:, 2]]))
        self.kappa_ref = 1.0
        self.n_rows = 0
        self.pair = np.zeros((0, 3), np.int64)  # (i, slot in edges(i), j)
        self.geo = np.zeros((0, 4))             # (ub, sph, distance, A_min) copied from edges
        self.lens = np.zeros((0, 2))            # lens_bounds at kappa_ref
        self.km = np.zeros(0)                   # midpoint margin in both kernels
        self.klb = np.zeros(0)                  # lower bound of the kernel overlap
        self.radial = np.zeros(0, bool)         # klb includes the radial bound
        self.kv = np.zeros(0, F)                # kernel overlap (NaN: not computed)
        self.kst = np.zeros(0, np.int8)         # 1 value, 2 midpoint outside (0 in C), 3 unsure
        self.cv = np.zeros(0, F)                # convex overlap (inf: StarDist's Qhull fails)
        self.cst = np.zeros(0, np.int8)         # 1 value, 2 midpoint outside, 3 unsure
        self.cnt = np.zeros(0, np.int64)        # stage 5 voxel overlap (-1: not computed)
        self.n_volumes = 0                      # kernel and convex-hull volumes computed
        self.n_oracle = 0

    # -- neighbours --------------------------------------------------------------------
    def floor_for(self, lowest: float) -> float:
        """The floor of a list that must cover probability ``lowest``: the probability of
        the first ladder count (:data:`FLOOR_BASE` candidates, doubling) at least twice the
        candidates at or above ``lowest``. Lists are rebuilt a few times, not at every
        threshold step, and there are few floors (each gets one k-d tree)."""
        if lowest not in self._floors:
            n = int(np.count_nonzero(self._descending >= F(lowest)))
            count = FLOOR_BASE
            while count < 2 * n:
                count *= 2
            self._floors[lowest] = float(self._descending[min(count, len(self._descending)) - 1])
        return self._floors[lowest]

    def edges(self, i: int, lowest: float | None = None) -> Edges:
        """Neighbours of ``i``, covering every probability >= ``lowest`` (default: what
        is listed already, else everything)."""
        e = self._edges.get(i)
        if e is None or (lowest is not None and e.floor > lowest):
            floor = -np.inf if lowest is None else self.floor_for(lowest)
            e = self._edges[i] = self._carry_over(e, self._build(i, floor))
        return e

    def _carry_over(self, old: Edges | None, new: Edges) -> Edges:
        """``new`` (a superset of ``old``) with ``old``'s rows and thresholds, the rows'
        slots moved to ``new``'s."""
        if old is None:
            return new
        order = np.argsort(new.nb, kind="stable")
        slot = order[np.searchsorted(new.nb[order], old.nb)]
        new.row[slot], new.th[slot] = old.row, old.th
        has = old.row >= 0
        self.pair[old.row[has], 1] = slot[has]
        return new

    def _tree(self, floor: float) -> tuple[Any, np.ndarray, float]:
        from scipy.spatial import cKDTree

        if floor not in self._trees:
            idx = np.flatnonzero(self.prob >= F(floor))
            reach = float(self.g.radius_outer[idx].max())
            self._trees[floor] = (cKDTree(self.g.points[idx].astype(np.float64)), idx, reach)
        return self._trees[floor]

    def _build(self, i: int, floor: float) -> Edges:
        g = self.g
        tree, idx, reach = self._tree(floor)
        r = float(g.radius_outer[i]) + reach + 1.0
        nb = idx[np.asarray(tree.query_ball_point(g.points[i].astype(np.float64), r),
                            dtype=np.int64)]
        nb = nb[nb != i]
        # bounding boxes overlap only where the centres are within both outer radii on every
        # axis (plus rounding): the rest is dropped before computing its geometry
        gap = np.abs(g.points[nb] - g.points[i]) - (g.radius_outer[nb] + g.radius_outer[i])[:, None]
        nb = nb[np.all(gap < 2.0, axis=1)]
        g.ensure(np.concatenate([[i], nb]))
        bb = bbox_inter(np.broadcast_to(g.bbox[i], (len(nb), 6)), g.bbox[nb])
        nb, bb = nb[bb > 0], bb[bb > 0]
        diff = g.points[i][None, :] - g.points[nb]
        d2 = (diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]) + diff[:, 2] * diff[:, 2]
        amin = np.minimum(g.volume[i], g.volume[nb])
        bbi = np.fmin(1.0, iou(bb, amin)).astype(F)
        o = np.argsort(-bbi, kind="stable")           # those with bbi > t come first
        nb, bb, d2, amin, bbi = nb[o], bb[o], d2[o], amin[o], bbi[o]
        lo, hi = np.maximum(g.lo[i], g.lo[nb]), np.minimum(g.hi[i], g.hi[nb])
        lo, hi = lo.astype(np.float64), hi.astype(np.float64)
        cont = np.prod(np.maximum(hi - lo, 0.0), axis=1)
        n_int = np.prod(np.maximum(np.floor(hi + 1e-3) - np.ceil(lo - 1e-3) + 1, 0.0), axis=1)
        pad = 1e-4 * (1.0 + np.abs(g.points[i]).max())
        ball = lens_volume(g.radius_outer[i] + pad, g.radius_outer[nb] + pad,
                           np.sqrt(d2.astype(np.float64)))
        ub = iou(np.maximum(cont, n_int), amin) * (1 + 1e-6)
        th = np.empty((len(nb), 4))
        th[:, S_THR], th[:, S5_LO], th[:, S5_HI], th[:, K_THR] = -np.inf, np.inf, -np.inf, below(ub)
        return Edges(floor, nb, d2, -bbi, amin, ub, iou(ball, amin) * (1 + 1e-6),
                     np.full(len(nb), -1, np.int64), th)

    # -- rows of lazily computed values ----------------------------------------------------
    def rows(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        """Rows of these (i, slot) pairs, created (with their cheap bounds) if missing."""
        out = np.empty(len(pairs), np.int64)
        groups: dict[int, list[int]] = {}
        for k, (i, _) in enumerate(pairs):
            groups.setdefault(i, []).append(k)
        fresh = []
        for i, ks in groups.items():
            e = self._edges[i]
            slots = np.array([pairs[k][1] for k in ks], np.int64)
            miss = np.unique(slots[e.row[slots] < 0])
            if len(miss):
                first, stop = self.n_rows, self.n_rows + len(miss)
                if stop > len(self.kv):
                    self._grow(max(2 * len(self.kv), stop, 1024))
                e.row[miss] = np.arange(first, stop)
                self.pair[first:stop] = np.stack([np.full(len(miss), i), miss, e.nb[miss]], 1)
                self.geo[first:stop] = np.stack(
                    [e.ub[miss], e.sph[miss], np.sqrt(e.d2[miss].astype(np.float64)),
                     e.amin[miss]], 1)
                self.n_rows = stop
                fresh.append(np.arange(first, stop))
            out[ks] = e.row[slots]
        if fresh:
            self._margins(np.concatenate(fresh))
        return out

    def _grow(self, cap: int) -> None:
        def grown(a: np.ndarray, fill) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, a.dtype)
            out[:len(a)] = a
            return out

        self.pair, self.geo = grown(self.pair, 0), grown(self.geo, np.nan)
        self.lens = grown(self.lens, np.nan)
        self.km, self.klb = grown(self.km, np.nan), grown(self.klb, np.nan)
        self.radial = grown(self.radial, False)
        self.kv, self.cv = grown(self.kv, np.nan), grown(self.cv, np.nan)
        self.kst, self.cst = grown(self.kst, 0), grown(self.cst, 0)
        self.cnt = grown(self.cnt, -1)

    def _margins(self, rows: np.ndarray) -> None:
        """Midpoint margins and the ball lower bounds (balls around the midpoint and both
        centres inside both kernels) of new rows."""
        g = self.g
        ii, jj = self.pair[rows, 0], self.pair[rows, 2]
        radii = np.full((3, len(rows)), np.inf)
        for k in range(0, len(rows), 4 * CHUNK):
            sl = slice(k, k + 4 * CHUNK)
            hs = np.concatenate([g.kernel_halfspaces(ii[sl]), g.kernel_halfspaces(jj[sl])],
                                axis=1)
            norms = np.linalg.norm(hs[..., :3], axis=-1)
            pi, pj = g.points[ii[sl]].astype(np.float64), g.points[jj[sl]].astype(np.float64)
            for n, x in enumerate((0.5 * (pi + pj), pi, pj)):
                dist = -(np.einsum("phd,pd->ph", hs[..., :3], x) + hs[..., 3]) / norms
                radii[n, sl] = dist.min(axis=1)
        self.km[rows] = radii[0]
        self.lens[rows] = np.stack(self.lens_bounds(rows, self.kappa_ref), 1)
        r = np.maximum(radii.max(axis=0), 0.0)
        vol = np.where(radii[0] > MARGIN, 4.0 / 3.0 * np.pi * r**3, 0.0)
        self.klb[rows] = iou(vol * (1 - 1e-6), self.geo[rows, 3])
        self.refresh(rows)

    def ensure_radial(self, pairs: list[tuple[int, int]], t: np.float32) -> None:
        """Radial lower bounds of these (i, slot) pairs where the cheaper ones leave stage 3
        open at ``t`` (vectorised)."""
        rows = self.rows(pairs)
        todo = rows[~self.radial[rows] & (self.km[rows] > MARGIN)
                    & (self.klb[rows] <= float(t) * (1 + EPS) + EPS * 1e-3)]
        if not len(todo):
            return
        todo = np.unique(todo)
        vol = np.zeros(len(todo))
        for k in range(0, len(todo), CHUNK):
            vol[k:k + CHUNK] = self._radial_volume(todo[k:k + CHUNK])
        self.klb[todo] = np.maximum(self.klb[todo], iou(vol * (1 - 1e-6), self.geo[todo, 3]))
        self.radial[todo] = True
        self.refresh(todo)

    def _radial_volume(self, rows: np.ndarray) -> np.ndarray:
        """Volume of the star polytope through the kernel intersection's boundary points
        along fixed directions from the midpoint: inside the (convex) intersection."""
        g = self.g
        ii, jj = self.pair[rows, 0], self.pair[rows, 2]
        hs = np.concatenate([g.kernel_halfspaces(ii), g.kernel_halfspaces(jj)], axis=1)
        mid = 0.5 * (g.points[ii].astype(np.float64) + g.points[jj].astype(np.float64))
        # the midpoint is inside every halfspace (margin > MARGIN): along direction d the
        # boundary is at 1 / max_h (normal_h . d / slack_h); halfspaces facing away from d
        # give negative terms, never the maximum
        slack = -(np.einsum("phd,pd->ph", hs[..., :3], mid) + hs[..., 3])
        reach = (hs[..., :3] / slack[..., None]).astype(F) @ self._dirs.T  # (pairs, hs, dirs)
        # float32 rounding: the radii are shrunk well beyond its relative error
        rho = (1 - 1e-4) / reach.max(axis=1).astype(np.float64)
        a, b, c = (rho[:, self._dir_faces[:, k]] for k in range(3))
        return np.abs(((a * b) * c) @ self._dir_det) / 6.0

    def kernel(self, row: int) -> None:
        g = self.g
        i, _, j = (int(x) for x in self.pair[row])
        hs2 = g.kernel_halfspaces(np.array([i, j]))
        hs = np.empty((2 * hs2.shape[1], 4))
        hs[0::2], hs[1::2] = hs2[0], hs2[1]
        self.n_volumes += 1
        v = halfspace_volume(hs, _midpoint(g, i, j), *_box(g, i, j))
        self.kst[row] = 3 if v is None else (2 if v == 0.0 else 1)
        self.kv[row] = 0.0 if v is None else F(iou(F(v), self.geo[row, 3]))
        self.refresh(np.array([row]))

    def convex(self, row: int) -> None:
        g = self.g
        i, _, j = (int(x) for x in self.pair[row])
        hs = np.concatenate([g.hull_halfspaces(i), g.hull_halfspaces(j)])
        self.n_volumes += 1
        v = halfspace_volume(hs, _midpoint(g, i, j), *_box(g, i, j))
        self.cst[row] = 3 if v is None else (2 if v == 0.0 else 1)
        self.cv[row] = np.inf if v is None or v == 0.0 else F(iou(F(v), self.geo[row, 3]))
        self.refresh(np.array([row]))

    def count(self, row: int) -> None:
        i, _, j = (int(x) for x in self.pair[row])
        self.cnt[row] = self.g.overlap_count(i, j)
        self.refresh(np.array([row]))

    # -- thresholds ----------------------------------------------------------------------
    def set_kappa(self, kappa: float) -> None:
        """Make the thresholds valid for candidate sets with this anisotropy ratio."""
        if kappa > self.kappa_ref:
            self.kappa_ref = kappa * KAPPA_MARGIN
            rows = np.arange(self.n_rows)
            if len(rows):
                self.lens[rows] = np.stack(self.lens_bounds(rows, self.kappa_ref), 1)
            self.refresh(rows)

    def lens_bounds(self, rows: np.ndarray, kappa: float) -> tuple[np.ndarray, np.ndarray]:
        """Upper bound of the inner and lower bound of the outer ellipsoid overlap (stages
        1-2) for candidate sets whose anisotropy ratio is at most ``kappa``."""
        g = self.g
        ii, jj, d, amin = self.pair[rows, 0], self.pair[rows, 2], self.geo[rows, 2], self.geo[
            rows, 3]
        rin = kappa * (1 + 1e-5) * (g.inner_radius(np.concatenate([ii, jj])) + 1e-6)
        inner = lens_volume(rin[:len(ii)], rin[len(ii):], d) * (1 + 1e-5)
        rout = g.radius_outer.astype(np.float64) * ((1 - 1e-5) / kappa)
        outer = lens_volume(rout[ii], rout[jj], d) * (1 - 1e-5)
        return iou(inner, amin), iou(outer, amin)

    def refresh(self, rows: np.ndarray) -> None:
        """Thresholds of these rows' neighbour entries from their current values."""
        if not len(rows):
            return
        kst, cst, cnt = self.kst[rows], self.cst[rows], self.cnt[rows]
        ub, sph, _, amin = self.geo[rows].T
        kv = np.where(kst == 1, self.kv[rows], np.nan)
        cv = np.where(cst == 1, self.cv[rows], np.nan)
        inner, outer = self.lens[rows].T
        best = np.fmax(self.klb[rows], kv)
        cap = np.fmin(np.fmin(np.minimum(ub, sph), np.fmin(kv, cv)), inner)
        floor = np.fmax(np.fmax(self.klb[rows], np.fmax(kv, cv)), outer)
        k_false = np.where(kst == 1, below(kv), np.where(kst == 2, -np.inf, np.inf))
        k_false = np.minimum(k_false, below(np.minimum(ub, sph)))  # StarDist's value <= bounds
        a1 = amin + 1e-10
        # stage 5 can say yes only below cnt / A (slack for rounding), says no above
        r_true = np.where(cnt >= 0, cnt / a1 * (1 + 1e-6), -np.inf)
        r_false = np.where(cnt >= 0, cnt / a1 * (1 + 1e-6), np.inf)
        c_true = np.where(cst == 1, above(cv), np.where(cst == 2, np.inf, -np.inf))
        c_false = np.where(cst == 1, below(cv), np.inf)
        k_thr = np.minimum(below(ub), np.where(self.km[rows] > MARGIN, below(sph), np.inf))
        k_thr = np.fmin(k_thr, c_false)
        k_thr = np.minimum(k_thr, np.maximum(np.maximum(k_false, np.minimum(r_false, c_false)),
                                             below(cap)))
        s_thr = np.where(best > 0, above(best), -np.inf)
        s5_hi = np.minimum(np.minimum(c_true, r_true), above(floor))
        ii, ss = self.pair[rows, 0], self.pair[rows, 1]
        th = np.stack([s_thr, k_false, s5_hi, k_thr], 1)
        if len(rows) == 1:
            self._edges[int(ii[0])].th[ss[0]] = th[0]
            return
        o = np.argsort(ii, kind="stable")
        ii, ss, th = ii[o], ss[o], th[o]
        cut = np.flatnonzero(np.diff(ii)) + 1
        for a, b in zip(np.r_[0, cut].tolist(), np.r_[cut, len(ii)].tolist(), strict=True):
            self._edges[int(ii[a])].th[ss[a:b]] = th[a:b]


def _box(g: Geometry, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """A box holding both polyhedra's common part (their vertex ranges, one voxel wider)."""
    lo = np.maximum(g.lo[i], g.lo[j]).astype(np.float64) - 1.0
    return lo, np.minimum(g.hi[i], g.hi[j]).astype(np.float64) + 1.0


def _midpoint(g: Geometry, i: int, j: int) -> np.ndarray:
    return 0.5 * (g.points[i].astype(np.float64) + g.points[j].astype(np.float64))
