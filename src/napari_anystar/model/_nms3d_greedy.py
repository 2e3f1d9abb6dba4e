"""StarDist's greedy 3D NMS over a fixed candidate list, for any candidate subset/threshold.

The pass mirrors ``non_maximum_suppression_3d_sparse``: candidates by decreasing probability,
each kept one suppressing the later ones it overlaps. The pair decisions come from
:class:`~._nms3d_pairs.PairValues`: array comparisons on cached threshold-free overlaps for
all neighbours of a kept candidate at once; the pairs those cannot settle yet wait until the
later candidate's turn (it may be suppressed by another one first), where the missing values
are computed (cheap bounds for many waiting pairs together, then polytope volumes or voxel
counts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ._nms3d import F, Geometry, bbox_inter, iou, sphere_iso
from ._nms3d_decide import Decisions
from ._nms3d_pairs import PairValues

#: waiting pairs whose cheap bounds are computed together
PREFETCH = 512


class _Selection:
    """One candidate subset: StarDist's order, ranks, reach and (lazily) anisotropy."""

    def __init__(self, geom: Geometry, prob: np.ndarray, sel: np.ndarray) -> None:
        self.g = geom
        self.first = sel[np.argsort(prob[sel])[::-1]]            # survivors' order
        self.order = self.first[np.argsort(prob[self.first])[::-1]]  # the C loop's order
        self.rank = np.full(len(prob), -1, np.int64)
        self.rank[self.order] = np.arange(len(self.order))
        self.max_dist = F(max(F(0), geom.radius_outer[self.order].max())) if len(sel) else F(0)
        reach = self.max_dist + geom.radius_outer                  # float32, as the C code
        self.reach2 = reach * reach
        self._an: np.ndarray | None = None
        self._radii: dict[int, tuple[np.float32, np.float32]] = {}

    @property
    def an(self) -> np.ndarray:
        """StarDist's anisotropy of this subset."""
        if self._an is None:
            self.g.ensure(self.order)
            self._an = self.g.anisotropy(self.order)
        return self._an

    @property
    def kappa(self) -> float:
        an = self.an.astype(np.float64)
        return float(an.max() / an.min())

    def exact(self, i: int, j: int) -> tuple[float, float]:
        """Stage 1-2 overlaps of the pair with this subset's anisotropy, as StarDist computes
        them: (upper, 0 where StarDist skips the pair at once), lower)."""
        g, an = self.g, self.an
        for k in (i, j):
            if k not in self._radii:
                idx = np.array([k])
                self._radii[k] = (g.radius_outer_iso(idx, an)[0], g.radius_inner_iso(idx, an)[0])
        (oi, ii), (oj, ij) = self._radii[i], self._radii[j]
        p1, p2 = g.points[i:i + 1], g.points[j:j + 1]
        amin = np.minimum(g.volume[i:i + 1], g.volume[j:j + 1])
        up = np.fmin(sphere_iso(np.array([oi]), p1, np.array([oj]), p2, an),
                     bbox_inter(g.bbox[[i]], g.bbox[[j]]))
        low = sphere_iso(np.array([ii]), p1, np.array([ij]), p2, an)
        upper = 0.0 if up[0] < 1e-10 else float(np.fmin(1.0, iou(up, amin)).astype(F)[0])
        return upper, float(np.fmax(0.0, iou(low, amin)).astype(F)[0])


class _Waiting:
    """Pairs (kept i, slot of j in its edges) waiting for j's turn: linked lists by j's
    position, filled one kept candidate at a time (its j are distinct) with array writes."""

    def __init__(self, n: int) -> None:
        self.head = np.full(n, -1, np.int64)
        self._i = np.empty(1024, np.int64)
        self._slot = np.empty(1024, np.int64)
        self._next = np.empty(1024, np.int64)
        self._n = 0

    def add(self, i: int, slots: np.ndarray, ranks: np.ndarray) -> None:
        stop = self._n + len(slots)
        if stop > len(self._i):
            cap = max(2 * len(self._i), stop)
            for name in ("_i", "_slot", "_next"):
                grown = np.empty(cap, np.int64)
                grown[:self._n] = getattr(self, name)[:self._n]
                setattr(self, name, grown)
        ids = np.arange(self._n, stop)
        self._i[ids], self._slot[ids] = i, slots
        self._next[ids] = self.head[ranks]
        self.head[ranks] = ids
        self._n = stop

    def pairs(self, pos: int) -> list[tuple[int, int]]:
        out, k = [], int(self.head[pos])
        while k >= 0:
            out.append((int(self._i[k]), int(self._slot[k])))
            k = int(self._next[k])
        return out


