"""The augmentation sequence A(.) of AnyStar, in the paper's order and with its probabilities.

Every step reproduces the MONAI (1.6) transform the authors used, with the same formula and
parameter distributions, written directly in numpy/torch: MONAI's generic versions took
~1.7 s per sample here (its elastic transform alone longer than a whole sample now) and
importing ``monai.transforms`` costs seconds in every worker process. Steps as
``(probability) MONAI equivalent``:

1. ScaleIntensity over the whole grid; 2. RandSpatialCrop ``size^3``;
3. (1) RandZoom 0.4..1.4, trilinear/nearest, reflect padding;
4. (1) RandAffine, rotations U(-pi/4, pi/4) per axis, translations U(-16, 16), reflection;
5. (1) RandBiasField, degree 3, coefficients U(0, 0.1);
6. (0.25) RandGaussianNoise, std U(0, 0.1); 7. (0.2) RandKSpaceSpikeNoise (default range);
8. (0.8) RandAdjustContrast, gamma U(0.5, 4.5);
9. (0.8) RandGaussianSmooth, sigma U(0, 0.333) per axis; 10. (0.2) RandRicianNoise, std U(0, .05);
11. (0.5) RandGibbsNoise, alpha U(0, 0.5); 12. (0.25) RandGaussianSharpen (defaults);
13. (0.1) RandHistogramShift, 10 control points; 14. (1) RandAxisFlip;
15. (1) RandRotate90, k in 1..3, in a random plane (the reference always used axes (0, 1));
16. (1) Rand3DElastic, sigma 2..5, magnitude 8..20, scale +-0.3, shear +-0.5, zero padding
    (the Gaussian smoothing of the offsets is done by FFT, i.e. with periodic borders);
17. ScaleIntensity; 18. (0.2) RandCoarseDropout, 20 holes of 12^3, filled with 0;
19. (0.2) Gaussian / Poisson / speckle noise on the non-zero voxels
    (``skimage.util.random_noise`` semantics: variance 0.01, Poisson on 2^ceil(log2(#levels))
    levels), clipped to [0, 1].

Image steps run in float32; label steps use nearest-neighbour sampling and the same geometry.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.special import erf

__all__ = ["augment", "final_noise"]

FINAL_NOISE_PROB = 0.2


def _scale01(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros_like(image, dtype=np.float32)
    return ((image - low) * np.float32(1.0 / (high - low))).astype(np.float32, copy=False)


def _gauss_kernel(sigma: float) -> np.ndarray:
    """MONAI's 'erf' Gaussian kernel (truncated at 4 sigma), normalised."""
    radius = max(int(sigma * 4.0 + 0.5), 1)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    s = max(sigma, 1e-6) * math.sqrt(2.0)
    k = 0.5 * (erf((t + 0.5) / s) - erf((t - 0.5) / s))
    return (k / k.sum()).astype(np.float32)


def _blur(image: np.ndarray, sigmas) -> np.ndarray:
    out = image
    for axis, sigma in enumerate(sigmas):
        out = ndimage.correlate1d(out, _gauss_kernel(sigma), axis=axis, mode="constant")
    return out


def _sample(volume: np.ndarray, grid: torch.Tensor, mode: str, padding: str) -> np.ndarray:
    """grid_sample a 3D array at normalised (x, y, z) ``grid`` of shape (D, H, W, 3)."""
    src = torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None, None]
    out = F.grid_sample(src, grid[None], mode=mode, padding_mode=padding, align_corners=True)
    return out[0, 0].numpy()


def _centred_grid(shape) -> torch.Tensor:
    """Voxel coordinates relative to the centre, (3, D, H, W) in (z, y, x) order."""
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _to_normalised(coords: torch.Tensor, shape) -> torch.Tensor:
    """(3, D, H, W) centred voxel coordinates (z, y, x) -> grid_sample's (D, H, W, 3) (x, y, z)."""
    half = torch.tensor([max((n - 1) / 2, 1.0) for n in shape]).view(3, 1, 1, 1)
    return (coords / half).flip(0).permute(1, 2, 3, 0).contiguous()


