"""Run a StarDist3D network on a volume, tile by tile, and keep its output for any threshold.

The network part mirrors StarDist's own sparse prediction (`predict_instances` with the
default ``sparse=True``): the raw image is resized with ``scipy.ndimage.zoom(order=1)`` when a
scale is given, normalised (the settings' or the model's own :class:`Normalization`, applied
through csbdeep's ``PercentileNormalizer`` as StarDist does), padded, cut into
overlapping tiles, and object candidates (probability above a floor, none within
:data:`EDGE_BAND` of the volume's edges: StarDist's ``b``) are collected in StarDist's order.
:class:`NetworkOutput` keeps these candidates, so
:class:`~napari_anystar.model.instances.InstanceSolver` can rebuild StarDist's instances for
any probability threshold above the floor without running the network again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from napari_anystar._tf import import_tensorflow, tf_call, tf_owned
from napari_anystar.normalization import LEGACY, Normalization

#: Edge length the network windows should have after scaling (the AnyStar training patch size).
WINDOW = 64
#: Smallest accepted edge length (voxels, after scaling) of a volume.
MIN_SIZE = 8
#: Candidates are stored for probabilities above this floor (lowest reachable threshold).
DEFAULT_MIN_PROB = 0.05
#: Grid cells along the volume's edges where no candidate is taken (StarDist's ``b``, 2 by
#: default: 4 voxels at grid 2). A volume is a crop of the specimen, and a nucleus the crop
#: cuts is still an object (annotations label it): with StarDist's band, every object whose
#: centre lies within 4 scaled voxels of an edge is lost (27 % of the objects of a 64^3
#: synthetic volume even with perfect network maps; 43 of the 171 nuclei the default misses
#: on the BBBC050 dev folder, measured with the band).
EDGE_BAND = 0
#: Where the network may run; ``DEFAULT_DEVICE`` uses a GPU when TensorFlow sees one.
DEVICES = ("auto", "cpu", "gpu")
DEFAULT_DEVICE = "auto"


@dataclass(frozen=True)
class PredictSettings:
    """How a volume is fed to the network (thresholds are chosen later, live).

    ``norm`` None means the model's own normalisation (see :meth:`for_model`). ``invert``:
    the network sees the negated volume (objects darker than their surroundings, see
    :mod:`.polarity`).
    """

    norm: Normalization | None = None
    scale: tuple[float, float, float] | None = None
    n_tiles: tuple[int, int, int] | None = None
    device: str = DEFAULT_DEVICE
    invert: bool = False

    def validate(self) -> None:
        if self.norm is not None:
            if not isinstance(self.norm, Normalization):
                raise ValueError(f"norm must be a Normalization or None, got {self.norm!r}.")
            self.norm.validate()
        if self.scale is not None and (len(self.scale) != 3
                                       or not all(np.isfinite(s) and s > 0 for s in self.scale)):
            raise ValueError(f"Scale must be three positive numbers (Z, Y, X), got {self.scale}.")
        if self.n_tiles is not None and (len(self.n_tiles) != 3
                                         or not all(int(t) == t and t >= 1 for t in self.n_tiles)):
            raise ValueError(f"Tiles must be three integers >= 1 (Z, Y, X), got {self.n_tiles}.")
        if self.device not in DEVICES:
            raise ValueError(f"Device must be one of {', '.join(DEVICES)}, got {self.device!r}.")

    def for_model(self, model) -> PredictSettings:
        """These settings with ``norm`` set: the model's ``anystar_normalization`` if None
        (set by ``registry.load_model``; :data:`LEGACY` for a model loaded otherwise)."""
        if self.norm is not None:
            return self
        return replace(self, norm=getattr(model, "anystar_normalization", LEGACY))


@dataclass
class NetworkOutput:
    """Network output of one volume: StarDist's object candidates above ``min_prob``.

    ``points`` are candidate centres in voxels of the scaled image (grid already applied),
    ``cand_prob``/``cand_dist`` their probability and ray distances (float32, distances
    clipped at 1e-3, then times the model's ``anystar_ray_scale`` if it has one), all in the
    order StarDist's sparse prediction produces them.
    ``prob`` is the dense probability map at grid resolution (for display).
    """

    image_shape: tuple[int, int, int]
    scaled_shape: tuple[int, int, int]
    scale: tuple[float, float, float] | None
    n_tiles: tuple[int, int, int]
    tiles_total: int
    grid: tuple[int, int, int]
    min_prob: float
    points: np.ndarray
    cand_prob: np.ndarray
    cand_dist: np.ndarray
    prob: np.ndarray = field(repr=False)

    @property
    def n_candidates(self) -> int:
        return len(self.cand_prob)

    def count_candidates(self, prob_thresh: float) -> int:
        """Number of candidates StarDist would pass to NMS at this probability threshold."""
        return int(np.count_nonzero(self.cand_prob > np.float32(prob_thresh)))


def oriented(image: np.ndarray, invert: bool) -> np.ndarray:
    """``image`` as the network sees it: negated (float32) with ``invert``
    (``PredictSettings.invert``)."""
    if not invert:
        return image
    return np.negative(np.asarray(image, dtype=np.float32))


def check_volume(image: np.ndarray, *, scale: tuple[float, ...] | None = None,
                 min_size: int = MIN_SIZE) -> None:
    """Raise ValueError with a one-line message if ``image`` cannot be segmented."""
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[-1] in (3, 4):
        raise ValueError(f"Expected a single-channel 3D volume, got shape {image.shape} "
                         "(looks like an RGB/RGBA image).")
    if image.ndim != 3:
        raise ValueError(f"Expected a 3D volume (Z, Y, X), got {image.ndim}D data "
                         f"of shape {image.shape}.")
    if image.size == 0:
        raise ValueError(f"The volume is empty (shape {image.shape}).")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"Expected a numeric volume, got dtype {image.dtype}.")
    if np.iscomplexobj(image):
        raise ValueError("Complex-valued volumes are not supported.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError("The volume contains NaN or infinite values.")
    if image.min() == image.max():
        raise ValueError("The volume is constant (all voxels have the same value).")
    sc = (1.0, 1.0, 1.0) if scale is None else tuple(scale)
    scaled = tuple(round(s * f) for s, f in zip(image.shape, sc, strict=False))
    if min(scaled) < min_size:
        raise ValueError(f"The volume is too small for the network: shape {scaled} after "
                         f"scaling, each axis needs at least {min_size} voxels.")


def auto_n_tiles(shape: tuple[int, ...], window: int = WINDOW) -> tuple[int, int, int]:
    """Tiles per axis so that each network window is about ``window`` voxels long."""
    return tuple(max(1, round(s / window)) for s in shape)


def scaled_shape(shape: tuple[int, ...], scale: tuple[float, ...] | None) -> tuple[int, int, int]:
    """Shape of the volume after ``scipy.ndimage.zoom(image, scale)``."""
    if scale is None:
        return tuple(int(s) for s in shape)
    return tuple(round(s * f) for s, f in zip(shape, scale, strict=False))


def min_network_size(model) -> int:
    """Smallest edge length the model accepts (its U-Net divisor, at least MIN_SIZE)."""
    return max(MIN_SIZE, *model._axes_div_by("ZYX"))


def warm_network(model) -> None:
    """Pay a model's one-time prediction costs now, on TensorFlow's owner thread: StarDist
    measures the network's receptive field (its tile overlap) with two predictions of a
    128^3 probe on the first tiled prediction (about 1.5 s on 2 CPU cores), and
    :func:`network_forward` traces the network once, for every input shape (a small input)."""
    tf_call(model._axes_tile_overlap, "ZYX")
    edge = min_network_size(model)
    shape = (edge, edge, edge, int(model.config.n_channel_in))
    tf_call(network_forward(model), np.zeros(shape, np.float32))


#: Attribute of a StarDist model that keeps its :func:`network_forward`.
FORWARD_ATTR = "anystar_forward"


class _Forward:
    """A Keras network as one TensorFlow function, traced once for inputs of any shape:
    StarDist's ``predict_direct`` (one unbatched input, Z Y X C -> its outputs) without Keras's
    ``predict``, which wraps every call in a data pipeline (0.05-0.2 s per call on 2 cores; a
    default Run calls the network 4-6 times) and traces again at the first input of a second
    shape. Outputs equal ``predict``'s."""

    def __init__(self, keras_model) -> None:
        tf = import_tensorflow()
        spec = tf.TensorSpec(keras_model.input_shape, tf.float32)
        self.traced = tf.function(lambda x: keras_model(x, training=False),
                                  input_signature=[spec])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.traced(np.asarray(x, np.float32)[np.newaxis])
        return tuple(y.numpy()[0] for y in outputs)


def network_forward(model) -> _Forward:
    """``model``'s :class:`_Forward`, made once per model (call it on the owner thread)."""
    forward = getattr(model, FORWARD_ATTR, None)
    if forward is None:
        forward = _Forward(model.keras_model)
        setattr(model, FORWARD_ATTR, forward)
    return forward


def _device_context(device: str):
    if device == "auto":
        return contextlib.nullcontext()
    tf = import_tensorflow()

    if device == "gpu":
        if not tf.config.list_logical_devices("GPU"):
            raise ValueError("No GPU is available to TensorFlow; choose 'cpu' or 'auto'.")
        return tf.device("/GPU:0")
    return tf.device("/CPU:0")


def predict_network(model, image: np.ndarray, settings: PredictSettings | None = None, *,
                    min_prob: float = DEFAULT_MIN_PROB,
                    ) -> Generator[tuple[int, int], None, NetworkOutput]:
    """Run the network tile by tile; yields ``(tiles_done, tiles_total)``.

    The return value (``StopIteration.value``) is the :class:`NetworkOutput`. Closing the
    generator cancels the prediction at the next tile boundary. Each step runs on
    TensorFlow's owner thread (:func:`napari_anystar._tf.tf_owned`).
    """
    return tf_owned(_predict_network(model, image, settings, min_prob=min_prob))


def _predict_network(model, image: np.ndarray, settings: PredictSettings | None, *,
                     min_prob: float) -> Generator[tuple[int, int], None, NetworkOutput]:
    settings = (settings or PredictSettings()).for_model(model)
    settings.validate()
    image = np.asarray(image)
    check_volume(image, scale=settings.scale, min_size=min_network_size(model))
    image = oriented(image, settings.invert)
    device_ctx = _device_context(settings.device)  # fail early on a missing GPU

    img = image
    if settings.scale is not None and any(s != 1 for s in settings.scale):
        from scipy import ndimage as ndi

        img = ndi.zoom(image, tuple(settings.scale), order=1)
    n_tiles = tuple(int(t) for t in (settings.n_tiles or auto_n_tiles(img.shape)))

    counted: dict[str, int] = {}

    def _progress(iterable, disable=True, total=None):
        counted["total"] = int(total)
        return iterable

    (x, _axes, axes_net, _div_by, _permute, resizer, n_tiles, _grid, grid_dict, channel,
     _predict_direct, tiling_setup) = model._predict_setup(
        img, None, settings.norm.csbdeep(), n_tiles, _progress, {"verbose": 0})
    forward = network_forward(model)

    def run(tile):
        with device_ctx:
            return forward(tile)

    grid = tuple(int(g) for g in model.config.grid)
    n_rays = int(model.config.n_rays)
    thr = np.float32(min_prob)
    from stardist.nms import _ind_prob_thresh

    def _prep(prob, dist):
        prob = np.take(prob, 0, axis=channel)
        dist = np.maximum(1e-3, np.moveaxis(dist, channel, -1))
        return prob, dist

    probs, dists, points = [], [], []
    if np.prod(n_tiles) > 1:
        tile_gen, out_shape, _empty = tiling_setup()
        total = counted["total"]
        sh = list(out_shape)
        sh[channel] = 1
        dense = np.zeros(tuple(s for i, s in enumerate(out_shape) if i != channel), np.float32)
        yield 0, total
        for done, (tile, s_src, s_dst) in enumerate(tile_gen, start=1):
            prob_t, dist_t = run(tile)[:2]
            s_src = [slice(s.start // grid_dict.get(a, 1), s.stop // grid_dict.get(a, 1))
                     for s, a in zip(s_src, axes_net, strict=False)]
            s_dst = [slice(s.start // grid_dict.get(a, 1), s.stop // grid_dict.get(a, 1))
                     for s, a in zip(s_dst, axes_net, strict=False)]
            s_src[channel] = slice(None)
            s_dst[channel] = slice(None)
            prob_t, dist_t = _prep(prob_t[tuple(s_src)], dist_t[tuple(s_src)])
            bs = [(EDGE_BAND if s.start == 0 else -1, EDGE_BAND if s.stop == n else -1)
                  for s, n in zip(s_dst, sh, strict=False)]
            bs.pop(channel)
            inds = _ind_prob_thresh(prob_t, thr, b=bs)
            probs.append(prob_t[inds])
            dists.append(dist_t[inds])
            offset = [s.start for s in s_dst]
            offset.pop(channel)
            points.append((np.stack(np.where(inds), axis=1) + np.array(offset)) * np.array(grid))
            dst = tuple(s for i, s in enumerate(s_dst) if i != channel)
            dense[dst] = prob_t
            yield done, total
    else:
        yield 0, 1
        prob_t, dist_t = _prep(*run(x)[:2])
        inds = _ind_prob_thresh(prob_t, thr, b=EDGE_BAND)
        probs.append(prob_t[inds])
        dists.append(dist_t[inds])
        points.append(np.stack(np.where(inds), axis=1) * np.array(grid))
        dense = prob_t
        total = 1
        yield 1, 1

    cand_prob = np.concatenate(probs).astype(np.float32, copy=False)
    cand_dist = np.concatenate(dists).reshape(-1, n_rays).astype(np.float32, copy=False)
    cand_dist = cand_dist * np.float32(getattr(model, "anystar_ray_scale", 1.0))
    cand_points = np.concatenate(points).reshape(-1, 3).astype(np.int64, copy=False)
    idx = resizer.filter_points(x.ndim, cand_points, axes_net)
    crop = tuple(slice(0, math.ceil(s / g)) for s, g in zip(img.shape, grid, strict=False))
    return NetworkOutput(
        image_shape=tuple(int(s) for s in image.shape),
        scaled_shape=tuple(int(s) for s in img.shape),
        scale=None if settings.scale is None else tuple(float(s) for s in settings.scale),
        n_tiles=tuple(int(t) for t in n_tiles),
        tiles_total=int(total),
        grid=grid,
        min_prob=float(min_prob),
        points=np.ascontiguousarray(cand_points[idx]),
        cand_prob=np.ascontiguousarray(cand_prob[idx]),
        cand_dist=np.ascontiguousarray(cand_dist[idx]),
        prob=np.ascontiguousarray(dense[crop]),
    )
