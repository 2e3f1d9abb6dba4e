"""Synthetic label maps L: Perlin-perturbed spheres, random drop, density padding, relabelling.

Voxel ``x`` gets the label of the closest sphere among those with ``d_i(x) < r_i`` (as the
authors' reference code does), background if there is none, with
``d_i(x) = |x - c_i| + 0.9 r_mean p(x)`` and ``p`` a Perlin volume (8 periods per axis). Sphere
``i`` can only qualify within ``r_i + 0.9 r_mean max(-p)`` of its centre, so it is evaluated
inside that bounding box only, with a running minimum and argmin: the same map as the dense
voxels x spheres matrix, without the matrix.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label as _label_same_value

from .perlin import perlin3d

__all__ = [
    "PAD_MODES",
    "density_pad",
    "grid_centres",
    "make_unique",
    "random_spheres",
    "spheres_label_map",
    "synth_label_map",
]

PAD_MODES = ("constant", "reflect")
NOISE_PERIODS = 8
NOISE_WEIGHT = 0.9


def grid_centres(grid_size: int, mean_radius: float) -> np.ndarray:
    """Regular grid of sphere centres, spacing ``2 r_mean`` (24, 48, 72, 96 for 128 and 12)."""
    axis = np.arange(0, grid_size, 2 * mean_radius)[1:-1]
    zz, yy, xx = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)


def random_spheres(
    rng: np.random.Generator, grid_size: int, mean_radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Jittered grid centres (U(-0.5, 0.5) r_mean); ``U{floor(2n/3)..n-1}`` of them kept (at
    least one), as in the reference; radii r_mean U(0.6, 1.2)."""
    centres = grid_centres(grid_size, mean_radius)
    n = len(centres)
    centres = centres + rng.uniform(-0.5, 0.5, centres.shape) * mean_radius
    n_keep = max(1, int(rng.integers(2 * n // 3, n)) if n > 1 else n)
    keep = np.sort(rng.permutation(n)[:n_keep])
    radii = mean_radius * rng.uniform(0.6, 1.2, n_keep)
    return centres[keep].astype(np.float32), radii.astype(np.float32)


def spheres_label_map(
    shape: tuple[int, int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    noise: np.ndarray,
    mean_radius: float,
) -> np.ndarray:
    """uint16 map: label ``i + 1`` where sphere ``i`` is the closest of those with ``d_i < r_i``."""
    offset = (NOISE_WEIGHT * mean_radius * noise).astype(np.float32)
    slack = max(0.0, -float(offset.min())) + 1.0
    best = np.full(shape, np.inf, np.float32)
    arg = np.zeros(shape, np.uint16)
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    for i, (centre, radius) in enumerate(zip(centres, radii, strict=True)):
        reach = float(radius) + slack
        lo = [max(0, int(np.floor(c - reach))) for c in centre]
        hi = [min(n, int(np.ceil(c + reach)) + 1) for c, n in zip(centre, shape, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        dz, dy, dx = ((ax[a:b] - c) ** 2 for ax, a, b, c in zip(axes, lo, hi, centre, strict=True))
        dist = dz[:, None, None] + dy[None, :, None] + dx[None, None, :]
        np.sqrt(dist, out=dist)
        dist += offset[box]
        closer = (dist < best[box]) & (dist < radius)
        best[box][closer] = dist[closer]
        arg[box][closer] = i + 1
    return arg


def density_pad(labels: np.ndarray, pads: tuple[int, int, int], mode: str) -> np.ndarray:
    """Pad axis ``a`` by ``pads[a]`` per side (``constant``/``reflect``), resize back (nearest).

    With ``reflect``, every mirrored copy gets its own ids (int32 result): an instance and its
    mirror image that touch across the mirror plane stay two star-shaped instances instead of
    merging into one V-shaped component.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"unknown padding mode {mode!r}")
    out = labels
    tiles = []  # per axis: index of the mirrored copy each output voxel comes from
    for axis, pad in enumerate(pads):
        n = labels.shape[axis]
        if pad <= 0:
            tiles.append(np.zeros(n, np.int64))
            continue
        width = [(0, 0)] * labels.ndim
        width[axis] = (pad, pad)
        out = np.pad(out, width, mode=mode)
        n_in = out.shape[axis]
        index = np.minimum(((np.arange(n) + 0.5) * n_in / n).astype(np.intp), n_in - 1)
        out = np.take(out, index, axis=axis)
        tile = np.floor_divide(index - pad, n)
        tiles.append(tile - tile.min())
    if mode != "reflect" or not any(t.any() for t in tiles):
        return out
    step = int(labels.max()) + 1
    code = np.zeros((1, 1, 1), np.int32)
    for axis, tile in enumerate(tiles):
        shape = [1, 1, 1]
        shape[axis] = -1
        code = code * (int(tile.max()) + 1) + tile.astype(np.int32).reshape(shape)
    shifted = out.astype(np.int32)
    np.add(shifted, code * np.int32(step), out=shifted, where=out > 0)
    return shifted


def make_unique(labels: np.ndarray) -> np.ndarray:
    """Split every label into its connected components (26-connectivity); ids 1..n, uint16.

    Two voxels belong to the same component when they touch and carry the same label.
    """
    out, n = _label_same_value(labels, background=0, connectivity=3, return_num=True)
    if n >= 2**16:
        raise ValueError("too many instances for a uint16 label map")
    return out.astype(np.uint16)


def synth_label_map(
    rng: np.random.Generator,
    grid_size: int,
    mean_radius: float,
    pad_choices: tuple[int, ...],
) -> np.ndarray:
    """One label map L on ``grid_size^3``: spheres, density padding, unique consecutive ids."""
    shape = (grid_size,) * 3
    centres, radii = random_spheres(rng, grid_size, mean_radius)
    noise = perlin3d(shape, NOISE_PERIODS, rng)
    labels = spheres_label_map(shape, centres, radii, noise, mean_radius)
    pads = tuple(int(rng.choice(pad_choices)) for _ in range(3))
    mode = PAD_MODES[int(rng.integers(len(PAD_MODES)))]
    return make_unique(density_pad(labels, pads, mode))