def _rotation(angles) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _warp(image, labels, matrix, offset, padding: str, displacement=None):
    """Resample image (linear) and labels (nearest) at ``matrix @ (x + displacement) + offset``."""
    coords = _centred_grid(image.shape)
    if displacement is not None:
        coords = coords + displacement
    src = torch.einsum("ij,jdhw->idhw", torch.from_numpy(matrix.astype(np.float32)), coords)
    src = src + torch.from_numpy(offset.astype(np.float32)).view(3, 1, 1, 1)
    grid = _to_normalised(src, image.shape)
    return _sample(image, grid, "bilinear", padding), _sample(labels, grid, "nearest", padding)


def _zoom(image, labels, factor: float):
    """RandZoom with keep_size: interpolate by ``factor``, then centre-crop or reflect-pad."""
    size = image.shape
    new = [max(1, math.floor(n * factor)) for n in size]
    with torch.no_grad():
        img = F.interpolate(torch.from_numpy(image)[None, None], size=new, mode="trilinear",
                            align_corners=False)[0, 0].numpy()
        lab = F.interpolate(torch.from_numpy(labels)[None, None], size=new,
                            mode="nearest")[0, 0].numpy()
    out = []
    for arr in (img, lab):
        missing = [max(0, n - m) for n, m in zip(size, arr.shape, strict=True)]
        pads = [(d // 2, d - d // 2) for d in missing]
        if any(p for pair in pads for p in pair):
            arr = np.pad(arr, pads, mode="reflect")
        start = [(m - n) // 2 for n, m in zip(size, arr.shape, strict=True)]
        out.append(arr[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))])
    return out


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> torch.Tensor:
    """U(-1, 1) noise (3 components) smoothed by a normalised Gaussian of ``sigma`` (via FFT)."""
    noise = torch.from_numpy(rng.uniform(-1, 1, (3, *shape)).astype(np.float32))
    freqs = [torch.fft.fftfreq(n) for n in shape[:-1]] + [torch.fft.rfftfreq(shape[-1])]
    f2 = sum(f.view([-1 if i == a else 1 for i in range(3)]) ** 2 for a, f in enumerate(freqs))
    transfer = torch.exp(-2 * math.pi**2 * sigma**2 * f2)
    spectrum = torch.fft.rfftn(noise, dim=(1, 2, 3)) * transfer
    return torch.fft.irfftn(spectrum, s=shape, dim=(1, 2, 3))


def _gibbs(image: np.ndarray, alpha: float) -> np.ndarray:
    """RandGibbsNoise: keep the k-space ball of radius (1 - alpha) max(shape) sqrt(2)/2."""
    shape = np.array(image.shape)
    k = np.fft.fftshift(np.fft.fftn(image))
    centre = (shape - 1) / 2
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    k *= dist2 <= ((1 - alpha) * shape.max() * math.sqrt(2) / 2) ** 2
    return np.fft.ifftn(np.fft.ifftshift(k)).real.astype(np.float32)


def _bias_field(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """RandBiasField: ``exp`` of a degree-3 Legendre polynomial, coefficients U(0, 0.1)."""
    degree = 3
    coeff = np.zeros((degree + 1,) * 3)
    for i, j, k in np.ndindex(*coeff.shape):
        if i + j + k <= degree:
            coeff[i, j, k] = rng.uniform(0.0, 0.1)
    axes = [np.linspace(-1, 1, n) for n in image.shape]
    field = np.polynomial.legendre.leggrid3d(*axes, coeff)
    return (image * np.exp(field)).astype(np.float32)


def _kspace_spike(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """RandKSpaceSpikeNoise: one k-space voxel set to log-intensity U(0.95, 1.1) x 2.5 x mean."""
    k = np.fft.fftshift(np.fft.fftn(image))
    log_abs = np.log(np.abs(k) + 1e-10)
    level = log_abs.mean() * 2.5
    loc = tuple(int(rng.integers(0, n)) for n in image.shape)
    low, high = sorted((0.95 * level, 1.1 * level))
    k[loc] = np.exp(rng.uniform(low, high)) * np.exp(1j * np.angle(k[loc]))
    return np.fft.ifftn(np.fft.ifftshift(k)).real.astype(np.float32)


def _histogram_shift(rng: np.random.Generator, image: np.ndarray, points: int = 10) -> np.ndarray:
    """RandHistogramShift: piecewise-linear intensity map through randomly moved control points."""
    reference = np.linspace(0, 1, points)
    floating = reference.copy()
    for i in range(1, points - 1):
        floating[i] = rng.uniform(floating[i - 1], floating[i + 1])
    low, high = float(image.min()), float(image.max())
    span = high - low
    out = np.interp(image, reference * span + low, floating * span + low)
    return out.astype(np.float32)


def final_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """With p=0.2, Gaussian, Poisson or speckle noise on the non-zero voxels, clipped to [0, 1]."""
    if rng.uniform() >= FINAL_NOISE_PROB:
        return image
    mask = image > 0
    values = image[mask]
    kind = int(rng.integers(3))
    if kind == 0:
        values = values + 0.1 * rng.standard_normal(values.shape, dtype=np.float32)
    elif kind == 1:
        levels = 2.0 ** math.ceil(math.log2(max(len(np.unique(image)), 2)))
        values = (rng.poisson(values * levels) / levels).astype(np.float32)
    else:
        values = values * (1 + 0.1 * rng.standard_normal(values.shape, dtype=np.float32))
    out = image.copy()
    out[mask] = np.clip(values, 0, 1)
    return out


def augment(
    rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A(g(L)), A(L): float32 image in [0, 1] and int32 labels (ids not yet unique), ``size^3``."""
    with torch.no_grad():
        img = _scale01(image)
        start = [int(rng.integers(0, n - size + 1)) for n in img.shape]
        crop = tuple(slice(s, s + size) for s in start)
        img = np.ascontiguousarray(img[crop])
        lab = np.ascontiguousarray(labels[crop], dtype=np.float32)
        img, lab = _zoom(img, lab, float(rng.uniform(0.4, 1.4)))
        angles = rng.uniform(-math.pi / 4, math.pi / 4, 3)
        img, lab = _warp(img, lab, _rotation(angles), rng.uniform(-16, 16, 3), "reflection")
        img = _bias_field(rng, img)
        if rng.uniform() < 0.25:
            img = img + rng.normal(0.0, rng.uniform(0, 0.1), img.shape).astype(np.float32)
        if rng.uniform() < 0.2:
            img = _kspace_spike(rng, img)
        if rng.uniform() < 0.8:
            low, high = float(img.min()), float(img.max())
            span = max(high - low, 1e-7)
            img = ((img - low) / span) ** rng.uniform(0.5, 4.5) * span + low
        if rng.uniform() < 0.8:
            img = _blur(img, rng.uniform(0.0, 0.333, 3))
        if rng.uniform() < 0.2:
            std = rng.uniform(0, 0.05)
            n1, n2 = (rng.normal(0, std, img.shape).astype(np.float32) for _ in range(2))
            img = np.sqrt((img + n1) ** 2 + n2**2)
        if rng.uniform() < 0.5:
            img = _gibbs(img, rng.uniform(0.0, 0.5))
        if rng.uniform() < 0.25:
            sigma1 = rng.uniform(0.5, 1.0, 3)
            alpha = rng.uniform(10.0, 30.0)
            sigma2 = rng.uniform(0.5, sigma1)
            blur_f = _blur(img, sigma1)
            blur_g = _blur(blur_f, sigma2)
            img = blur_f + alpha * (blur_f - blur_g)
        if rng.uniform() < 0.1:
            img = _histogram_shift(rng, img)
        axis = int(rng.integers(3))
        img, lab = np.flip(img, axis), np.flip(lab, axis)
        plane = [(0, 1), (0, 2), (1, 2)][int(rng.integers(3))]
        k = int(rng.integers(1, 4))
        img, lab = np.rot90(img, k, plane), np.rot90(lab, k, plane)
        displacement = _smooth_field(rng, img.shape, rng.uniform(2, 5)) * rng.uniform(8, 20)
        scale = np.diag(1 + rng.uniform(-0.3, 0.3, 3))
        shear = np.eye(3)
        # MONAI's 3D shear with the reference's three coefficients: (0, 1), (0, 2), (1, 0)
        shear[0, 1], shear[0, 2], shear[1, 0] = rng.uniform(-0.5, 0.5, 3)
        img, lab = _warp(img, lab, shear @ scale, np.zeros(3), "zeros", displacement)
        img = _scale01(img)
        if rng.uniform() < 0.2:
            for _ in range(20):
                corner = [int(rng.integers(0, max(n - 12, 0) + 1)) for n in img.shape]
                hole = tuple(slice(c, c + 12) for c in corner)
                img[hole] = 0
                lab[hole] = 0
    img = final_noise(rng, np.clip(np.nan_to_num(img), 0, 1).astype(np.float32))
    return img, np.rint(lab).astype(np.int32)
