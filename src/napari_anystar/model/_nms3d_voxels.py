"""StarDist's voxel test of stage 5, compiled (numba), in the C code's float32.

A voxel is inside a polyhedron when it passes ``inside_tetrahedron`` for any face (centre and
the face's three vertices). Every face's cone is a cone of the unit ray hull, so the face a
direction falls in maximises its score against the hull's gauge; only the faces within a
rounding fuzz of the best score are tested (the test's own float32 rounding can let a voxel
pass for a neighbouring face), and every face next to the centre. Voxels beyond the outer
radius pass none.
"""

from __future__ import annotations

import numba
import numpy as np

F = np.float32


@numba.njit(cache=True, nogil=True)
def _halfspace(z, y, x, az, ay, ax, bz, by, bx, cz, cy, cx) -> bool:
    """StarDist's ``inside_halfspace`` (every argument float32, same operation order)."""
    m00, m01, m02 = bz - az, by - ay, bx - ax
    m10, m11, m12 = cz - az, cy - ay, cx - ax
    m20, m21, m22 = z - az, y - ay, x - ax
    det = (m00 * (m11 * m22 - m21 * m12) - m01 * (m10 * m22 - m12 * m20)
           + m02 * (m10 * m21 - m11 * m20))
    return det >= 0


@numba.njit(cache=True, nogil=True)
def _tetra(z, y, x, centre, pv, face) -> bool:
    """StarDist's ``inside_tetrahedron`` for the centre and one face."""
    rz, ry, rx = centre[0], centre[1], centre[2]
    a, b, c = pv[face[0]], pv[face[1]], pv[face[2]]
    return (_halfspace(z, y, x, a[0], a[1], a[2], b[0], b[1], b[2], c[0], c[1], c[2])
            and _halfspace(z, y, x, rz, ry, rx, b[0], b[1], b[2], a[0], a[1], a[2])
            and _halfspace(z, y, x, rz, ry, rx, c[0], c[1], c[2], b[0], b[1], b[2])
            and _halfspace(z, y, x, rz, ry, rx, a[0], a[1], a[2], c[0], c[1], c[2]))


@numba.njit(cache=True, nogil=True)
def _distance(z, y, x, centre) -> float:
    """Distance of integer voxel (z, y, x) from a centre (float64)."""
    wz = np.float64(z) - np.float64(centre[0])
    wy = np.float64(y) - np.float64(centre[1])
    wx = np.float64(x) - np.float64(centre[2])
    return np.sqrt(wz * wz + wy * wy + wx * wx)


@numba.njit(cache=True, nogil=True)
def _inside(z, y, x, wn, centre, pv, fuzz, faces, gauge, score) -> bool:
    """One integer voxel (z, y, x) at distance ``wn`` within reach of one polyhedron's
    centre; ``score`` is scratch space."""
    fz, fy, fx = F(z - np.float64(centre[0])), F(y - np.float64(centre[1])), F(
        x - np.float64(centre[2]))
    top = -np.inf
    for f in range(len(faces)):
        s = fz * gauge[f, 0] + fy * gauge[f, 1] + fx * gauge[f, 2]
        score[f] = s
        top = max(top, np.float64(s))
    pz, py, px = F(z), F(y), F(x)
    for f in range(len(faces)):
        if (wn < 1.0 or np.float64(score[f]) >= top - fuzz[f] * wn) and _tetra(
                pz, py, px, centre, pv, faces[f]):
            return True
    return False


@numba.njit(cache=True, nogil=True)
def inside_many(vox, centre, pv, reach, fuzz, faces, gauge) -> np.ndarray:
    """The test for rows of integer voxels ``vox`` (n, 3)."""
    score = np.empty(len(faces), F)
    out = np.zeros(len(vox), np.bool_)
    for k in range(len(vox)):
        z, y, x = vox[k, 0], vox[k, 1], vox[k, 2]
        wn = _distance(z, y, x, centre)
        out[k] = wn <= reach and _inside(z, y, x, wn, centre, pv, fuzz, faces, gauge, score)
    return out


@numba.njit(cache=True, nogil=True)
def count_both(lo, hi, ci, pvi, reach_i, fuzz_i, cj, pvj, reach_j, fuzz_j, faces, gauge
               ) -> int:
    """Voxels of the box ``lo..hi`` (inclusive) inside both polyhedra."""
    score = np.empty(len(faces), F)
    n = 0
    for z in range(lo[0], hi[0] + 1):
        for y in range(lo[1], hi[1] + 1):
            for x in range(lo[2], hi[2] + 1):
                wi, wj = _distance(z, y, x, ci), _distance(z, y, x, cj)
                if (wi <= reach_i and wj <= reach_j
                        and _inside(z, y, x, wi, ci, pvi, fuzz_i, faces, gauge, score)
                        and _inside(z, y, x, wj, cj, pvj, fuzz_j, faces, gauge, score)):
                    n += 1
    return n
