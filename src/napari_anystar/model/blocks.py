"""Block geometry of block-wise segmentation, and rendering objects into one block's core.

The volume is cut into disjoint *cores* (a regular grid of ``core`` voxels per axis, the last
one along an axis shorter). A block's *read region* is its core grown by ``margin`` voxels on
every side (clipped to the volume): the network sees that context, but the block keeps only
the objects whose centre (rounded to a voxel) lies in its core. So each object is decided by
exactly one block, its *owner*. Read regions start (and, inside the volume, end) on multiples
of the network's size divisor (:func:`network_divisor`, in input voxels), so a block sees the
volume on the same pooling lattice, and is padded at the volume's end the same way, as a
whole-volume prediction.

Labels are rendered core by core from the owners' polyhedra: a core shows every object of its
own block and of its 26 neighbours that reaches into it, each voxel going to the likeliest
object covering it (StarDist's rule; ties go to the smaller id). An object is therefore never
cut at a core border, and the result does not depend on the order blocks ran in. An object
reaching past its owner's neighbouring cores is clipped there and counted (see
:func:`reaches_past_neighbours`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Default core edge (voxels after scaling, so blocks hold similar numbers of objects).
DEFAULT_BLOCK_EDGE = 128
#: Default context on each side of a core (voxels after scaling): twice the largest object
#: radius the AnyStar networks predict (~16 after scaling), so every candidate that could
#: suppress an object of the core is seen whole.
DEFAULT_MARGIN = 32
#: Smallest accepted core edge (input voxels).
MIN_BLOCK_EDGE = 8

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class BlockObjects:
    """The objects one block owns, likeliest first: centres in input voxels of the whole
    volume (float64), ray lengths (float32, input-voxel rays of :class:`RayGeometry`) and
    probabilities (float32). Local ids are 1..n in this order."""

    points: np.ndarray  # (n, 3)
    dist: np.ndarray  # (n, n_rays)
    prob: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.prob)

    @classmethod
    def empty(cls, n_rays: int) -> BlockObjects:
        return cls(np.zeros((0, 3)), np.zeros((0, n_rays), np.float32), np.zeros(0, np.float32))

    def ordered(self) -> BlockObjects:
        """The same objects, likeliest first (stable)."""
        order = np.argsort(-self.prob, kind="stable")
        return BlockObjects(self.points[order], self.dist[order], self.prob[order])


@dataclass(frozen=True)
class RayGeometry:
    """Ray directions in input voxels (the model's rays divided by the scale) and faces."""

    vertices: np.ndarray  # (n_rays, 3) float32
    faces: np.ndarray  # (n_faces, 3) int32

    @classmethod
    def from_rays_json(cls, rays_json: dict, scale: tuple[float, float, float]) -> RayGeometry:
        from stardist.rays3d import rays_from_json

        rays = rays_from_json(rays_json).copy(scale=tuple(1.0 / s for s in scale))
        return cls(np.ascontiguousarray(rays.vertices, np.float32),
                   np.ascontiguousarray(rays.faces, np.int32))

    def reach(self, dist: np.ndarray) -> np.ndarray:
        """(n, 3) how far each object may extend from its centre along Z, Y, X."""
        return dist.max(axis=1)[:, None] * np.abs(self.vertices).max(axis=0)[None]


@dataclass(frozen=True)
class BlockGrid:
    """Disjoint cores of ``core`` voxels covering ``shape``, each read with ``margin``."""

    shape: tuple[int, int, int]
    core: tuple[int, int, int]
    margin: tuple[int, int, int]
    align: tuple[int, int, int] = (1, 1, 1)

    @cached_property
    def counts(self) -> tuple[int, int, int]:
        """Blocks per axis."""
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.core, strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def position(self, index: int) -> tuple[int, int, int]:
        return tuple(int(p) for p in np.unravel_index(index, self.counts))

    def index(self, position: tuple[int, ...]) -> int:
        return int(np.ravel_multi_index(position, self.counts))

    def core_box(self, index: int) -> Box:
        return tuple(slice(p * c, min((p + 1) * c, s)) for p, c, s
                     in zip(self.position(index), self.core, self.shape, strict=True))

    def read_box(self, index: int) -> Box:
        return tuple(slice(max(0, (b.start - m) // a * a), min(s, -(-(b.stop + m) // a) * a))
                     for b, m, a, s in zip(self.core_box(index), self.margin, self.align,
                                           self.shape, strict=True))

    def neighbours(self, index: int, ring: tuple[int, int, int] = (1, 1, 1)) -> list[int]:
        """The block and its neighbours up to ``ring`` blocks away per axis (by default the
        up to 26 adjacent ones), by increasing index."""
        pos = self.position(index)
        ranges = [range(max(0, p - r), min(n, p + r + 1))
                  for p, n, r in zip(pos, self.counts, ring, strict=True)]
        return [self.index(q) for q in itertools.product(*ranges)]

    def last_neighbour(self, index: int, ring: tuple[int, int, int] = (1, 1, 1)) -> int:
        """The largest index of :meth:`neighbours` (non-decreasing in ``index``)."""
        pos = self.position(index)
        return self.index(tuple(min(p + r, n - 1) for p, n, r in zip(pos, self.counts, ring,
                                                                     strict=True)))

    def region_box(self, index: int, context: tuple[int, int, int]) -> Box:
        """The core of block ``index`` grown by ``context`` voxels per side (clipped)."""
        return tuple(slice(max(0, b.start - c), min(s, b.stop + c)) for b, c, s
                     in zip(self.core_box(index), context, self.shape, strict=True))

    def owner(self, points: np.ndarray) -> np.ndarray:
        """Block index owning each centre (n, 3): the core holding the rounded voxel."""
        voxel = np.clip(np.floor(np.asarray(points) + 0.5).astype(np.int64), 0,
                        np.array(self.shape) - 1)
        return np.ravel_multi_index(tuple((voxel // np.array(self.core)).T), self.counts)

    def neighbourhood_box(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) voxel bounds of the cores of the block and its neighbours."""
        lo = [max(0, p - 1) * c for p, c in zip(self.position(index), self.core, strict=True)]
        hi = [min((p + 2) * c, s) for p, c, s in zip(self.position(index), self.core,
                                                     self.shape, strict=True)]
        return np.array(lo), np.array(hi)


def network_divisor(config: dict) -> tuple[int, int, int]:
    """What a StarDist3D network's input sizes must be divisible by (its ``_axes_div_by``),
    from its ``config.json``."""
    grid = [int(g) for g in config.get("grid", (1, 1, 1))]
    if config.get("backbone", "unet") != "unet":
        return tuple(grid)
    pool = config.get("unet_pool", (2, 2, 2))
    depth = int(config.get("unet_n_depth", 2))
    return tuple(int(p) ** depth * g for p, g in zip(pool, grid, strict=True))


def plan_grid(shape: tuple[int, ...], scale: tuple[float, float, float],
              block_size: tuple[int, int, int] | None = None,
              margin: tuple[int, int, int] | None = None,
              divisor: tuple[int, int, int] = (1, 1, 1)) -> BlockGrid:
    """The grid for ``shape`` at ``scale``: cores of ``block_size`` input voxels (default
    :data:`DEFAULT_BLOCK_EDGE` voxels after scaling), context ``margin`` (default
    :data:`DEFAULT_MARGIN` after scaling), read regions aligned to the network's ``divisor``
    (voxels after scaling); ValueError for a core below :data:`MIN_BLOCK_EDGE`."""
    shape = tuple(int(s) for s in shape)
    if block_size is None:
        block_size = tuple(max(MIN_BLOCK_EDGE, round(DEFAULT_BLOCK_EDGE / s)) for s in scale)
    if margin is None:
        margin = tuple(math.ceil(DEFAULT_MARGIN / s) for s in scale)
    if len(block_size) != 3 or any(int(b) < MIN_BLOCK_EDGE for b in block_size):
        raise ValueError(f"Block size must be three numbers >= {MIN_BLOCK_EDGE} (Z, Y, X), "
                         f"got {tuple(block_size)}.")
    core = tuple(min(int(b), s) for b, s in zip(block_size, shape, strict=True))
    align = tuple(max(1, round(d / s)) for d, s in zip(divisor, scale, strict=True))
    return BlockGrid(shape, core, tuple(max(0, int(m)) for m in margin), align)


def offsets(counts: list[int]) -> np.ndarray:
    """Id offset of each block: ids of block ``i`` are ``offsets[i] + 1 ..``."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])[:-1]


def render_object(points: np.ndarray, dist: np.ndarray, rays: RayGeometry
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One polyhedron rasterised with StarDist's renderer on a canvas around it: (first voxel
    of the canvas, boolean mask). The canvas always holds the centre (StarDist's renderer
    does not return for some polyhedra entirely outside its canvas)."""
    from stardist.lib.stardist3d import c_polyhedron_to_label

    reach = rays.reach(dist[None])[0]
    lo = np.floor(points - reach).astype(np.int64) - 1
    shape = tuple(int(n) for n in np.ceil(points + reach).astype(np.int64) + 2 - lo)
    lab = c_polyhedron_to_label(
        np.ascontiguousarray(dist[None], np.float32),
        np.ascontiguousarray((points - lo)[None], np.float32), rays.vertices, rays.faces,
        np.ones(1, np.int32), np.int32(0), np.int32(0), np.int32(0), np.int32(0), shape)
    return lo, lab > 0


def render_core(grid: BlockGrid, index: int, owned: dict[int, BlockObjects],
                first_ids: dict[int, int], rays: RayGeometry, box: Box | None = None
                ) -> np.ndarray:
    """Labels (int32) of block ``index``'s core (or of ``box``) from the objects of the
    blocks in ``owned`` (its neighbours, or more for a larger ``box``).

    ``owned`` and ``first_ids`` hold, per block, its objects and the global id before its
    first object (object ``k`` of block ``b`` gets id ``first_ids[b] + k + 1``).
    """
    box = grid.core_box(index) if box is None else box
    start = np.array([b.start for b in box])
    stop = np.array([b.stop for b in box])
    parts = []
    for block, objs in owned.items():
        if not len(objs):
            continue
        reach = rays.reach(objs.dist)
        near = np.all((objs.points + reach + 1 >= start) & (objs.points - reach - 1 < stop),
                      axis=1)
        for k in np.flatnonzero(near):
            parts.append((-float(objs.prob[k]), first_ids[block] + 1 + int(k),
                          objs.points[k], objs.dist[k]))
    labels = np.zeros(tuple(int(n) for n in stop - start), np.int32)
    for _, label, points, dist in sorted(parts, key=lambda p: p[:2]):  # likeliest first
        lo, mask = render_object(points, dist, rays)
        a = np.maximum(lo, start)
        b = np.minimum(lo + mask.shape, stop)
        if np.any(a >= b):
            continue
        region = labels[tuple(slice(i, j) for i, j in zip(a - start, b - start, strict=True))]
        inside = mask[tuple(slice(i, j) for i, j in zip(a - lo, b - lo, strict=True))]
        region[inside & (region == 0)] = label
    return labels


def reaches_past_neighbours(grid: BlockGrid, index: int, objs: BlockObjects,
                            rays: RayGeometry) -> int:
    """How many of block ``index``'s objects extend past its neighbours' cores (clipped)."""
    if not len(objs):
        return 0
    lo, hi = grid.neighbourhood_box(index)
    reach = rays.reach(objs.dist)
    low = (objs.points - reach < lo) & (lo > 0)
    high = (objs.points + reach >= hi) & (hi < np.array(grid.shape))
    return int(np.count_nonzero(np.any(low | high, axis=1)))
