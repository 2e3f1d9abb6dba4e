"""Per-pair pieces of StarDist's 3D NMS (stardist 0.9.x, lib/stardist3d_impl.cpp), kept apart.

StarDist decides whether a kept polyhedron i suppresses a later one j with a cascade:
(1) upper bound ``min(ellipsoid, bbox)`` overlap <= t -> keep, (2) inner-ellipsoid lower bound
> t -> suppress, (3) kernel intersection (Qhull) > t -> suppress, (4) convex-hull intersection
<= t -> keep, (5) rendered voxel overlap > t -> suppress; overlaps divided by the smaller
polyhedron volume. (1) and (2) use an anisotropy averaged over all candidates, so they are
recomputed per threshold pair here with the same float32 arithmetic as the C code. (3)-(5) do
not depend on the other candidates: their outcome is cached per pair, settled by certified
bounds where possible (a scaled copy of a polyhedron inside both kernels proves (3); a bound
on every overlap from the vertex boxes proves "keep"), else by Qhull volumes (SciPy) when they
are clearly away from the threshold, else by StarDist's own C routine on the pair alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

F = np.float32
PI = np.pi
#: relative distance to the threshold below which our Qhull volumes are not trusted
EPS = 1e-4
#: candidates whose unit kernel halfspaces are kept (the cache restarts when full)
UNIT_CACHE_SIZE = 50_000


class Geometry:
    """Per-candidate quantities, float32 as in StarDist's C code (computed on first use)."""

    def __init__(self, dist: np.ndarray, points: np.ndarray, verts: np.ndarray,
                 faces: np.ndarray) -> None:
        self.dist = np.ascontiguousarray(dist, F)
        self.points = np.ascontiguousarray(points, F)
        self.verts = np.ascontiguousarray(verts, F)
        self.faces = np.ascontiguousarray(faces, np.int32)
        n, r = self.dist.shape
        self.radius_outer = np.fmax.reduce(self.dist, axis=1, initial=F(0))
        self.dv = np.empty((n, r, 3), F)           # dist * vert (float32 products)
        self.polyverts = np.empty((n, r, 3), F)    # absolute polyhedron vertices
        self.bbox = np.empty((n, 6), np.int64)
        self.volume = np.empty(n, F)
        self._done = np.zeros(n, bool)

    def ensure(self, idx: np.ndarray) -> None:
        """Compute vertices, bounding boxes and volumes of these candidates if not done yet."""
        idx = idx[~self._done[idx]]
        if not len(idx):
            return
        dv = self.dist[idx][:, :, None] * self.verts[None]
        pv = self.points[idx][:, None, :] + dv
        r = np.rint(pv).astype(np.int64)
        lo, hi = r.min(axis=1), np.maximum(r.max(axis=1), -1)
        self.dv[idx], self.polyverts[idx] = dv, pv
        self.bbox[idx] = np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1], lo[:, 2], hi[:, 2]], 1)
        vol = np.zeros(len(idx), F)
        for ia, ib, ic in self.faces:
            a, b, c = dv[:, ia], dv[:, ib], dv[:, ic]
            vol = vol + _det(b - a, c - a, -a) / F(6)
        self.volume[idx] = vol
        self._done[idx] = True

    def anisotropy(self, order: np.ndarray) -> np.ndarray:
        """StarDist's running average of bbox extents over ``order`` (normalised, inverted)."""
        b = self.bbox[order]
        n = F(len(order))
        ext = np.stack([b[:, 1] - b[:, 0], b[:, 3] - b[:, 2], b[:, 5] - b[:, 4]], 1).astype(F)
        acc = np.add.accumulate(ext / n, axis=0, dtype=F)[-1] if len(order) else np.ones(3, F)
        tmp = max(max(acc[0], acc[1]), acc[2])
        return (F(tmp) / acc).astype(F)

    def radius_outer_iso(self, idx: np.ndarray, aniso: np.ndarray) -> np.ndarray:
        dv = (aniso[None, None, :] * self.dist[idx][:, :, None]) * self.verts[None]
        r2 = (dv[..., 0] * dv[..., 0] + dv[..., 1] * dv[..., 1]) + dv[..., 2] * dv[..., 2]
        return np.sqrt(np.fmax.reduce(r2, axis=1, initial=F(0)))

    def radius_inner_iso(self, idx: np.ndarray, aniso: np.ndarray) -> np.ndarray:
        dv = (aniso[None, None, :] * self.dist[idx][:, :, None]) * self.verts[None]
        f = self.faces
        a, b, c = dv[:, f[:, 0]], dv[:, f[:, 1]], dv[:, f[:, 2]]
        return _inner_from_normals(a, b - a, c - a)


