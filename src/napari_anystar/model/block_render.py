"""The labels of one block's core, as a task: StarDist's polyhedra, outlines refined or not.

Without refinement a core is drawn from the objects of its block and its 26 neighbours
(:func:`.blocks.render_core`). With it, the outlines a whole-volume run gives
(:class:`.refine.OutlineRefiner`) are reproduced block by block: the core grown by a
*context* is drawn from every object reaching that region, refined there with the whole
volume's intensity bounds (:func:`.refine.intensity_bounds`, measured once), and only the
core is kept.

A core voxel's refined label depends on the objects whose claimed region reaches it (up to
``GROWTH`` diameters away), on their whole polyhedra (at most the grid's margin across: the
margin is twice the largest object radius), on their own claimed regions (``GROWTH`` more),
on the watershed that splits claims between neighbours (``GROWTH`` of slack) and on the
smoothed image there (the Gaussian's support, :data:`SMOOTHING_TRUNCATE` sigmas, and the
background's, :func:`.refine.background_reach`): :func:`refine_context` adds these up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .blocks import BlockGrid, BlockObjects, RayGeometry, render_core

#: Sigmas the refiner's Gaussian reaches (``scipy.ndimage.gaussian_filter``'s ``truncate``).
SMOOTHING_TRUNCATE = 4.0


@dataclass(frozen=True)
class RefineSpec:
    """How block-wise runs refine outlines: object ``diameter`` per axis (input voxels), the
    whole volume's intensity ``bounds`` (minimum, 99.9th percentile) and the ``context``
    (voxels per side) refined around each core."""

    diameter: tuple[float, float, float]
    bounds: tuple[float, float]
    context: tuple[int, int, int]

    @classmethod
    def plan(cls, diameter: tuple[float, ...], sample: np.ndarray,
             margin: tuple[int, int, int]) -> RefineSpec:
        """The spec for objects of ``diameter`` in a volume sampled by ``sample`` (flat), on
        a grid with ``margin``."""
        from .refine import intensity_bounds

        diameter = tuple(float(d) for d in diameter)
        return cls(diameter, intensity_bounds(sample), refine_context(diameter, margin))


def refine_context(diameter: tuple[float, ...], margin: tuple[int, ...]
                   ) -> tuple[int, int, int]:
    """Voxels around a core that its refined labels depend on (see the module's text)."""
    from .refine import GROWTH, SMOOTHING, background_reach

    return tuple(int(m) + 3 * math.ceil(GROWTH * d) + b
                 + math.ceil(SMOOTHING_TRUNCATE * SMOOTHING * d) + 1
                 for d, m, b in zip(diameter, margin, background_reach(diameter), strict=True))


def render_ring(grid: BlockGrid, refine: RefineSpec | None) -> tuple[int, int, int]:
    """How many blocks away (per axis) the objects drawn in a block's region may be owned:
    1 without refinement, else enough for objects (up to the margin in radius) reaching the
    core's context."""
    if refine is None:
        return (1, 1, 1)
    return tuple(max(1, math.ceil((c + m) / k))
                 for c, m, k in zip(refine.context, grid.margin, grid.core, strict=True))


def render_block(grid: BlockGrid, index: int, owned: dict[int, BlockObjects],
                 first_ids: dict[int, int], rays: RayGeometry, refine: RefineSpec | None = None,
                 image: np.ndarray | None = None) -> np.ndarray:
    """Labels (int32) of block ``index``'s core from the objects of the blocks in ``owned``
    (those :func:`render_ring` away; ``first_ids`` as :func:`.blocks.render_core`); with
    ``refine``, outlines refined to ``image``, the volume in ``grid.region_box(index,
    refine.context)``."""
    if refine is None:
        return render_core(grid, index, owned, first_ids, rays)
    from .refine import OutlineRefiner

    region = grid.region_box(index, refine.context)
    labels = render_core(grid, index, owned, first_ids, rays, region)
    ids = np.union1d([0], labels)  # the refiner wants ids 1..n: renumber, order kept
    local = np.searchsorted(ids, labels).astype(np.int32)
    refined = OutlineRefiner(image, refine.diameter, refine.bounds)(local)
    core = tuple(slice(c.start - r.start, c.stop - r.start)
                 for c, r in zip(grid.core_box(index), region, strict=True))
    return ids[refined[core]].astype(np.int32)
