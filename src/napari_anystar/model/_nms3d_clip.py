"""Volume of a bounded intersection of halfspaces, compiled (numba), in float64.

Stages 3-4 of StarDist's NMS compare kernel and convex-hull overlaps (Qhull in StarDist) with
the threshold. The polytope starts as a box known to hold it and is cut by one halfspace after
another, nearest first: each face polygon is clipped (Sutherland-Hodgman) and the corners of
the cut close it with a new face. The volume is the sum of the tetrahedra between an interior
point and the faces' fan triangles.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

#: corners a face may have (faces of these intersections have a few; more: NaN, unsure)
MAX_FACE = 48

_scratch = threading.local()


def clipped_volume(hs: np.ndarray, ip: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Volume of ``{x in box lo..hi: hs[:, :3] x + hs[:, 3] <= 0}`` (``ip`` strictly
    inside it); NaN where the polytope has a face of more than :data:`MAX_FACE` corners."""
    n = len(hs) + 6
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf[0].shape[0] < n:
        buf = _scratch.buf = (np.empty((n, MAX_FACE, 3)), np.zeros(n, np.int64),
                              np.empty((MAX_FACE, 3)), np.empty((n * MAX_FACE, 3)))
    return float(_clipped_volume(np.ascontiguousarray(hs, np.float64), np.asarray(ip, np.float64),
                                 np.asarray(lo, np.float64), np.asarray(hi, np.float64), *buf))


