"""The augmentation sequence A(.) of AnyStar: MONAI dictionary transforms in the paper's order.

:func:`build_pipeline` composes the MONAI transforms of the authors' reference implementation
(keys ``image`` and ``label``; images trilinear/bilinear, labels nearest), steps as
``(probability) transform``:

1. ScaleIntensityd over the whole grid; 2. RandSpatialCropd of a random size between ``size``
   and the grid per axis (``random_size``: the default of MONAI 1.1, the reference's version);
3. (1) RandZoomd 0.4..1.4 (``zoom``), trilinear/nearest-exact, reflect padding, same size
   (torch's legacy ``nearest`` is not centre-aligned with ``trilinear``: it shifted labels
   about half a voxel per axis against the image; the reference has that flaw);
4. (1) RandAffined, rotations U(-pi/4, pi/4) per axis, translations U(-16, 16), reflection;
5. (1) RandBiasFieldd, coefficients U(0, 0.1); 6. (0.25) RandGaussianNoised;
7. (0.2) RandKSpaceSpikeNoised; 8. (0.8) RandAdjustContrastd;
9. (0.8) RandGaussianSmoothd, sigma U(0, 0.333) per axis independently;
10. (0.2) RandRicianNoised, std U(0, 0.05); 11. (0.5) RandGibbsNoised, alpha U(0, 0.5);
12. (0.25) RandGaussianSharpend; 13. (0.1) RandHistogramShiftd; 14. (1) RandAxisFlipd;
15. (1) RandRotate90d in a plane drawn by OneOf from (0, 1), (0, 2), (1, 2) (the reference
    always rotated in the (0, 1) plane);
16. (1) Rand3DElasticd, sigma 2..5, magnitude 8..20, scale +-0.3, shear +-0.5 on the
    reference's three coefficients (MONAI's 3D shear has six; the other three stay 0),
    zero padding, output ``size^3`` around the centre of the crop (the steps before see the
    larger crop, so zoom-out and rotation padding mostly fall outside the output);
17. ScaleIntensityd; 18. (0.2) RandCoarseDropoutd, 20 holes of 12^3 filled with 0, the same
    holes in image and labels;
19. (0.2) Gaussian / Poisson / speckle noise on the non-zero voxels (:func:`final_noise`; no
    MONAI transform exists for it), ``skimage.util.random_noise`` semantics (variance 0.01,
    Poisson on 2^ceil(log2(#levels)) levels), clipped to [0, 1].

With ``spatial=False`` only the intensity steps run on an unchanged, centre-cropped label map
(held-out volumes with realistic appearance and whole objects, for threshold tuning).
An optional point-spread function blurs g(L) before A(.) (:func:`psf_blur`: real
microscopes draw soft object edges, while g(L) has step edges and A(.)'s own smoothing is at most
a third of a voxel); the labels stay the objects' true extent.
An optional axial blur (:func:`axial_blur`, a point-spread function longer along one axis, as
in widefield and confocal stacks) runs before the final noise.

The Compose is built once per process and setting; before each sample it is re-seeded
from the caller's generator, so a seed fully determines the result. MONAI metadata tracking is
off while it runs (plain tensors) and a lock serialises callers, the transforms being stateful.
"""

from __future__ import annotations

import math
import threading
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from monai.transforms import Compose

__all__ = ["augment", "axial_blur", "build_pipeline", "final_noise", "psf_blur"]

FINAL_NOISE_PROB = 0.2
_MAX_SEED = 2**32  # MONAI's set_random_state range
_LOCK = threading.Lock()


DEFAULT_ZOOM = (0.4, 1.4)
#: Axial blur: Gaussian sigma (voxels) along the long axis of the point-spread function.
AXIAL_SIGMA = (0.5, 2.0)
#: PSF blur of g(L): isotropic Gaussian sigma (voxels of the synthesis grid, where objects are
#: about twice the size the network is run at, so 0.25-1.5 voxels there).
PSF_SIGMA = (0.5, 3.0)


