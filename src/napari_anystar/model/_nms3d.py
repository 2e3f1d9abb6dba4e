"""Geometry of StarDist's 3D NMS (stardist 0.9.x, lib/stardist3d_impl.cpp), in its float32.

StarDist decides whether a kept polyhedron i suppresses a later one j with a cascade:
(1) upper bound ``min(ellipsoid, bbox)`` overlap <= t -> keep, (2) inner-ellipsoid lower bound
> t -> suppress, (3) kernel intersection (Qhull) > t -> suppress, (4) convex-hull intersection
<= t -> keep, (5) rendered voxel overlap > t -> suppress; overlaps divided by the smaller
polyhedron volume. This module holds the per-candidate quantities with the same float32
arithmetic as the C code (volumes, boxes, radii, halfspaces, the voxel test of stage 5)
and the per-pair formulas of stages 1-2; :mod:`._nms3d_pairs` decides pairs from them and
:mod:`._nms3d_greedy` runs the greedy pass.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

F = np.float32
PI = np.pi
#: relative distance to the threshold below which our polytope volumes are not trusted
EPS = 1e-4


class Undecidable(Exception):
    """A pair decision that neither our values nor StarDist's pair routine can settle."""


@functools.cache
def _openmp() -> Any:
    """The OpenMP runtime of StarDist's compiled module (None where not found)."""
    import ctypes
    import ctypes.util
    from pathlib import Path

    import stardist

    here = Path(stardist.__file__).parent
    names = [*map(str, sorted(here.parent.glob("stardist.libs/libgomp*"))),
             *filter(None, (ctypes.util.find_library(n) for n in ("gomp", "omp", "iomp5")))]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _omp_threads(n: int) -> None:
    lib = _openmp()
    if lib is not None:
        lib.omp_set_num_threads(n)


def single_thread() -> None:
    """Run StarDist's OpenMP loops that this thread starts on this thread only: they are
    per polyhedron and short, so starting threads for each costs more than they bring."""
    _omp_threads(1)


