"""Appearance g(L): per-instance GMM intensities, multiplicative Perlin texture, backgrounds.

Backgrounds (the only difference between the named generators):

The foreground is multiplied by a texture: Perlin octaves of 2, 4, 8, 16 and 32 voxels with
random weights ``U(0, 1)``, rescaled to [0, 1].

- ``plain``: bright foreground; background mean ``U(0, 1) * min(foreground means)``,
  std ``U(0, 5)``.
- ``rand``: the background is one more GMM component (mean ``U(25, 225)``, std ``U(5, 25)``), so
  instances may be brighter or darker than it.
- ``perlin``: ``b ~ U{1..20}`` background regions, the argmax of a b-channel Perlin volume
  (scales 32 and 64 voxels), each channel warped by its own smooth Perlin displacement (scales
  16/32/64, up to 16 voxels); each region is one more GMM component. The smooth channels and
  displacements are computed on a 4x coarser lattice, the argmax on a 2x coarser one.

In every mode the background is finally multiplied by the mean texture over the background.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .generators import BACKGROUND_MODES
from .perlin import fractal_perlin

__all__ = ["BACKGROUND_MODES", "perlin_regions", "synth_image"]

MEAN_RANGE = (25.0, 225.0)
STD_RANGE = (5.0, 25.0)
TEXTURE_SCALES = (2, 4, 8, 16, 32)
MAX_REGIONS = 20
REGION_SCALES = (32, 64)
WARP_SCALES = (16, 32, 64)
MAX_WARP = 16.0


def _gmm_draw(rng: np.random.Generator, classes: np.ndarray, means, stds) -> np.ndarray:
    """Voxel-wise draw from N(means[c], stds[c]) for class map ``classes``, clipped at 0."""
    noise = rng.standard_normal(classes.shape, dtype=np.float32)
    noise *= np.asarray(stds, np.float32)[classes]
    noise += np.asarray(means, np.float32)[classes]
    return np.maximum(noise, 0, out=noise)


def perlin_regions(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Region map (int, 0..b-1) of the ``perlin`` background: warped b-channel Perlin argmax."""
    n_regions = int(rng.integers(1, MAX_REGIONS + 1))
    if n_regions == 1:
        return np.zeros(shape, np.intp)
    coarse = tuple(max(4, n // 4) for n in shape)
    channels = np.empty((n_regions, 1, *coarse), np.float32)
    grids = np.empty((n_regions, *coarse, 3), np.float32)
    base = np.stack(
        np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in coarse], indexing="ij"), -1
    )[..., ::-1]  # grid_sample wants (x, y, z) = (last, middle, first) axis
    for c in range(n_regions):
        channels[c, 0] = fractal_perlin(coarse, tuple(s / 4 for s in REGION_SCALES), rng)
        warp_scales = tuple(s / 4 for s in WARP_SCALES)
        disp = np.stack([fractal_perlin(coarse, warp_scales, rng, rng.uniform(0, 1, 3))
                         for _ in range(3)], -1)[..., ::-1]
        disp *= rng.uniform(0, MAX_WARP) / (np.abs(disp).max() + 1e-6)
        # displacement in voxels of the fine grid -> normalised [-1, 1] coordinates
        grids[c] = base + disp * (2.0 / np.array(shape[::-1], np.float32))
    with torch.no_grad():
        warped = F.grid_sample(torch.from_numpy(channels), torch.from_numpy(grids),
                               mode="bilinear", padding_mode="reflection", align_corners=True)
        half = tuple(max(1, n // 2) for n in shape)
        warped = F.interpolate(warped[:, 0][None], size=half, mode="trilinear",
                               align_corners=False)[0]
    region = np.argmax(warped.numpy(), axis=0)
    index = [np.minimum(np.arange(n) * h // n, h - 1) for n, h in zip(shape, half, strict=True)]
    return region[np.ix_(*index)]


def synth_image(rng: np.random.Generator, labels: np.ndarray, background: str) -> np.ndarray:
    """g(L): float32 image of ``labels``' shape (intensities roughly 0..300, not rescaled)."""
    if background not in BACKGROUND_MODES:
        raise ValueError(f"unknown background mode {background!r}")
    n = int(labels.max())
    shape = labels.shape
    fg_means = rng.uniform(*MEAN_RANGE, n)
    fg_stds = rng.uniform(*STD_RANGE, n)
    if background == "plain":
        bg_means = [rng.uniform(0, 1) * (fg_means.min() if n else MEAN_RANGE[0])]
        bg_stds = [rng.uniform(0, 5)]
        classes = labels.astype(np.intp)
    elif background == "rand":
        bg_means = [rng.uniform(*MEAN_RANGE)]
        bg_stds = [rng.uniform(*STD_RANGE)]
        classes = labels.astype(np.intp)
    else:
        region = perlin_regions(rng, shape)
        b = int(region.max()) + 1
        bg_means = rng.uniform(*MEAN_RANGE, b)
        bg_stds = rng.uniform(*STD_RANGE, b)
        # background voxels -> classes 0..b-1, instance i -> class b + i - 1
        classes = np.where(labels > 0, labels.astype(np.intp) + (b - 1), region)
    means = np.concatenate([bg_means, fg_means])
    stds = np.concatenate([bg_stds, fg_stds])
    image = _gmm_draw(rng, classes, means, stds)
    weights = tuple(rng.uniform(0, 1, len(TEXTURE_SCALES)))
    texture = fractal_perlin(shape, TEXTURE_SCALES, rng, weights)
    texture -= texture.min()
    texture /= max(float(texture.max()), 1e-6)
    fg = labels > 0
    bg_texture = float(texture[~fg].mean()) if (~fg).any() else 1.0
    image *= np.where(fg, texture, np.float32(bg_texture))
    return image
