"""Training data: real image/label pairs (arrays or files), patch sampling and StarDist targets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_anystar.normalization import ANYSTAR, Normalization

VOLUME_SUFFIXES = (".tif", ".tiff", ".nii", ".nii.gz")
PAIR_SUFFIXES = (("_image", "_labels"), ("_img", "_masks"), ("_image", "_label"))


def _stem(path: Path) -> str | None:
    """File name without its volume suffix, or None for a non-volume file."""
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _volumes(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and _stem(p) is not None)


def pair_folders(images_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair volumes of two folders: ``X_image.tif`` with ``X_labels.tif``, or identical names.

    The two folders may be the same (then only the suffix rule applies). ValueError (one
    line) for empty folders or files without a partner.
    """
    images, labels = _volumes(Path(images_dir)), _volumes(Path(labels_dir))
    same_folder = Path(images_dir).resolve() == Path(labels_dir).resolve()
    if not images:
        raise ValueError(f"no .tif/.nii volumes in {images_dir}")
    if not labels:
        raise ValueError(f"no .tif/.nii volumes in {labels_dir}")
    by_stem = {_stem(p): p for p in labels}
    label_suffixes = tuple(b for _, b in PAIR_SUFFIXES)
    pairs = []
    for image in images:
        stem = _stem(image)
        if same_folder and stem.endswith(label_suffixes):
            continue  # a label volume in the shared folder
        keys = [stem[: -len(a)] + b for a, b in PAIR_SUFFIXES if stem.endswith(a)]
        keys += [] if same_folder else [stem]
        match = next((by_stem[k] for k in keys if k in by_stem), None)
        if match is None:
            raise ValueError(f"no label volume in {labels_dir} pairs with {image.name}")
        pairs.append((image, match))
    if not pairs:
        raise ValueError(f"no image/label pairs found in {images_dir} and {labels_dir}")
    if not same_folder:
        used = {p[1] for p in pairs}
        extra = [p.name for p in labels if p not in used]
        if extra:
            raise ValueError(f"label volume {extra[0]} has no image in {images_dir}")
    return pairs


def read_array(item: np.ndarray | str | Path) -> np.ndarray:
    """An array as is, or the volume stored in a .tif/.nii file."""
    if isinstance(item, np.ndarray):
        return item
    path = Path(item)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        from napari_anystar.volume_io import read_volume
    except ImportError:
        read_volume = None
    if read_volume is not None:
        return np.asarray(read_volume(path)[0])
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    import nibabel

    return np.asarray(nibabel.load(str(path)).get_fdata())


def _describe(item, index: int) -> str:
    return Path(item).name if isinstance(item, (str, Path)) else f"array #{index + 1}"


def load_pairs(
    images: Sequence[np.ndarray | str | Path],
    labels: Sequence[np.ndarray | str | Path],
    norm: Normalization | None = ANYSTAR,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Checked (image float32, labels int32) pairs, images normalised with ``norm`` (the
    model's, as at prediction); ValueError with one line."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label volumes: they must pair up")
    pairs, n_objects = [], 0
    for i, (image_item, label_item) in enumerate(zip(images, labels, strict=True)):
        image, lbl = read_array(image_item), read_array(label_item)
        what = _describe(image_item, i)
        if image.ndim != 3 or lbl.ndim != 3:
            shape = image.shape if image.ndim != 3 else lbl.shape
            raise ValueError(f"{what}: training needs 3D volumes, got shape {shape}")
        if image.shape != lbl.shape:
            raise ValueError(
                f"{what}: image shape {image.shape} differs from labels shape {lbl.shape}"
            )
        if not np.issubdtype(lbl.dtype, np.integer) and not np.all(np.mod(lbl, 1) == 0):
            raise ValueError(f"{_describe(label_item, i)}: labels must be integers")
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{what}: image contains NaN or infinite values")
        lbl = lbl.astype(np.int32)
        n_objects += int(lbl.max() > 0)
        x = np.asarray(image, dtype=np.float32) if norm is None else norm.apply(image)
        pairs.append((x, lbl))
    if not pairs:
        raise ValueError("no image/label pairs given")
    if n_objects == 0:
        raise ValueError("the label volumes contain no objects (all zero)")
    return pairs


def sample_patch(
    image: np.ndarray,
    labels: np.ndarray,
    patch: int,
    rng: np.random.Generator,
    *,
    permute_all_axes: bool,
    foreground_prob: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``patch``^3 crop with random flips and axis permutation.

    Volumes smaller than the patch are padded (image: reflect, labels: -1 = no loss).
    With ``foreground_prob`` the crop is centred near a random foreground voxel.
    ``permute_all_axes`` False only swaps Y and X (for anisotropic real data).
    """
    pad = [(0, max(0, patch - s)) for s in image.shape]
    if any(p[1] for p in pad):
        image = np.pad(image, pad, mode="reflect" if min(image.shape) > 1 else "edge")
        labels = np.pad(labels, pad, mode="constant", constant_values=-1)
    shape = np.array(image.shape)
    if rng.random() < foreground_prob and labels.max() > 0:
        fg = np.flatnonzero(labels > 0)
        centre = np.array(np.unravel_index(fg[rng.integers(len(fg))], labels.shape))
        start = np.clip(centre - patch // 2 + rng.integers(-patch // 4, patch // 4 + 1, 3),
                        0, shape - patch)
    else:
        start = np.array([rng.integers(0, s - patch + 1) for s in shape])
    window = tuple(slice(int(s), int(s) + patch) for s in start)
    x, y = image[window], labels[window]
    flips = tuple(int(a) for a in np.flatnonzero(rng.random(3) < 0.5))
    if flips:
        x, y = np.flip(x, flips), np.flip(y, flips)
    order = tuple(int(a) for a in rng.permutation(3)) if permute_all_axes else (
        (0, 2, 1) if rng.random() < 0.5 else (0, 1, 2))
    x, y = np.transpose(x, order), np.transpose(y, order)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int32)


def make_targets(labels: Sequence[np.ndarray], rays, grid: tuple[int, int, int]):
    """StarDist3D targets ``(prob, dist+mask)`` for a batch of label patches.

    Matches ``stardist.models.model3d.StarDistData3D``: negative labels switch the loss
    off (prob = -1 there).
    """
    from stardist.geometry import star_dist3D
    from stardist.utils import edt_prob

    sub = tuple(slice(0, None, g) for g in grid)
    probs, dists = [], []
    for y in labels:
        ignore = y[sub] < 0
        y = np.maximum(y, 0)
        prob = edt_prob(y)[sub].astype(np.float32)
        dist = star_dist3D(y, rays, mode="cpp", grid=grid).astype(np.float32)
        prob[ignore] = -1
        probs.append(prob)
        dists.append(dist)
    prob = np.stack(probs)[..., None]
    mask = np.maximum(prob, 0)
    dist = np.concatenate([np.stack(dists), mask], axis=-1)
    return prob, dist


def mark_fragments(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Labels with every instance under ``min_voxels`` voxels set to -1 (no loss there).

    After A(.) most synthetic instances are slivers cut by crop borders, rotation padding and
    drop-out holes; as targets they would each get a probability peak and teach the network
    short rays. As *ignore* they are neither objects nor background.
    """
    if min_voxels <= 0 or labels.max() <= 0:
        return labels
    counts = np.bincount(np.maximum(labels, 0).ravel())
    small = np.flatnonzero(counts < min_voxels)
    small = small[small > 0]
    if not len(small):
        return labels
    out = labels.copy()
    out[np.isin(labels, small)] = -1
    return out