def _det(m0: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """StarDist's 3x3 determinant with rows m0, m1, m2 (float32, same operation order)."""
    m00, m01, m02 = m0[..., 0], m0[..., 1], m0[..., 2]
    m10, m11, m12 = m1[..., 0], m1[..., 1], m1[..., 2]
    m20, m21, m22 = m2[..., 0], m2[..., 1], m2[..., 2]
    return (m00 * (m11 * m22 - m21 * m12) - m01 * (m10 * m22 - m12 * m20)
            + m02 * (m10 * m21 - m11 * m20))


def _inner_from_normals(a: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    pz, py, px = p[..., 0], p[..., 1], p[..., 2]
    qz, qy, qx = q[..., 0], q[..., 1], q[..., 2]
    nz = px * qy - py * qx
    ny = pz * qx - px * qz
    nx = py * qz - pz * qy
    s = (nz * nz + ny * ny) + nx * nx
    norm = (1.0 / (np.sqrt(s).astype(np.float64) + 1e-10)).astype(F)
    nz, ny, nx = nz * norm, ny * norm, nx * norm
    r = (a[..., 0] * nz + a[..., 1] * ny) + a[..., 2] * nx
    return np.fmin.reduce(r, axis=1, initial=F(np.inf)).astype(F)


def sphere_iso(r1, p1, r2, p2, an):
    """StarDist's ``intersect_sphere_isotropic`` for arrays of pairs (float32 result)."""
    dd = (p1 - p2) * an[None, :]
    d = np.sqrt((dd[:, 0] * dd[:, 0] + dd[:, 1] * dd[:, 1]) + dd[:, 2] * dd[:, 2])
    rmin, rmax = np.fmin(r1, r2), np.fmax(r1, r2)
    r64 = rmin.astype(np.float64)
    full = ((((PI * 4.0) / 3.0) * r64) * r64 * r64).astype(F)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = ((r1 + r2) - d) / F(2) / d
        h1 = ((r2 - r1) + d) * t
        h2 = ((r1 - r2) + d) * t
        h164, h264 = h1.astype(np.float64), h2.astype(np.float64)
        v1 = ((((PI / 3.0) * h164) * h164) * (F(3) * r1 - h1).astype(np.float64)).astype(F)
        v2 = ((((PI / 3.0) * h264) * h264) * (F(3) * r2 - h2).astype(np.float64)).astype(F)
        part = (v1 + v2) / ((an[0] * an[1]) * an[2])
    contained = rmax.astype(np.float64) >= (d + rmin).astype(np.float64) - 1e-10
    res = np.where(contained, full, part)
    return np.where(d > (r1 + r2), F(0), res).astype(F)


def bbox_inter(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    w = [np.maximum(0, np.minimum(b1[:, k + 1], b2[:, k + 1]) - np.maximum(b1[:, k], b2[:, k]))
         for k in (0, 2, 4)]
    return ((w[2].astype(F) * w[1].astype(F)) * w[0].astype(F)).astype(F)


def _iou(a: np.ndarray, amin: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) / (amin.astype(np.float64) + 1e-10))


def _polytope_volume(hsi, hs: np.ndarray, ip: np.ndarray) -> float:
    """Volume of a halfspace intersection: sum over faces of area * distance / 3."""
    pts = hsi.intersections
    inc = [(k, f) for k, fs in enumerate(hsi.dual_facets) for f in fs]
    if len(inc) < 4:
        return 0.0
    pk, fk = np.array(inc).T
    normal = hs[:, :3] / np.linalg.norm(hs[:, :3], axis=1, keepdims=True)
    faces, inv = np.unique(fk, return_inverse=True)
    n = normal[faces]
    cnt = np.bincount(inv).astype(np.float64)
    cen = np.stack([np.bincount(inv, pts[pk, d]) for d in range(3)], 1) / cnt[:, None]
    u = np.cross(n, np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(n, u)
    rel = pts[pk] - cen[inv]
    ang = np.arctan2(np.einsum("ij,ij->i", rel, v[inv]), np.einsum("ij,ij->i", rel, u[inv]))
    o = np.lexsort((ang, inv))
    inv, rel = inv[o], rel[o]
    start = np.r_[0, np.flatnonzero(np.diff(inv)) + 1]
    nxt = np.arange(len(inv)) + 1
    ends = np.r_[start[1:], len(inv)]
    nxt[ends - 1] = start
    area2 = np.einsum("ij,ij->i", np.cross(rel, rel[nxt]), n[inv])
    area = np.bincount(inv, area2) / 2
    height = -(hs[faces, :3] @ ip + hs[faces, 3]) / np.linalg.norm(hs[faces, :3], axis=1)
    return float(np.sum(area * height) / 3)


class Undecidable(Exception):
    """A pair decision that neither our values nor StarDist's pair routine can settle."""


class PairValues:
    """Per-pair kernel / convex-hull overlaps (Qhull via SciPy) and StarDist pair decisions."""

    def __init__(self, geom: Geometry) -> None:
        self.g = geom
        self._kernel: dict[tuple[int, int], float | None] = {}
        self._convex: dict[tuple[int, int], float | None] = {}
        self._oracle: dict[tuple[int, int, float], bool] = {}
        self._hull_eq: dict[int, np.ndarray] = {}
        self._lb: dict[tuple[int, int], float] = {}
        self._ub: dict[tuple[int, int], float] = {}
        self._unit: dict[int, np.ndarray] = {}
        self._hs: dict[int, np.ndarray] = {}
        self.n_qhull = 0
        self.n_oracle = 0

    # -- Qhull volumes ---------------------------------------------------------------
    def _kernel_halfspaces(self, i: int) -> np.ndarray:
        """Face halfspaces of polyhedron i, built in float32 as StarDist's ``build_halfspace``."""
        if i in self._hs:
            return self._hs[i]
        pv = self.g.polyverts[i]
        f = self.g.faces
        a, b, c = pv[f[:, 0]], pv[f[:, 1]], pv[f[:, 2]]
        p, q = b - a, c - a
        pz, py, px = p[:, 0], p[:, 1], p[:, 2]
        qz, qy, qx = q[:, 0], q[:, 1], q[:, 2]
        nz = -(py * qx - px * qy)
        ny = -(px * qz - pz * qx)
        nx = -(pz * qy - py * qz)
        off = -((a[:, 0] * nz + a[:, 1] * ny) + a[:, 2] * nx)
        hs = np.stack([nz, ny, nx, off], 1).astype(np.float64)
        if len(self._hs) > 50000:
            self._hs.clear()
        self._hs[i] = hs
        return hs

    def _convex_halfspaces(self, i: int) -> np.ndarray:
        if i not in self._hull_eq:
            from scipy.spatial import ConvexHull

            self._hull_eq[i] = ConvexHull(self.g.polyverts[i].astype(np.float64)).equations
        return self._hull_eq[i]

    @staticmethod
    def _volume(hs: np.ndarray, ip: np.ndarray) -> float | None:
        """Halfspace-intersection volume; 0.0 if ``ip`` is clearly outside, None if unsure."""
        from scipy.spatial import HalfspaceIntersection, QhullError

        norms = np.linalg.norm(hs[:, :3], axis=1)
        margin = np.max((hs[:, :3] @ ip + hs[:, 3]) / np.maximum(norms, 1e-30))
        if margin > 1e-3:
            return 0.0
        if margin > -1e-3:
            return None
        try:
            return float(np.float32(_polytope_volume(HalfspaceIntersection(hs, ip), hs, ip)))
        except (QhullError, ValueError):
            return None

    def kernel(self, i: int, j: int) -> float | None:
        key = (i, j)
        if key not in self._kernel:
            hi, hj = self._kernel_halfspaces(i), self._kernel_halfspaces(j)
            hs = np.empty((len(hi) * 2, 4))
            hs[0::2], hs[1::2] = hi, hj
            ip = 0.5 * (self.g.points[i].astype(np.float64) + self.g.points[j].astype(np.float64))
            self.n_qhull += 1
            self._kernel[key] = self._volume(hs, ip)
        return self._kernel[key]

    def convex(self, i: int, j: int) -> float | None:
        """Convex-hull overlap; ``inf`` where StarDist's Qhull call fails (treated as 1e10)."""
        key = (i, j)
        if key not in self._convex:
            hs = np.concatenate([self._convex_halfspaces(i), self._convex_halfspaces(j)])
            ip = 0.5 * (self.g.points[i].astype(np.float64) + self.g.points[j].astype(np.float64))
            self.n_qhull += 1
            v = self._volume(hs, ip)
            self._convex[key] = np.inf if v == 0.0 else v
        return self._convex[key]

    # -- StarDist's own routine on the pair alone ----------------------------------
    def oracle(self, i: int, j: int, t: np.float32) -> bool:
        """Does i suppress j at ``t`` by kernel / convex / rendering (StarDist's C code)?"""
        key = (i, j, float(t))
        if key in self._oracle:
            return self._oracle[key]
        from stardist.lib.stardist3d import c_non_max_suppression_inds

        g = self.g
        idx = np.array([i, j])
        an = g.anisotropy(idx)
        rin = g.radius_inner_iso(idx, an)
        low = sphere_iso(rin[:1], g.points[i:i + 1], rin[1:], g.points[j:j + 1], an)
        amin = np.minimum(g.volume[i:i + 1], g.volume[j:j + 1])
        if (np.fmax(0.0, _iou(low, amin)).astype(F) > t).any():
            raise Undecidable
        self.n_oracle += 1
        keep = c_non_max_suppression_inds(
            np.ascontiguousarray(g.dist[idx]), np.ascontiguousarray(g.points[idx]),
            g.verts, g.faces, np.array([1, 0], F), 0, 1, 0, F(t))
        self._oracle[key] = not bool(keep[1])
        return self._oracle[key]

    def _unit_halfspaces(self, i: int) -> np.ndarray:
        """Kernel halfspaces of i scaled to unit normals (for distances)."""
        unit = self._unit.get(i)
        if unit is None:
            if len(self._unit) >= UNIT_CACHE_SIZE:
                self._unit.clear()
            hs = self._kernel_halfspaces(i)
            unit = self._unit[i] = hs / np.linalg.norm(hs[:, :3], axis=1, keepdims=True)
        return unit

    def _scaled_copy_bound(self, i: int, j: int) -> float:
        """Lower bound of the kernel overlap: the largest copy of i (or j) scaled about its
        centre that fits in both kernels (volume lambda^3 * vol); 0.0 where Qhull could fail."""
        g = self.g
        hs = np.concatenate([self._unit_halfspaces(i), self._unit_halfspaces(j)])
        c = g.points[[i, j]].astype(np.float64)
        slack = -(c @ hs[:, :3].T + hs[:, 3])                    # (2, halfspaces)
        if slack.min() < 1e-3:
            return 0.0       # both centres strictly inside both kernels (so is their midpoint)
        best = 0.0
        for k, idx in enumerate((i, j)):
            rate = g.dv[idx].astype(np.float64) @ hs[:, :3].T     # (rays, halfspaces)
            with np.errstate(divide="ignore"):
                lam = np.where(rate > 0, slack[k][None, :] / rate, np.inf).min()
            lam = min(1.0, float(lam)) * (1 - 1e-6)
            best = max(best, lam**3 * float(g.volume[idx]))
        return best

    def _bbox_upper_bound(self, i: int, j: int) -> float:
        """Upper bound of every overlap StarDist measures (kernel, hulls, rendered voxels)."""
        pv = self.g.polyverts
        lo = np.maximum(pv[i].min(axis=0), pv[j].min(axis=0)).astype(np.float64)
        hi = np.minimum(pv[i].max(axis=0), pv[j].max(axis=0)).astype(np.float64)
        cont = float(np.prod(np.maximum(hi - lo, 0.0)))
        n_int = float(np.prod(np.maximum(np.floor(hi + 1e-3) - np.ceil(lo - 1e-3) + 1, 0.0)))
        return max(cont, n_int)

    def decide(self, i: int, j: int, t: np.float32, amin: np.float32,
               compute: bool = True) -> bool | None:
        """Stages 3-5 of StarDist's cascade for one pair: True if i suppresses j.

        With ``compute=False`` only cached values are used (None: not known yet).
        """
        tol = EPS * max(float(t), 1e-3)
        a = float(amin) + 1e-10
        ub = self._ub.get((i, j))
        if ub is None:
            if not compute:
                return None
            ub = self._ub[(i, j)] = self._bbox_upper_bound(i, j)
        if ub / a < float(t) - tol:
            return False
        lb = self._lb.get((i, j))
        if lb is None:
            if not compute:
                return None
            lb = self._lb[(i, j)] = self._scaled_copy_bound(i, j)
        if lb / a > float(t) + tol:
            return True
        if (i, j) not in self._kernel and not compute:
            return None
        k = self.kernel(i, j)
        if k is not None:
            ik = float(np.float32(_iou(np.float32(k), amin)))
            if ik > t + tol:
                return True
            if ik < t - tol:
                if (i, j) not in self._convex and not compute:
                    return None
                c = self.convex(i, j)
                if c is not None and np.isfinite(c):
                    ic = float(np.float32(_iou(np.float32(c), amin)))
                    if ic < t - tol:
                        return False
        if not compute and (i, j, float(t)) not in self._oracle:
            return None
        return self.oracle(i, j, t)


class GreedyNMS:
    """StarDist's greedy 3D NMS over a fixed candidate list, for any candidate subset/threshold.

    Candidates are the stored ones (``prob``, ``dist``, ``points`` in StarDist's order);
    :meth:`survivors` takes the indices passed to NMS and returns the kept ones, in the order
    ``non_maximum_suppression_3d_sparse`` returns them.
    """

    def __init__(self, prob: np.ndarray, dist: np.ndarray, points: np.ndarray, rays) -> None:
        from scipy.spatial import cKDTree

        self.prob = np.asarray(prob, F)
        self.geom = Geometry(dist, points, rays.vertices, rays.faces)
        self.values = PairValues(self.geom)
        self._tree = cKDTree(self.geom.points.astype(np.float64)) if len(prob) else None
        self._reach = float(self.geom.radius_outer.max()) if len(prob) else 0.0
        self._neigh: dict[int, np.ndarray] = {}
        self._iso_key: bytes | None = None

    def sort_orders(self, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order of the returned survivors, order processed by the C loop), as in StarDist."""
        first = sel[np.argsort(self.prob[sel])[::-1]]
        second = first[np.argsort(self.prob[first])[::-1]]
        return first, second

    def _neighbours(self, i: int) -> np.ndarray:
        if i not in self._neigh:
            r = float(self.geom.radius_outer[i]) + self._reach + 1.0
            self._neigh[i] = np.asarray(self._tree.query_ball_point(
                self.geom.points[i].astype(np.float64), r), dtype=np.int64)
        return self._neigh[i]

    def _iso(self, idx: np.ndarray, an: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = an.tobytes()
        if key != self._iso_key:
            n = len(self.prob)
            self._rout, self._rin = np.full(n, np.nan, F), np.full(n, np.nan, F)
            self._iso_key = key
        miss = idx[np.isnan(self._rout[idx])]
        if len(miss):
            self._rout[miss] = self.geom.radius_outer_iso(miss, an)
            self._rin[miss] = self.geom.radius_inner_iso(miss, an)
        return self._rout, self._rin

    def survivors(self, sel: np.ndarray, nms_thresh: float,
                  stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        """Kept candidate indices for the candidates ``sel`` (raises Undecidable rarely).

        ``stop`` is asked before each candidate's turn; if it says yes, the pass ends there
        and returns None (the pair decisions made so far stay cached).
        """
        g, t = self.geom, F(nms_thresh)
        first, order = self.sort_orders(np.asarray(sel, np.int64))
        n = len(order)
        if n == 0:
            return first
        g.ensure(order)
        rank = np.full(len(self.prob), -1, np.int64)
        rank[order] = np.arange(n)
        an = g.anisotropy(order)
        max_dist = F(max(F(0), g.radius_outer[order].max()))
        suppressed = np.zeros(n, bool)
        # pairs whose decision needs Qhull/StarDist are settled lazily, when j's turn comes
        pending: dict[int, list] = {}
        for pos in range(n):
            if stop is not None and stop():
                return None
            if suppressed[pos]:
                continue
            if pos in pending and self._resolve(pending.pop(pos), t):
                suppressed[pos] = True
                continue
            if pos == n - 1:
                break
            i = int(order[pos])
            nb = self._neighbours(i)
            r = rank[nb]
            m = r > pos
            nb, r = nb[m], r[m]
            m = ~suppressed[r]
            nb, r = nb[m], r[m]
            if not len(nb):
                continue
            diff = g.points[i][None, :] - g.points[nb]
            d2 = (diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1]) + diff[:, 2] * diff[:, 2]
            rr = F(max_dist + g.radius_outer[i])
            m = d2 < rr * rr
            nb, r = nb[m], r[m]
            if not len(nb):
                continue
            rout, rin = self._iso(np.concatenate([[i], nb]), an)
            amin = np.minimum(g.volume[i], g.volume[nb])
            pi = np.broadcast_to(g.points[i], (len(nb), 3))
            up = np.fmin(
                sphere_iso(np.full(len(nb), rout[i], F), pi, rout[nb], g.points[nb], an),
                bbox_inter(np.broadcast_to(g.bbox[i], (len(nb), 6)), g.bbox[nb]))
            iou_up = np.fmin(1.0, _iou(up, amin)).astype(F)
            m = ~((up.astype(np.float64) < 1e-10) | (iou_up <= t))
            nb, r, amin, pi = nb[m], r[m], amin[m], pi[m]
            if not len(nb):
                continue
            low = sphere_iso(np.full(len(nb), rin[i], F), pi, rin[nb], g.points[nb], an)
            sup = np.fmax(0.0, _iou(low, amin)).astype(F) > t
            suppressed[r[sup]] = True
            for j, rj, aj in zip(nb[~sup], r[~sup], amin[~sup], strict=True):
                known = self.values.decide(i, int(j), t, aj, compute=False)
                if known:
                    suppressed[rj] = True
                elif known is None:
                    pending.setdefault(int(rj), []).append((i, int(j), aj))
        kept = np.zeros(len(self.prob), bool)
        kept[order[~suppressed]] = True
        return first[kept[first]]

    def _resolve(self, pairs: list, t: np.float32) -> bool:
        """Is j suppressed by one of these kept i? Closest first, stop at the first yes."""
        g = self.geom
        pairs = sorted(pairs, key=lambda q: float(np.sum((g.points[q[0]] - g.points[q[1]]) ** 2)))
        return any(self.values.decide(i, j, t, aj) for i, j, aj in pairs)
