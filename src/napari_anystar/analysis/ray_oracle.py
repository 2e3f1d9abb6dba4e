"""Where a model loses accuracy: its probability map or its ray lengths.

A diagnostic that needs reference labels: the network's candidates keep their positions and
probabilities, and their ray lengths are replaced by those the labels give at the same grid
points (StarDist's ``star_dist3D``, at the scale the network ran at). Scoring the result
against the labels gives the accuracy the model's probabilities would reach with correct
rays; ``size`` and ``shape`` correct one half of the rays' error each.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..model.predict import NetworkOutput

#: What of the reference rays a candidate inside an object takes.
RayPart = Literal["rays", "size", "shape"]
RAY_PARTS: tuple[RayPart, ...] = ("rays", "size", "shape")


def labels_at_network_scale(output: NetworkOutput, labels: np.ndarray) -> np.ndarray:
    """``labels`` (the input image's shape) resampled by nearest neighbour to the scaled
    volume the network saw, as the prediction resamples the image."""
    labels = np.asarray(labels)
    if labels.shape != tuple(output.image_shape):
        raise ValueError(f"labels of shape {labels.shape} do not match the image the network "
                         f"ran on {tuple(output.image_shape)}")
    if output.scale is None or all(s == 1 for s in output.scale):
        return labels
    from scipy import ndimage as ndi

    scaled = ndi.zoom(labels, tuple(output.scale), order=0)
    if scaled.shape != tuple(output.scaled_shape):
        raise ValueError(f"resampled labels {scaled.shape} != network input {output.scaled_shape}")
    return scaled


def reference_rays(output: NetworkOutput, labels: np.ndarray, rays) -> np.ndarray:
    """Ray lengths the labels give at each of ``output``'s candidates, shape
    (n_candidates, n_rays), in voxels of the scaled volume; all zero for a candidate on
    background."""
    from skimage.segmentation import relabel_sequential
    from stardist.geometry import star_dist3D

    scaled = relabel_sequential(labels_at_network_scale(output, labels))[0]
    if scaled.max() >= 2**16:  # StarDist computes the rays on 16-bit labels
        raise ValueError(f"{int(scaled.max())} objects: at most 65535 are supported")
    dist = star_dist3D(scaled.astype(np.uint16), rays, grid=tuple(output.grid))
    cells = np.asarray(output.points) // np.asarray(output.grid)
    return dist[tuple(cells.T)].astype(np.float32)


def with_reference_rays(output: NetworkOutput, reference: np.ndarray,
                        part: RayPart = "rays") -> NetworkOutput:
    """``output`` with every candidate inside an object given ``reference``'s rays
    (:func:`reference_rays`): all of them (``rays``), only their mean length with the
    network's shape (``size``), or their shape at the network's mean length (``shape``).
    Candidates on background keep the network's rays."""
    if part not in RAY_PARTS:
        raise ValueError(f"part must be one of {RAY_PARTS}, got {part!r}")
    inside = reference.max(axis=1) > 0
    net = output.cand_dist[inside].astype(np.float64)
    ref = reference[inside].astype(np.float64)
    ratio = ref.mean(axis=1, keepdims=True) / np.maximum(net.mean(axis=1, keepdims=True), 1e-3)
    new = {"rays": ref, "size": net * ratio, "shape": ref / ratio}[part]
    dist = output.cand_dist.copy()
    dist[inside] = np.maximum(new, 1e-3).astype(np.float32)
    return dataclasses.replace(output, cand_dist=dist)


def ray_error(output: NetworkOutput, reference: np.ndarray, prob_thresh: float,
              ray_scale: float = 1.0) -> dict[str, float]:
    """Mean absolute error (voxels of the scaled volume) of the network's rays against the
    reference at candidates above ``prob_thresh`` inside an object, with the model's
    ``ray_scale`` taken out; beside it the error of a guess that knows each object's median
    ray (a round shape of the right size). ``n`` is the number of candidates measured."""
    sel = (reference.max(axis=1) > 0) & (output.cand_prob > np.float32(prob_thresh))
    net = output.cand_dist[sel].astype(np.float64) / float(ray_scale)
    ref = reference[sel].astype(np.float64)
    if not len(ref):
        return {"mae": float("nan"), "median_ray_guess_mae": float("nan"), "n": 0}
    return {"mae": float(np.abs(net - ref).mean()),
            "median_ray_guess_mae": float(np.abs(ref - np.median(ref, axis=1,
                                                                   keepdims=True)).mean()),
            "n": len(ref)}