def default_threads() -> None:
    """Run StarDist's OpenMP loops that this thread starts on OpenMP's default thread count
    (``OMP_NUM_THREADS``, as a block executor sets it per worker, else every core this
    process may use): for long loops (rendering many polyhedra at once)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        _omp_threads(int(first))
        return
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    _omp_threads(len(cores) if cores else os.cpu_count() or 1)


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


class RowStore:
    """Per-candidate arrays stored compactly for the candidates that get one.

    A full ``(candidates, ...)`` array written at scattered rows would touch a fresh page per
    row, and numpy asks for transparent huge pages on large arrays: each touch then zeroes
    2 MB (about a second for one first solve on a 128^3 volume)."""

    def __init__(self, n: int, shape: tuple[int, ...], dtype) -> None:
        self.slot = np.full(n, -1, np.int64)
        self._data = np.empty((0, *shape), dtype)
        self._size = 0

    def put(self, idx: np.ndarray, rows: np.ndarray) -> None:
        """Store ``rows`` for the candidates ``idx``."""
        stop = self._size + len(idx)
        if stop > len(self._data):
            grown = np.empty((max(2 * len(self._data), stop, 256), *self._data.shape[1:]),
                             self._data.dtype)
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:stop] = rows
        self.slot[idx] = np.arange(self._size, stop)
        self._size = stop

    def __getitem__(self, idx):
        """Rows of stored candidates (an index or an index array)."""
        return self._data[self.slot[idx]]


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
        self.polyverts = RowStore(n, (r, 3), F)    # absolute polyhedron vertices
        self.bbox = np.empty((n, 6), np.int64)
        self.lo = np.empty((n, 3), F)              # vertex ranges
        self.hi = np.empty((n, 3), F)
        self.volume = np.empty(n, F)
        self._done = np.zeros(n, bool)
        self._hs = RowStore(n, (len(self.faces), 4), F)   # kernel halfspaces (float32 exact)
        self._inner = np.full(n, np.nan)
        self._hulls: dict[int, np.ndarray] = {}
        # gauge of the unit ray hull: the face a direction w falls in maximises w @ gauge
        v = self.verts.astype(np.float64)
        a, b, c = (v[self.faces[:, k]] for k in range(3))
        normal = np.cross(b - a, c - a)
        self._gauge32 = (normal / np.einsum("ij,ij->i", normal, a)[:, None]).astype(F)

    def ensure(self, idx: np.ndarray) -> None:
        """Compute vertices, bounding boxes and volumes of these candidates if not done yet."""
        idx = idx[~self._done[idx]]
        if not len(idx):
            return
        dv = self.dist[idx][:, :, None] * self.verts[None]
        pv = self.points[idx][:, None, :] + dv
        r = np.rint(pv).astype(np.int64)
        lo, hi = r.min(axis=1), np.maximum(r.max(axis=1), -1)
        self.polyverts.put(idx, pv)
        self.lo[idx], self.hi[idx] = pv.min(axis=1), pv.max(axis=1)
        self.bbox[idx] = np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1], lo[:, 2], hi[:, 2]], 1)
        f = self.faces
        a, b, c = dv[:, f[:, 0]], dv[:, f[:, 1]], dv[:, f[:, 2]]
        # summed face by face in float32, as the C loop: accumulate is sequential
        self.volume[idx] = np.add.accumulate(_det(b - a, c - a, -a) / F(6), axis=1,
                                             dtype=F)[:, -1]
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

    def kernel_halfspaces(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), faces, 4) face halfspaces, built in float32 as StarDist's
        ``build_halfspace`` (inside: ``normal . x + offset <= 0``; cached)."""
        todo = np.unique(idx[self._hs.slot[idx] < 0])
        if len(todo):
            self.ensure(todo)
            self._hs.put(todo, self._build_halfspaces(todo))
        return self._hs[idx].astype(np.float64)

    def inner_radius(self, idx: np.ndarray) -> np.ndarray:
        """Distance from each centre to its nearest face plane (float64, unscaled; cached)."""
        todo = np.unique(idx[np.isnan(self._inner[idx])])
        if len(todo):
            hs = self.kernel_halfspaces(todo)
            c = self.points[todo].astype(np.float64)
            dist = -(np.einsum("phd,pd->ph", hs[..., :3], c) + hs[..., 3])
            self._inner[todo] = (dist / np.linalg.norm(hs[..., :3], axis=-1)).min(axis=1)
        return self._inner[idx]

    def _build_halfspaces(self, idx: np.ndarray) -> np.ndarray:
        pv = self.polyverts[idx]
        f = self.faces
        a, b, c = pv[:, f[:, 0]], pv[:, f[:, 1]], pv[:, f[:, 2]]
        p, q = b - a, c - a
        pz, py, px = p[..., 0], p[..., 1], p[..., 2]
        qz, qy, qx = q[..., 0], q[..., 1], q[..., 2]
        nz = -(py * qx - px * qy)
        ny = -(px * qz - pz * qx)
        nx = -(pz * qy - py * qz)
        off = -((a[..., 0] * nz + a[..., 1] * ny) + a[..., 2] * nx)
        return np.stack([nz, ny, nx, off], -1)

    def hull_halfspaces(self, i: int) -> np.ndarray:
        """Facet equations of the convex hull of polyhedron i (Qhull, cached)."""
        eq = self._hulls.get(i)
        if eq is None:
            from scipy.spatial import ConvexHull

            eq = self._hulls[i] = ConvexHull(self.polyverts[i].astype(np.float64)).equations
        return eq

    def _voxel_test(self, i: int) -> tuple:
        """Arguments of :mod:`._nms3d_voxels`' test for polyhedron i: centre, vertices,
        reach (outer radius with margin) and each face's direction fuzz of its float32 cone
        test (vertex rounding over the face's shortest ray)."""
        self.ensure(np.array([i]))
        centre, pv = self.points[i], np.ascontiguousarray(self.polyverts[i])
        ulp = float(np.spacing(np.abs(pv).max() + np.abs(centre).max()))
        shortest = self.dist[i][self.faces].min(axis=1).astype(np.float64)
        fuzz = np.maximum(100.0 * (4.0 * ulp / np.maximum(shortest, 1e-12) + 1e-5), 1e-3)
        reach = float(self.radius_outer[i]) * (1 + 1e-5) + 1e-3
        return centre, pv, reach, fuzz

    def inside(self, i: int, vox: np.ndarray) -> np.ndarray:
        """StarDist's ``inside_polyhedron`` (float32) for polyhedron i at integer voxels
        ``vox`` (n, 3)."""
        from ._nms3d_voxels import inside_many

        return inside_many(np.ascontiguousarray(vox, np.int64), *self._voxel_test(i),
                           self.faces, self._gauge32)

    def overlap_count(self, i: int, j: int) -> int:
        """Voxels of ``bbox[i]`` inside both polyhedra (stage 5 without its early exit)."""
        from ._nms3d_voxels import count_both

        self.ensure(np.array([i, j]))
        bi, bj = self.bbox[i], self.bbox[j]
        lo = np.maximum(bi[0::2], bj[0::2])
        hi = np.minimum(bi[1::2], bj[1::2])
        if np.any(hi < lo):
            return 0
        return int(count_both(lo, hi, *self._voxel_test(i), *self._voxel_test(j), self.faces,
                              self._gauge32))


