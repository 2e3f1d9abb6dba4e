"""Decisions of StarDist's 3D NMS for candidate pairs, from cached threshold-free values.

:meth:`Decisions.classify` settles the pairs of a kept candidate at a threshold with array
comparisons of the thresholds :class:`~._nms3d_pairs.PairValues` keeps per neighbour (stage 5
checked exactly where it decides). :meth:`Decisions.decide` settles one remaining pair: it
computes the missing values, cheapest first, and follows StarDist's cascade where the
threshold-free reasoning cannot conclude: the candidate set's own stage 1-2 values and, where
our polytope volumes are within ``EPS`` of t, StarDist's C routine on the pair alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._nms3d import EPS, F, Undecidable, bbox_inter, iou, render_decision, single_thread, sphere_iso
from ._nms3d_pairs import K_THR, S5_HI, S5_LO, S_THR, Edges, PairValues

#: stage 1-2 values of a pair for the candidate set: (upper or 0 where skipped, lower)
Exact = Callable[[int, int], tuple[float, float]]


class Decisions:
    """Pair decisions at a threshold, for a candidate set with anisotropy ratio ``kappa``."""

    def __init__(self, values: PairValues) -> None:
        self.v = values
        self._oracle: dict[tuple[int, int, float], bool] = {}

    def classify(self, e: Edges, slots: np.ndarray, t: np.float32, kappa: float
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(suppress, keep) of pairs with ``bbi > t`` that cached values settle; neither:
        ask :meth:`decide`."""
        return self.classify_rows(e.th[slots], e.row[slots], e.amin[slots], t, kappa)

    def classify_rows(self, th: np.ndarray, rows: np.ndarray, amin: np.ndarray,
                      t: np.float32, kappa: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`classify` from the pairs' thresholds, rows and ``A_min``."""
        tf = float(t)
        sup = th[:, S_THR] > tf
        keep = th[:, K_THR] < tf
        open_ = np.flatnonzero(~(sup | keep))
        if not len(open_):
            return sup, keep
        th, rows = th[open_], rows[open_]
        stage5 = (th[:, S5_LO] < tf) & (th[:, S5_HI] > tf)
        if stage5.any():
            sup[open_[stage5]] = render_decision(self.v.cnt[rows[stage5]],
                                                 amin[open_[stage5]], t)
        # with the set's own anisotropy, only computed stage 3-5 values can add to them
        rest = ~sup[open_] & (rows >= 0)
        rest[rest] = (self.v.kst[rows[rest]] != 0) | (self.v.cnt[rows[rest]] >= 0)
        if rest.any():
            sup[open_[rest]], keep[open_[rest]] = self._stage5(rows[rest], t, kappa)
        return sup, keep & ~sup

    def _stage5(self, rows: np.ndarray, t: np.float32, kappa: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """The same reasoning as the thresholds, at ``t`` with the set's own ``kappa``."""
        v = self.v
        tau = EPS * max(float(t), 1e-3)
        lo, hi = float(t) - tau, float(t) + tau
        kst, kv, cst, cv, cnt = v.kst[rows], v.kv[rows], v.cst[rows], v.cv[rows], v.cnt[rows]
        ub, sph, _, amin = v.geo[rows].T
        k_false = ((kst == 1) & (kv < lo)) | (kst == 2) | (np.minimum(ub, sph) < lo)
        counted = cnt >= 0
        rd = counted & render_decision(np.maximum(cnt, 0), amin, t)
        c_fin = cst == 1
        inner, outer = v.lens_bounds(rows, kappa)
        cap = np.minimum(np.minimum(np.minimum(ub, sph), inner),
                         np.minimum(np.where(kst == 1, kv, np.inf), np.where(c_fin, cv, np.inf)))
        floor = np.maximum(np.maximum(v.klb[rows], outer),
                           np.maximum(np.where(kst == 1, kv, -np.inf),
                                      np.where(c_fin, cv, -np.inf)))
        c_true = (c_fin & (cv > hi)) | (cst == 2)
        sup = k_false & c_true & rd & (floor > hi)
        keep = k_false & ((counted & ~rd) | (c_fin & (cv < lo))) & (cap < lo)
        return sup, keep & ~sup

    def decide(self, i: int, s: int, t: np.float32, exact: Exact, kappa: float) -> bool:
        """Does kept i suppress its neighbour ``edges(i).nb[s]`` at ``t`` (``bbi > t``)?"""
        v = self.v
        e = v.edges(i)
        sup, keep = self.classify(e, np.array([s]), t, kappa)
        if sup[0] or keep[0]:
            return bool(sup[0])
        v.ensure_radial([(i, s)], t)
        row = int(e.row[s])
        tau = EPS * max(float(t), 1e-3)
        lo, hi = float(t) - tau, float(t) + tau
        if v.klb[row] > hi:
            return True
        j = int(e.nb[s])
        oracle = lambda: self.oracle(i, j, t)  # noqa: E731
        small = min(e.ub[s], e.sph[s]) < lo     # StarDist's kernel value is at most those
        if v.kst[row] == 0 and not small:
            v.kernel(row)
        kst, kv = int(v.kst[row]), float(v.kv[row])
        if kst == 1 and kv > hi:
            return True
        if not small and (kst == 3 or (kst == 1 and kv >= lo)):
            return _stages12(i, j, t, exact, oracle)
        # stage 3 keeps it: StarDist's kernel value is below t
        if v.cnt[row] < 0:
            v.count(row)
        if not render_decision(v.cnt[row:row + 1], e.amin[s:s + 1], t)[0]:
            cap = min(e.ub[s], e.sph[s], kv if kst == 1 else np.inf,
                      float(v.cv[row]) if v.cst[row] == 1 else np.inf)
            return False if cap < lo else _stages12(i, j, t, exact, lambda: False)
        if v.cst[row] == 0:
            v.convex(row)
        cst, cv = int(v.cst[row]), float(v.cv[row])
        if cst == 3 or (cst == 1 and lo <= cv <= hi):
            return _stages12(i, j, t, exact, oracle)
        if cst == 1:
            return cv > hi        # stage 4 keeps it / the outer ellipsoid covers the hulls
        return _stages12(i, j, t, exact, lambda: True)

    def oracle(self, i: int, j: int, t: np.float32) -> bool:
        """Stages 3-5 for the pair alone at ``t``, by StarDist's C routine (Undecidable where
        its own stages 1-2 for the pair would end before them)."""
        key = (i, j, float(t))
        if key in self._oracle:
            return self._oracle[key]
        from stardist.lib.stardist3d import c_non_max_suppression_inds

        g = self.v.g
        idx = np.array([i, j])
        an = g.anisotropy(idx)
        rout, rin = g.radius_outer_iso(idx, an), g.radius_inner_iso(idx, an)
        p1, p2 = g.points[i:i + 1], g.points[j:j + 1]
        amin = np.minimum(g.volume[i:i + 1], g.volume[j:j + 1])
        up = np.fmin(sphere_iso(rout[:1], p1, rout[1:], p2, an),
                     bbox_inter(g.bbox[[i]], g.bbox[[j]]))
        low = sphere_iso(rin[:1], p1, rin[1:], p2, an)
        if up[0] < 1e-10 or not np.fmin(1.0, iou(up, amin)).astype(F)[0] > t:
            raise Undecidable
        if np.fmax(0.0, iou(low, amin)).astype(F)[0] > t:
            raise Undecidable
        self.v.n_oracle += 1
        single_thread()
        keep = c_non_max_suppression_inds(
            np.ascontiguousarray(g.dist[idx]), np.ascontiguousarray(g.points[idx]),
            g.verts, g.faces, np.array([1, 0], F), 0, 1, 0, F(t))
        self._oracle[key] = not bool(keep[1])
        return self._oracle[key]


def _stages12(i: int, j: int, t: np.float32, exact: Exact, later: Callable[[], bool]) -> bool:
    """StarDist's stages 1-2 with the candidate set's values, then ``later()``."""
    upper, lower = exact(i, j)
    if not upper > t:
        return False
    return True if lower > t else later()