@lru_cache(maxsize=8)
def build_pipeline(
    size: int, zoom: tuple[float, float] = DEFAULT_ZOOM, spatial: bool = True,
    aligned: bool = True, random_crop: bool = True,
) -> Compose:
    """The MONAI Compose of A(.) (without the final noise) for a ``size^3`` output
    (``random_crop`` False: step 2 crops ``size^3``, the pipeline before MONAI 1.1's
    defaults were matched; the November 2026 model's training data)."""
    # imported here: monai.transforms takes seconds to import
    from monai.transforms import (
        CenterSpatialCropd,
        Compose,
        OneOf,
        Rand3DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandAxisFlipd,
        RandBiasFieldd,
        RandCoarseDropoutd,
        RandGaussianNoised,
        RandGaussianSharpend,
        RandGaussianSmoothd,
        RandGibbsNoised,
        RandHistogramShiftd,
        RandKSpaceSpikeNoised,
        RandRicianNoised,
        RandRotate90d,
        RandSpatialCropd,
        RandZoomd,
        ScaleIntensityd,
    )

    # a performance note from inside RandHistogramShift, shown once per process
    warnings.filterwarnings(
        "ignore", r"torch\.searchsorted\(\): input value tensor is non-contiguous", UserWarning
    )
    image, both = ["image"], ["image", "label"]
    blur = (0.0, 0.333)
    rotate90 = [
        RandRotate90d(both, prob=1.0, max_k=3, spatial_axes=plane)
        for plane in ((0, 1), (0, 2), (1, 2))
    ]
    intensity = [
        RandBiasFieldd(image, prob=1.0, coeff_range=(0.0, 0.1)),
        RandGaussianNoised(image, prob=0.25),
        RandKSpaceSpikeNoised(image, prob=0.2),
        RandAdjustContrastd(image, prob=0.8),
        RandGaussianSmoothd(image, prob=0.8, sigma_x=blur, sigma_y=blur, sigma_z=blur),
        RandRicianNoised(image, prob=0.2, std=0.05),
        RandGibbsNoised(image, prob=0.5, alpha=(0.0, 0.5)),
        RandGaussianSharpend(image, prob=0.25),
        RandHistogramShiftd(image, prob=0.1),
    ]
    if not spatial:
        return Compose([ScaleIntensityd(image), CenterSpatialCropd(both, (size,) * 3),
                        *intensity, ScaleIntensityd(image)])
    return Compose(
        [
            ScaleIntensityd(image),
            RandSpatialCropd(both, roi_size=(size,) * 3, random_size=random_crop),
            RandZoomd(both, prob=1.0, min_zoom=zoom[0], max_zoom=zoom[1],
                      mode=("trilinear", "nearest-exact" if aligned else "nearest"),
                      padding_mode="reflect",
                      keep_size=True),
            RandAffined(both, prob=1.0, rotate_range=(math.pi / 4,) * 3,
                        translate_range=(16,) * 3, mode=("bilinear", "nearest"),
                        padding_mode="reflection"),
            *intensity,
            RandAxisFlipd(both, prob=1.0),
            OneOf(rotate90),
            Rand3DElasticd(both, prob=1.0, sigma_range=(2, 5), magnitude_range=(8, 20),
                           spatial_size=(size,) * 3, scale_range=(0.3,) * 3, shear_range=(0.5,) * 3,
                           mode=("bilinear", "nearest"), padding_mode="zeros"),
            ScaleIntensityd(image),
            RandCoarseDropoutd(both, prob=0.2, holes=20, spatial_size=12, fill_value=0),
        ]
    )


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


def axial_blur(rng: np.random.Generator, image: np.ndarray, prob: float) -> np.ndarray:
    """With ``prob``, a Gaussian blur of sigma U(:data:`AXIAL_SIGMA`) along one random axis."""
    if prob <= 0 or rng.uniform() >= prob:
        return image
    from scipy.ndimage import gaussian_filter1d

    axis, sigma = int(rng.integers(3)), float(rng.uniform(*AXIAL_SIGMA))
    return gaussian_filter1d(image, sigma, axis=axis, mode="reflect").astype(np.float32)


def psf_blur(rng: np.random.Generator, image: np.ndarray, prob: float) -> np.ndarray:
    """With ``prob``, an isotropic Gaussian blur of sigma U(:data:`PSF_SIGMA`) voxels."""
    if prob <= 0 or rng.uniform() >= prob:
        return image
    from scipy.ndimage import gaussian_filter

    sigma = float(rng.uniform(*PSF_SIGMA))
    return gaussian_filter(image, sigma, mode="reflect").astype(np.float32)


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    size: int,
    *,
    zoom: tuple[float, float] = DEFAULT_ZOOM,
    spatial: bool = True,
    axial_blur_prob: float = 0.0,
    aligned: bool = True,
    random_crop: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A(g(L)), A(L): float32 image in [0, 1] and int32 labels (ids not yet unique), ``size^3``."""
    from monai.data import get_track_meta, set_track_meta

    pipeline = build_pipeline(size, tuple(zoom), spatial, aligned, random_crop)
    data = {
        "image": torch.from_numpy(np.ascontiguousarray(image, np.float32)[None]),
        "label": torch.from_numpy(np.ascontiguousarray(labels, np.float32)[None]),
    }
    seed = int(rng.integers(_MAX_SEED))
    with _LOCK, torch.no_grad():
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            pipeline.set_random_state(seed=seed)
            out = pipeline(data)
        finally:
            set_track_meta(tracking)
    img = np.clip(np.nan_to_num(np.asarray(out["image"][0], dtype=np.float32)), 0, 1)
    img = final_noise(rng, axial_blur(rng, img, axial_blur_prob))
    return img, np.rint(np.asarray(out["label"][0])).astype(np.int32)