def warm_compiled() -> None:
    """Compile the NMS's numba routines (stage 5's voxel test, polytope volumes), or load
    them from numba's cache (about 2 s the first time, 0.3 s from the cache), with the
    argument types the NMS passes."""
    from stardist.rays3d import Rays_GoldenSpiral

    rays = Rays_GoldenSpiral(8)
    g = Geometry(np.full((1, 8), 2, F), np.full((1, 3), 4, F), rays.vertices, rays.faces)
    g.overlap_count(0, 0)
    g.inside(0, np.zeros((1, 3), np.int64))
    cube = np.concatenate([np.eye(3), -np.eye(3)])
    halfspace_volume(np.concatenate([cube, -np.ones((6, 1))], 1), np.zeros(3),
                     np.full(3, -2.0), np.full(3, 2.0))


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


def iou(a: np.ndarray, amin: np.ndarray) -> np.ndarray:
    """An overlap over ``A_min + 1e-10`` as the C code divides (float64, cast by callers)."""
    return np.asarray(a, np.float64) / (np.asarray(amin, np.float64) + 1e-10)


def lens_volume(r1: np.ndarray, r2: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Volume of the intersection of two balls (float64)."""
    r1, r2, d = (np.asarray(x, np.float64) for x in (r1, r2, d))
    rmin, rmax = np.minimum(r1, r2), np.maximum(r1, r2)
    with np.errstate(divide="ignore", invalid="ignore"):
        part = (PI * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2)
                / (12 * d))
    out = np.where(d <= rmax - rmin, 4.0 / 3.0 * PI * rmin**3, part)
    return np.where(d >= r1 + r2, 0.0, out)


def render_decision(count: np.ndarray, amin: np.ndarray, t: np.float32) -> np.ndarray:
    """Stage 5 at threshold ``t`` from the full overlap counts: the C loop stops at the first
    count above ``float((A_min + 1e-10) * t)`` and compares ``count / (A_min + 1e-10)``."""
    a = np.asarray(amin, np.float64) + 1e-10
    limit = (a * np.float64(t)).astype(F)
    count = np.asarray(count, np.int64)
    res = np.where(count.astype(F) > limit, np.floor(limit).astype(np.int64) + 1, count)
    return (res.astype(F).astype(np.float64) / a).astype(F) > t


def halfspace_volume(hs: np.ndarray, ip: np.ndarray, lo: np.ndarray, hi: np.ndarray
                     ) -> float | None:
    """Volume (float32) of ``{x: hs[:, :3] x + hs[:, 3] <= 0}``, a polytope inside the box
    ``lo..hi``, from interior point ``ip``; 0.0 if ``ip`` is clearly outside (StarDist's
    Qhull call fails there), None if unsure."""
    from ._nms3d_clip import clipped_volume

    norms = np.linalg.norm(hs[:, :3], axis=1)
    margin = np.max((hs[:, :3] @ ip + hs[:, 3]) / np.maximum(norms, 1e-30))
    if margin > 1e-3:
        return 0.0
    if margin > -1e-3:
        return None
    volume = clipped_volume(hs, ip, lo, hi)
    return None if np.isnan(volume) else float(np.float32(volume))
