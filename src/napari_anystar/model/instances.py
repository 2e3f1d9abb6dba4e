"""Instances from a cached network output, for any (probability, NMS) threshold pair.

``InstanceSolver.labels(p, n)`` equals ``model.predict_instances(image, prob_thresh=p,
nms_thresh=n, scale=..., n_tiles=..., normalizer=..., predict_kwargs={"b": EDGE_BAND})[0]``
for the image, model and settings that produced the :class:`NetworkOutput`. A threshold
change re-runs only the NMS and the label rendering, and both reuse work across calls: the
NMS (:mod:`._nms3d_greedy`) caches threshold-free overlap values of candidate pairs, so the
pairs it met before are decided at any threshold pair by array comparisons, and each kept
polyhedron is rasterised once (with StarDist's own renderer) and then pasted in StarDist's
order.

The first visit of a low probability threshold still pays for the overlaps of its new
candidate pairs; :meth:`InstanceSolver.warm_up` (probability axis) and
:meth:`InstanceSolver.warm_grid` (NMS axis, then a coarse grid of both) pay them ahead of time,
one threshold pair per chunk, so a viewer can do it in the background while the user looks at
the first labels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from ._nms3d import Undecidable, default_threads, single_thread
from ._nms3d_greedy import GreedyNMS
from .predict import NetworkOutput

#: probability step of :meth:`InstanceSolver.warm_up` (the threshold slider's step)
WARM_STEP = 0.01
#: :meth:`InstanceSolver.warm_up` stops before a threshold with more candidates than this: the
#: greedy pass itself then takes long (and such thresholds give a flood of tiny objects)
WARM_MAX_CANDIDATES = 100_000
#: grid of :meth:`InstanceSolver.warm_grid` (both thresholds) and its NMS range
GRID_STEP = 0.05
GRID_NMS = (0.05, 0.9)


class InstanceSolver:
    """Rebuilds StarDist instances from a :class:`NetworkOutput` for any threshold pair."""

    def __init__(self, output: NetworkOutput, model, *, max_cached: int = 8) -> None:
        from stardist.rays3d import rays_from_json

        self.output = output
        self.model = model
        self.rays = rays_from_json(model.config.rays_json)
        self._scale = None if output.scale is None else dict(zip("ZYX", output.scale, strict=False))
        self._nms = GreedyNMS(output.cand_prob, output.cand_dist, output.points, self.rays)
        #: (prob, nms) -> (labels, probability per label id)
        self._results: OrderedDict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = (
            OrderedDict())
        self._max_cached = int(max_cached)
        self._masks: dict[int, np.ndarray] = {}   # flat voxel indices of each polyhedron
        self._empty: np.ndarray | None = None
        self.last_n_kept = 0
        self.n_fallbacks = 0
        # geometry used for rendering (points/rays mapped back to the input image, float32)
        if output.scale is None:
            self._rpoints = output.points.astype(np.float32)
            rrays = self.rays
        else:
            rescale = tuple(1.0 / s for s in output.scale)
            self._rpoints = (output.points * np.array(rescale).reshape(1, 3)).astype(np.float32)
            rrays = self.rays.copy(scale=rescale)
        self._rverts = np.ascontiguousarray(rrays.vertices, np.float32)
        self._rfaces = np.ascontiguousarray(rrays.faces, np.int32)

    # ------------------------------------------------------------------ candidates
    def _check(self, prob_thresh: float, nms_thresh: float) -> None:
        if not (0.0 <= nms_thresh <= 1.0):
            raise ValueError(f"NMS threshold must be in [0, 1], got {nms_thresh}.")
        if not (self.output.min_prob <= prob_thresh <= 1.0):
            raise ValueError(f"Probability threshold must be in [{self.output.min_prob:g}, 1], "
                             f"got {prob_thresh}.")

    def candidates(self, prob_thresh: float) -> np.ndarray:
        """Indices of the stored candidates StarDist passes to NMS at ``prob_thresh``."""
        return np.flatnonzero(self.output.cand_prob > np.float32(prob_thresh))

    def n_candidates(self, prob_thresh: float) -> int:
        return len(self.candidates(prob_thresh))

    def kept(self, prob_thresh: float, nms_thresh: float) -> np.ndarray:
        """Indices of the candidates that survive StarDist's NMS at this threshold pair."""
        prob_thresh, nms_thresh = float(prob_thresh), float(nms_thresh)
        self._check(prob_thresh, nms_thresh)
        sel = self.candidates(prob_thresh)
        try:
            return self._nms.survivors(sel, nms_thresh)
        except Undecidable:
            from stardist.nms import non_maximum_suppression_3d_sparse

            self.n_fallbacks += 1
            out = self.output
            single_thread()
            inds = non_maximum_suppression_3d_sparse(
                out.cand_dist[sel], out.cand_prob[sel], out.points[sel], self.rays,
                nms_thresh=nms_thresh)[-1]
            return sel[inds]

    # ------------------------------------------------------------------ labels
    def labels(self, prob_thresh: float, nms_thresh: float) -> np.ndarray:
        """Label image (input image shape, int32) for this threshold pair."""
        prob_thresh, nms_thresh = float(prob_thresh), float(nms_thresh)
        self._check(prob_thresh, nms_thresh)
        key = (prob_thresh, nms_thresh)
        if key not in self._results:
            try:
                kept = self._nms.survivors(self.candidates(prob_thresh), nms_thresh)
                self._results[key] = self._render(kept)
            except Undecidable:
                self.n_fallbacks += 1
                lbl = self.reference_labels(prob_thresh, nms_thresh)
                kept = self.kept(prob_thresh, nms_thresh)
                self._results[key] = lbl, self._fallback_probabilities(kept, lbl)
            while len(self._results) > self._max_cached:
                self._results.popitem(last=False)
        self._results.move_to_end(key)
        return self._results[key][0].copy()

    def warm(self, prob_thresh: float, nms_thresh: float,
             interrupt: Callable[[], bool] | None = None) -> bool:
        """Pre-compute what :meth:`labels` needs at this pair, without rendering it.

        Runs the greedy NMS (which caches its pair overlaps) and rasterises the kept
        polyhedra; results at every threshold pair stay the same. ``interrupt`` is asked
        before each candidate's turn in the NMS pass; if it says yes, warming stops there
        (work done so far stays cached) and False is returned; True once complete. Where the
        pass needs StarDist's fallback, the rest is left to :meth:`labels`.
        """
        return self._warm_pair(prob_thresh, nms_thresh, interrupt)

    def _warm_pair(self, prob_thresh: float, nms_thresh: float,
                   interrupt: Callable[[], bool] | None) -> bool:
        prob_thresh, nms_thresh = float(prob_thresh), float(nms_thresh)
        self._check(prob_thresh, nms_thresh)
        try:
            kept = self._nms.survivors(self.candidates(prob_thresh), nms_thresh, interrupt)
        except Undecidable:
            return True
        if kept is None:
            return False
        if len(kept):
            self._ensure_masks(kept)
        return True

    def warm_up(
        self,
        prob_thresh: float,
        nms_thresh: float,
        *,
        floor: float | None = None,
        step: float = WARM_STEP,
        max_candidates: int = WARM_MAX_CANDIDATES,
        lock: Callable[[], AbstractContextManager] | None = None,
        interrupt: Callable[[], bool] | None = None,
    ) -> Generator[float, None, bool]:
        """Warm the thresholds below ``prob_thresh`` at ``nms_thresh``, one step per chunk.

        Calls :meth:`warm` at ``prob_thresh - step``, ``prob_thresh - 2 step``, ... down to
        ``floor`` (default: the lowest stored probability), each chunk inside ``lock()``
        (released between chunks), and yields the probability after each chunk; closing the
        generator stops it. A chunk cut short by ``interrupt`` (someone waits for the lock)
        is taken up again in the next one. Returns True at the floor, False before a
        threshold with more than ``max_candidates`` candidates (lower ones have even more).
        """
        floor = self.output.min_prob if floor is None else max(float(floor),
                                                                self.output.min_prob)
        guard = lock or nullcontext
        k = 1
        while (prob := round(float(prob_thresh) - k * step, 6)) >= floor:
            if self.n_candidates(prob) > max_candidates:
                return False
            with guard():
                complete = self.warm(prob, nms_thresh, interrupt)
            yield prob
            k += complete
        return True

    def warm_grid(
        self,
        prob_thresh: float,
        nms_thresh: float,
        *,
        floor: float | None = None,
        step: float = WARM_STEP,
        grid_step: float = GRID_STEP,
        max_candidates: int = WARM_MAX_CANDIDATES,
        lock: Callable[[], AbstractContextManager] | None = None,
        interrupt: Callable[[], bool] | None = None,
    ) -> Generator[float, None, bool]:
        """Warm the NMS axis at ``prob_thresh`` (every ``step`` in :data:`GRID_NMS`, nearest
        to ``nms_thresh`` first), then a grid of both thresholds every ``grid_step``
        (probabilities from ``floor`` up), nearest to the given pair first (the sum of both
        distances).

        One threshold pair per chunk, with ``lock``/``interrupt`` as :meth:`warm_up`; yields
        the chunk's probability. Probabilities with more than ``max_candidates`` candidates
        are left out; returns True if none was.
        """
        floor = self.output.min_prob if floor is None else max(float(floor),
                                                                self.output.min_prob)
        lo, hi = GRID_NMS
        axis = np.round(np.arange(lo, hi + 1e-9, step), 6)
        pairs = [(float(prob_thresh), float(n)) for n in sorted(axis, key=lambda n: (
            abs(n - nms_thresh), n))]
        first = np.ceil(round(floor / grid_step, 6)) * grid_step
        probs = np.round(np.arange(first, 1.0 - 1e-9, grid_step), 6)
        probs = [p for p in probs if p >= floor]
        nms = np.round(np.arange(lo, hi + 1e-9, grid_step), 6)
        pairs += sorted(((float(p), float(n)) for p in probs for n in nms), key=lambda q: (
            round(abs(q[0] - prob_thresh) + abs(q[1] - nms_thresh), 6), q))
        guard = lock or nullcontext
        complete = True
        for prob, nms in pairs:
            if self.n_candidates(prob) > max_candidates:
                complete = False
                continue
            while True:
                with guard():
                    done = self._warm_pair(prob, nms, interrupt)
                yield prob
                if done:
                    break
        return complete

    def reference_labels(self, prob_thresh: float, nms_thresh: float) -> np.ndarray:
        """StarDist's own NMS + rendering on the stored candidates (slow, the definition)."""
        out = self.output
        sel = self.candidates(prob_thresh)
        single_thread()
        lbl, _details = self.model._instances_from_prediction(
            out.image_shape, out.cand_prob[sel], out.cand_dist[sel], points=out.points[sel],
            prob_thresh=prob_thresh, nms_thresh=nms_thresh, scale=self._scale)
        return lbl

    def object_probabilities(self, prob_thresh: float, nms_thresh: float) -> np.ndarray:
        """Network probability of each object of ``labels(prob_thresh, nms_thresh)``.

        Entry ``i`` belongs to label ``i`` (entry 0, the background, is NaN).
        """
        self.labels(prob_thresh, nms_thresh)
        return self._results[(float(prob_thresh), float(nms_thresh))][1].copy()

    def _fallback_probabilities(self, kept: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Object probabilities of StarDist's own labels: exact when every kept polyhedron is
        visible (label ``i`` is kept candidate ``i - 1``), else each object gets the likeliest
        kept candidate whose centre lies in it (NaN if none)."""
        probs = self.output.cand_prob[kept]
        out = np.full(int(labels.max(initial=0)) + 1, np.nan, np.float32)
        if len(out) - 1 == len(kept):
            out[1:] = probs
            return out
        centres = np.clip(np.rint(self._rpoints[kept]).astype(np.int64), 0,
                          np.array(labels.shape) - 1)
        order = np.argsort(probs, kind="stable")  # ascending: the likeliest is written last
        out[labels[tuple(centres.T)][order]] = probs[order]
        out[0] = np.nan
        return out

    # ------------------------------------------------------------------ rendering
    def _render(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``polyhedron_to_label`` + ``relabel_sequential`` from cached per-polyhedron masks,
        and each label's probability (index 0 NaN)."""
        shape = self.output.image_shape
        self.last_n_kept = len(kept)
        if len(kept) == 0:
            if self._empty is None:
                from stardist.matching import relabel_sequential

                self._empty = relabel_sequential(np.zeros(shape, np.uint16))[0]
            return self._empty.copy(), np.full(1, np.nan, np.float32)
        self._ensure_masks(kept)
        order = np.argsort(self.output.cand_prob[kept])[::-1]   # as polyhedron_to_label
        out = np.zeros(int(np.prod(shape)), np.int32)
        for k in order[::-1].tolist():          # the likeliest written last: first one wins
            out[self._masks[int(kept[k])]] = k + 1
        # relabel_sequential: visible labels, by increasing label value, become 1..m
        visible = np.flatnonzero(np.bincount(out, minlength=len(kept) + 1)[1:]) + 1
        if len(visible) < len(kept):
            lut = np.zeros(len(kept) + 1, np.int32)
            lut[visible] = np.arange(1, len(visible) + 1)
            out = lut[out]
        probs = np.full(len(visible) + 1, np.nan, np.float32)
        probs[1:] = self.output.cand_prob[kept[visible - 1]]
        return out.reshape(shape), probs

    def _render_bbox(self, idx: np.ndarray) -> np.ndarray:
        """Inclusive voxel boxes (z0, z1, y0, y1, x0, x1) of rendered polyhedra, 1 voxel margin."""
        pv = (self._rpoints[idx][:, None, :]
              + self.output.cand_dist[idx][:, :, None] * self._rverts[None])
        r = np.rint(pv).astype(np.int64)
        lo = np.maximum(r.min(axis=1) - 1, 0)
        hi = np.minimum(r.max(axis=1) + 1, np.array(self.output.image_shape) - 1)
        return np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1], lo[:, 2], hi[:, 2]], 1)

    def _ensure_masks(self, kept: np.ndarray) -> None:
        """Rasterise missing polyhedra with StarDist's renderer, bbox-disjoint ones together."""
        from stardist.lib.stardist3d import c_polyhedron_to_label

        todo = np.array([i for i in kept if int(i) not in self._masks], dtype=np.int64)
        if not len(todo):
            return
        boxes = self._render_bbox(todo)
        batches: list[list[int]] = []
        for n, b in enumerate(boxes):
            for batch in batches:
                bb = boxes[batch]
                overlap = ((bb[:, 0] <= b[1]) & (b[0] <= bb[:, 1]) & (bb[:, 2] <= b[3])
                           & (b[2] <= bb[:, 3]) & (bb[:, 4] <= b[5]) & (b[4] <= bb[:, 5]))
                if not overlap.any():
                    batch.append(n)
                    break
            else:
                batches.append([n])
        shape = self.output.image_shape
        default_threads()  # a batch is one long loop over polyhedra with disjoint boxes
        for batch in batches:
            idx = todo[batch]
            lab = c_polyhedron_to_label(
                np.ascontiguousarray(self.output.cand_dist[idx], np.float32),
                np.ascontiguousarray(self._rpoints[idx], np.float32),
                self._rverts, self._rfaces, np.arange(1, len(idx) + 1, dtype=np.int32),
                np.int32(0), np.int32(0), np.int32(0), np.int32(0), shape)
            for n, i in enumerate(idx, start=1):
                b = boxes[batch[n - 1]]
                sl = (slice(b[0], b[1] + 1), slice(b[2], b[3] + 1), slice(b[4], b[5] + 1))
                z, y, x = np.nonzero(lab[sl] == n)
                self._masks[int(i)] = np.ravel_multi_index((z + b[0], y + b[2], x + b[4]),
                                                           shape)