@numba.njit(cache=True, nogil=True)
def _clipped_volume(hs, ip, lo, hi, poly, size, tmp, cap) -> float:
    """The volume; ``poly``, ``size``, ``tmp`` and ``cap`` are scratch space (faces,
    their sizes, one face, the corners of a cut). NaN where a face or a cut outgrows its
    space."""
    n_max = poly.shape[0]
    if len(hs) + 6 > n_max:
        return np.nan
    corners = np.empty((8, 3))
    for k in range(8):
        corners[k, 0] = hi[0] if k & 1 else lo[0]
        corners[k, 1] = hi[1] if k & 2 else lo[1]
        corners[k, 2] = hi[2] if k & 4 else lo[2]
    quads = ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5))
    for f in range(6):
        for k in range(4):
            for d in range(3):
                poly[f, k, d] = corners[quads[f][k], d]
        size[f] = 4
    n = 6
    scale = max(1.0, np.max(np.abs(hi - lo)))
    tol = 1e-12 * scale
    # unit normals; nearest planes first: the polytope shrinks early, later planes mostly miss
    unit = np.empty((len(hs), 4))
    dist = np.empty(len(hs))
    for h in range(len(hs)):
        nrm = np.sqrt(hs[h, 0] ** 2 + hs[h, 1] ** 2 + hs[h, 2] ** 2)
        for d in range(4):
            unit[h, d] = hs[h, d] / nrm
        dist[h] = -(unit[h, 0] * ip[0] + unit[h, 1] * ip[1] + unit[h, 2] * ip[2] + unit[h, 3])
    order = np.argsort(dist)
    ang = np.empty(cap.shape[0])
    for oh in range(len(hs)):
        h = order[oh]
        nz, ny, nx, off = unit[h, 0], unit[h, 1], unit[h, 2], unit[h, 3]
        n_cap, cut = 0, False
        for f in range(n):
            s = size[f]
            if s == 0:
                continue
            n_out = 0
            for k in range(s):
                if nz * poly[f, k, 0] + ny * poly[f, k, 1] + nx * poly[f, k, 2] + off > tol:
                    n_out += 1
            if n_out == 0:
                # inside: kept as it is; its corners on the plane are corners of the cut
                for k in range(s):
                    da = nz * poly[f, k, 0] + ny * poly[f, k, 1] + nx * poly[f, k, 2] + off
                    if da >= -tol:
                        if n_cap >= len(cap):
                            return np.nan
                        for d in range(3):
                            cap[n_cap, d] = poly[f, k, d]
                        n_cap += 1
                continue
            cut = True
            if n_out == s:
                size[f] = 0     # outside: dropped
                continue
            c = 0
            for k in range(s):
                k2 = k + 1 if k + 1 < s else 0
                da = nz * poly[f, k, 0] + ny * poly[f, k, 1] + nx * poly[f, k, 2] + off
                db = nz * poly[f, k2, 0] + ny * poly[f, k2, 1] + nx * poly[f, k2, 2] + off
                ina, inb = da <= tol, db <= tol
                if ina:
                    if c >= MAX_FACE:
                        return np.nan
                    for d in range(3):
                        tmp[c, d] = poly[f, k, d]
                    c += 1
                    if da >= -tol:
                        if n_cap >= len(cap):
                            return np.nan
                        for d in range(3):
                            cap[n_cap, d] = poly[f, k, d]
                        n_cap += 1
                if ina != inb:
                    if c >= MAX_FACE or n_cap >= len(cap):
                        return np.nan
                    t = da / (da - db)
                    for d in range(3):
                        tmp[c, d] = poly[f, k, d] + t * (poly[f, k2, d] - poly[f, k, d])
                        cap[n_cap, d] = tmp[c, d]
                    c += 1
                    n_cap += 1
            for k in range(c):
                for d in range(3):
                    poly[f, k, d] = tmp[k, d]
            size[f] = c if c >= 3 else 0
        if not cut or n_cap < 3:
            continue        # the plane misses the polytope or only touches it
        # the cut's face: its corners ordered by angle around their centroid in the plane
        cz = cy = cx = 0.0
        for k in range(n_cap):
            cz += cap[k, 0]
            cy += cap[k, 1]
            cx += cap[k, 2]
        cz /= n_cap
        cy /= n_cap
        cx /= n_cap
        if abs(nz) < 0.9:
            uz, uy, ux = 0.0, nx, -ny
        else:
            uz, uy, ux = -nx, 0.0, nz
        un = np.sqrt(uz * uz + uy * uy + ux * ux)
        uz, uy, ux = uz / un, uy / un, ux / un
        vz, vy, vx = ny * ux - nx * uy, nx * uz - nz * ux, nz * uy - ny * uz
        for k in range(n_cap):
            dz, dy, dx = cap[k, 0] - cz, cap[k, 1] - cy, cap[k, 2] - cx
            ang[k] = np.arctan2(dz * vz + dy * vy + dx * vx, dz * uz + dy * uy + dx * ux)
        srt = np.argsort(ang[:n_cap])
        c = 0
        for k in range(n_cap):
            r = srt[k]
            if c > 0 and (abs(cap[r, 0] - poly[n, c - 1, 0]) + abs(cap[r, 1] - poly[n, c - 1, 1])
                          + abs(cap[r, 2] - poly[n, c - 1, 2])) <= 4 * tol:
                continue
            if c >= MAX_FACE:
                return np.nan
            for d in range(3):
                poly[n, c, d] = cap[r, d]
            c += 1
        if c >= 3:
            size[n] = c
            n += 1
    # tetrahedra between the interior point and the faces' fan triangles
    vol = 0.0
    for f in range(n):
        if size[f] < 3:
            continue
        az, ay, ax = poly[f, 0, 0] - ip[0], poly[f, 0, 1] - ip[1], poly[f, 0, 2] - ip[2]
        for k in range(1, size[f] - 1):
            bz, by, bx = poly[f, k, 0] - ip[0], poly[f, k, 1] - ip[1], poly[f, k, 2] - ip[2]
            cz, cy, cx = (poly[f, k + 1, 0] - ip[0], poly[f, k + 1, 1] - ip[1],
                          poly[f, k + 1, 2] - ip[2])
            vol += abs(az * (by * cx - bx * cy) - ay * (bz * cx - bx * cz)
                       + ax * (bz * cy - by * cz))
    return vol / 6.0