class GreedyNMS:
    """StarDist's greedy 3D NMS over a fixed candidate list, for any candidate subset/threshold.

    Candidates are the stored ones (``prob``, ``dist``, ``points`` in StarDist's order);
    :meth:`survivors` takes the indices passed to NMS and returns the kept ones, in the order
    ``non_maximum_suppression_3d_sparse`` returns them.
    """

    def __init__(self, prob: np.ndarray, dist: np.ndarray, points: np.ndarray, rays) -> None:
        self.prob = np.asarray(prob, F)
        self.geom = Geometry(dist, points, rays.vertices, rays.faces)
        self.values = PairValues(self.geom, self.prob)
        self.decisions = Decisions(self.values)
        self._selections: OrderedDict[bytes, _Selection] = OrderedDict()
        self._last_kept = np.zeros(0, np.int64)    # survivors of the last complete pass

    def _selection(self, sel: np.ndarray) -> _Selection:
        key = sel.tobytes()
        s = self._selections.get(key)
        if s is None:
            s = self._selections[key] = _Selection(self.geom, self.prob, sel)
            while len(self._selections) > 4:
                self._selections.popitem(last=False)
        self._selections.move_to_end(key)
        return s

    def survivors(self, sel: np.ndarray, nms_thresh: float,
                  stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        """Kept candidate indices for the candidates ``sel`` (raises Undecidable rarely).

        ``stop`` is asked before each kept candidate's turn; if it says yes, the pass ends
        there and returns None (the pair values computed so far stay cached).
        """
        t = F(nms_thresh)
        s = self._selection(np.asarray(sel, np.int64))
        order, rank, n = s.order, s.rank, len(s.order)
        if n == 0:
            return s.first
        values, reach2, kappa = self.values, s.reach2, s.kappa
        values.set_kappa(kappa)
        edges = values._edges
        classify = self.decisions.classify
        flags = bytearray(n)                        # suppressed, by position
        suppressed = np.frombuffer(flags, np.uint8)
        waiting = _Waiting(n)
        head = waiting.head
        order_list = order.tolist()
        lowest = float(self.prob[order[-1]])        # the neighbour lists must reach it
        guessed = self._guess(s, t, kappa, lowest)
        for pos in range(n):
            if flags[pos]:
                continue
            if stop is not None and stop():
                return None
            if head[pos] >= 0 and self._resolve(s, pos, waiting, t):
                flags[pos] = 1
                continue
            if pos == n - 1:
                break
            i = order_list[pos]
            got = guessed.get(i)
            if got is not None:
                sup_r, open_s, open_r = got
                suppressed[sup_r] = 1
                alive = suppressed[open_r] == 0
                if alive.any():
                    waiting.add(i, open_s[alive], open_r[alive])
                continue
            e = edges.get(i)
            if e is None or e.floor > lowest:
                e = values.edges(i, lowest)
            k = int(e.nbbi.searchsorted(-t))          # bbi > t: stage 1 may go on
            if not k:
                continue
            r = rank[e.nb[:k]]      # -1 outside the set: suppressed[-1] is then ignored
            slots = np.flatnonzero((r > pos) & (e.d2[:k] < reach2[i]) & (suppressed[r] == 0))
            if not len(slots):
                continue
            r = r[slots]
            sup, keep = classify(e, slots, t, kappa)
            suppressed[r[sup]] = 1
            unknown = ~(sup | keep)
            if unknown.any():
                waiting.add(i, slots[unknown], r[unknown])
        kept = np.zeros(len(self.prob), bool)
        kept[order[suppressed == 0]] = True
        self._last_kept = order[suppressed == 0]
        return s.first[kept[s.first]]

    def _guess(self, s: _Selection, t: np.float32, kappa: float, lowest: float
               ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pair classifications of the candidates kept by the last pass (likely kept in this
        one too), all in one vectorised call: i -> (positions it suppresses, slots and
        positions still open). Pair decisions do not depend on the pass, only on i, j, t."""
        edges, rank = self.values._edges, s.rank
        guess = [i for i in self._last_kept.tolist()
                 if rank[i] >= 0 and i in edges and edges[i].floor <= lowest]
        if not guess:
            return {}
        parts = [(edges[i], int(edges[i].nbbi.searchsorted(-t))) for i in guess]
        sizes = np.array([k for _, k in parts])
        slots = np.concatenate([np.arange(k) for _, k in parts])
        part = np.repeat(np.arange(len(guess)), sizes)
        owner = np.array(guess)[part]
        nb = np.concatenate([e.nb[:k] for e, k in parts])
        d2 = np.concatenate([e.d2[:k] for e, k in parts])
        r = rank[nb]
        m = (r > rank[owner]) & (d2 < s.reach2[owner])
        th = np.concatenate([e.th[:k] for e, k in parts])[m]
        rows = np.concatenate([e.row[:k] for e, k in parts])[m]
        amin = np.concatenate([e.amin[:k] for e, k in parts])[m]
        sup, keep = self.decisions.classify_rows(th, rows, amin, t, kappa)
        r, slots = r[m], slots[m]
        ends = np.cumsum(np.bincount(part[m], minlength=len(guess)))
        open_ = ~(sup | keep)
        out = {}
        for i, a, b in zip(guess, np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True):
            o = open_[a:b]
            out[i] = (r[a:b][sup[a:b]], slots[a:b][o], r[a:b][o])
        return out

    def _resolve(self, s: _Selection, pos: int, waiting: _Waiting, t: np.float32) -> bool:
        """Is the candidate at ``pos`` suppressed by one of its waiting kept ones? Nearest
        first, stop at the first yes; the cheap bounds of the nearest waiting pairs of the
        next candidates are computed together with its own."""
        values = self.values

        def dist(q: tuple[int, int]) -> float:
            return float(values.edges(q[0]).d2[q[1]])

        pairs = sorted(waiting.pairs(pos), key=dist)
        i, slot = pairs[0]
        if values.edges(i).row[slot] < 0:
            nearest, ahead, head = [pairs[0]], pos + 1, waiting.head
            while len(nearest) < PREFETCH and ahead < len(head):
                if head[ahead] >= 0:
                    nearest.append(min(waiting.pairs(ahead), key=dist))
                ahead += 1
            values.ensure_radial(nearest, t)
        decide, kappa = self.decisions.decide, s.kappa
        return any(decide(i, slot, t, s.exact, kappa) for i, slot in pairs)
