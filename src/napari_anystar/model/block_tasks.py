"""What one block-wise task computes, on whichever process runs it, and the one normalisation
all blocks share.

Blocks must see the same intensity mapping as the whole volume would: :func:`sample_bounds`
takes the normalisation's percentiles over the whole volume (every voxel up to
:data:`MAX_SAMPLES`, else a regular subsample), read slab by slab, and :class:`FixedBounds`
applies those intensities to every block exactly as csbdeep's percentile normaliser applies
its own. :func:`predict_block` runs the network on one block and keeps the objects the
block owns; :func:`auto_scale_task` chooses the scale on a centre crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_anystar._generators import result_of
from napari_anystar.normalization import Normalization

from .block_io import read_box
from .blocks import BlockGrid, BlockObjects

#: Percentiles are taken over at most this many voxels (a volume that fits: all of them).
MAX_SAMPLES = 2**25
#: Voxels read per step while sampling (bounds the memory of a slab).
SLAB_VOXELS = 2**24
#: Edge (input voxels) of the centre crop the auto scale looks at (its rounds crop further).
AUTO_CROP_EDGE = 320


@dataclass(frozen=True)
class FixedBounds(Normalization):
    """A percentile normalisation whose intensities were measured once on the whole volume."""

    lo: float = 0.0
    hi: float = 1.0

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        return self.lo, self.hi

    def csbdeep(self) -> Any:
        from csbdeep.data import PercentileNormalizer
        from csbdeep.utils import normalize_mi_ma

        bounds = self

        class _Fixed(PercentileNormalizer):
            def before(self, x: np.ndarray, axes: str) -> np.ndarray:
                self.mi, self.ma = np.float32(bounds.lo), np.float32(bounds.hi)
                return normalize_mi_ma(x, self.mi, self.ma, dtype=self.dtype, **self.kwargs)

        return _Fixed(float(self.low), float(self.high), clip=bool(self.clip))

    def describe(self) -> str:
        return f"{super().describe()} of the whole volume ({self.lo:g} to {self.hi:g})"


def check_source(source: Any) -> None:
    """ValueError (one line) unless ``source`` looks like a numeric 3D volume."""
    shape = tuple(getattr(source, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"Expected a 3D volume (Z, Y, X), got shape {shape}.")
    if 0 in shape:
        raise ValueError(f"The volume is empty (shape {shape}).")
    dtype = np.dtype(source.dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"Expected a numeric volume, got dtype {dtype}.")


def sample_bounds(source: Any, norm: Normalization, max_samples: int = MAX_SAMPLES
                  ) -> FixedBounds:
    """``norm`` with the intensities of its percentiles over ``source`` (see
    :func:`sample_volume`)."""
    return bounds_of(sample_volume(source, max_samples), norm)


def bounds_of(sample: np.ndarray, norm: Normalization) -> FixedBounds:
    """``norm`` with the intensities of its percentiles over ``sample``."""
    lo, hi = np.percentile(sample, (norm.low, norm.high))
    return FixedBounds(norm.low, norm.high, norm.clip, float(lo), float(hi))


def sample_volume(source: Any, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """The voxels of ``source`` (every ``stride``-th along each axis, as few as keep at most
    ``max_samples``), flat; ValueError for a constant volume or one with NaN or infinite
    values."""
    shape = tuple(int(s) for s in source.shape)
    stride = 1
    while math.prod(math.ceil(s / stride) for s in shape) > max_samples:
        stride += 1
    planes = max(1, SLAB_VOXELS // max(1, shape[1] * shape[2])) * stride
    parts = [read_box(source, (slice(z, min(z + planes, shape[0]), stride),
                               slice(None, None, stride), slice(None, None, stride)))
             for z in range(0, shape[0], planes)]
    sample = np.concatenate([p.ravel() for p in parts])
    if sample.dtype.kind == "f" and not np.isfinite(sample).all():
        raise ValueError("The volume contains NaN or infinite values.")
    if sample.min() == sample.max():
        raise ValueError("The volume is constant (all voxels have the same value).")
    return sample


def centre_crop_box(shape: tuple[int, ...], edge: int = AUTO_CROP_EDGE) -> tuple[slice, ...]:
    """The centred box of at most ``edge`` voxels per axis."""
    return tuple(slice((s - min(s, edge)) // 2, (s - min(s, edge)) // 2 + min(s, edge))
                 for s in shape)


def auto_scale_task(entry: Any, crop: np.ndarray, settings: Any, prob: float) -> Any:
    """:func:`~napari_anystar.model.object_size.auto_scale` on ``crop`` (an AutoScale)."""
    from .object_size import auto_scale
    from .registry import load_model

    return result_of(auto_scale(load_model(entry), crop, settings, prob))


def crop_contrast_task(entry: Any, crop: np.ndarray, settings: Any,
                       thresholds: tuple[float, float]) -> float:
    """:func:`.polarity.object_contrast` of the objects StarDist finds in ``crop`` at
    ``settings`` (nan: none to measure)."""
    from .instances import InstanceSolver
    from .object_size import training_diameter
    from .polarity import object_contrast
    from .predict import predict_network
    from .refine import OutlineRefiner
    from .registry import load_model

    model = load_model(entry)
    settings = replace(settings, n_tiles=None)
    output = result_of(predict_network(model, crop, settings))
    labels = InstanceSolver(output, model).labels(*thresholds)
    refiner = OutlineRefiner.at_scale(crop, settings.scale, training_diameter(model),
                                      settings.invert)
    return object_contrast(refiner.smoothed, labels, refiner.diameter)


def predict_block(entry: Any, data: np.ndarray, settings: Any, thresholds: tuple[float, float],
                  grid: BlockGrid, index: int) -> BlockObjects:
    """The objects block ``index`` of ``grid`` owns, likeliest first, from its read region
    ``data``: the network's candidates, StarDist's NMS at ``thresholds``, then those whose
    centre lies in the block's core. A constant region has none."""
    from .instances import InstanceSolver
    from .predict import predict_network
    from .registry import load_model

    model = load_model(entry)
    if data.min() == data.max():
        return BlockObjects.empty(int(model.config.n_rays))
    settings = replace(settings, n_tiles=None)
    output = result_of(predict_network(model, data, settings))
    kept = InstanceSolver(output, model).kept(*thresholds)
    origin = np.array([b.start for b in grid.read_box(index)], dtype=np.float64)
    rescale = 1.0 / np.asarray(settings.scale or (1.0, 1.0, 1.0), dtype=np.float64)
    points = output.points[kept] * rescale + origin
    own = grid.owner(points) == index
    return BlockObjects(points[own], output.cand_dist[kept][own],
                        output.cand_prob[kept][own]).ordered()
