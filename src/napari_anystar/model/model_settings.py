"""What a model folder says about running it: ``anystar.json`` and the paper's own weights.

``anystar.json`` (optional) may hold a ``ray_scale``, a factor on the predicted ray lengths
chosen like the thresholds on held-out synthetic data, and a ``normalization``
(``{"low", "high", "clip"}``, see :mod:`napari_anystar.normalization`), the one the model was
trained with, and an ``object_diameter``, the object size (voxels) of its training data that
the scale suggestion rescales objects to. A folder without a recorded normalisation is run
with :data:`LEGACY`, except the paper's official AnyStar-mix weights, recognised by their
published sha256 hashes and run with the reference's :data:`ANYSTAR`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from napari_anystar.normalization import ANYSTAR, LEGACY, Normalization

SETTINGS_FILE = "anystar.json"
RAY_SCALE_RANGE = (0.5, 2.0)
#: Published sha256 of the paper's AnyStar-mix ``config.json`` and ``weights_best.h5``.
PAPER_CONFIG_SHA256 = "1783c3dcfd38c0f5254664aabcac2b407f4e5cf36ab491b6334784317cc832fe"
PAPER_WEIGHTS_SHA256 = "12d013468d02a3c77f772bbbb8929275fe75a994ad797c42e3d1169cb0b2b073"
#: The training record a run writes into its model folder.
TRAINING_FILE = "training.json"
PAPER_MODEL_NOTE = "AnyStar-mix (paper weights)"

_lock = threading.Lock()
_hashes: dict[tuple[Path, int, int], str] = {}


class InvalidModelError(ValueError):
    """A folder that is not a usable StarDist3D model (one-line, user-facing message)."""


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file; cached per (path, size, modification time)."""
    file = Path(path).resolve()
    stat = file.stat()
    key = (file, stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key not in _hashes:
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _hashes[key] = digest.hexdigest()
        return _hashes[key]


def clear_hashes() -> None:
    """Forget the cached file hashes."""
    with _lock:
        _hashes.clear()


def read_settings(folder: str | Path) -> dict[str, Any]:
    """The folder's ``anystar.json`` as a dict ({} without the file)."""
    settings = Path(folder) / SETTINGS_FILE
    if not settings.is_file():
        return {}
    try:
        data = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InvalidModelError(f"{settings} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InvalidModelError(f"{settings} must hold a JSON object")
    return data


def ray_scale(folder: str | Path) -> float:
    """The factor on predicted ray lengths from ``anystar.json`` (1 when not recorded)."""
    data = read_settings(folder)
    try:
        value = float(data.get("ray_scale", 1.0))
    except (ValueError, TypeError):
        raise InvalidModelError(f"{Path(folder) / SETTINGS_FILE} needs a number 'ray_scale'"
                                ) from None
    if not RAY_SCALE_RANGE[0] <= value <= RAY_SCALE_RANGE[1]:
        raise InvalidModelError(f"{Path(folder) / SETTINGS_FILE}: ray_scale {value:g} is outside "
                                f"{RAY_SCALE_RANGE[0]:g}..{RAY_SCALE_RANGE[1]:g}")
    return value


def object_diameter(folder: str | Path) -> float | None:
    """The object size (voxels) the model was trained on, from ``anystar.json``, or None."""
    data = read_settings(folder)
    if "object_diameter" not in data:
        return None
    try:
        value = float(data["object_diameter"])
    except (ValueError, TypeError):
        value = -1.0
    if not 2.0 <= value <= 64.0:
        raise InvalidModelError(f"{Path(folder) / SETTINGS_FILE}: object_diameter must be a "
                                f"number of voxels in 2..64, got {data['object_diameter']!r}")
    return value


def recorded_normalization(folder: str | Path) -> Normalization | None:
    """The normalisation ``anystar.json`` records, or None; InvalidModelError if malformed."""
    data = read_settings(folder)
    if "normalization" not in data:
        return None
    try:
        return Normalization.from_json(data["normalization"])
    except ValueError as err:
        raise InvalidModelError(f"{Path(folder) / SETTINGS_FILE}: {err}") from None


def is_paper_model(folder: str | Path) -> bool:
    """Is this the paper's official AnyStar-mix folder (config, then weights, by sha256)?"""
    folder = Path(folder)
    config, weights = folder / "config.json", folder / "weights_best.h5"
    return (config.is_file() and weights.is_file()
            and file_sha256(config) == PAPER_CONFIG_SHA256
            and file_sha256(weights) == PAPER_WEIGHTS_SHA256)


def model_normalization(folder: str | Path) -> Normalization:
    """The recorded normalisation; else ANYSTAR for the paper's weights; else LEGACY."""
    recorded = recorded_normalization(folder)
    if recorded is not None:
        return recorded
    return ANYSTAR if is_paper_model(folder) else LEGACY


def model_note(folder: str | Path) -> str:
    """What a model listing says about the folder ("" for most): the paper's weights, or a
    training run that did not finish (cancelled, or still running or killed)."""
    return PAPER_MODEL_NOTE if is_paper_model(folder) else unfinished_training_note(folder)


def unfinished_training_note(folder: str | Path) -> str:
    """E.g. "unfinished training (interrupted at step 14 of 100)" when the folder's
    ``training.json`` says the run did not finish; "" otherwise."""
    try:
        record = json.loads((Path(folder) / TRAINING_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    status = record.get("status") if isinstance(record, dict) else None
    if not isinstance(status, str) or status == "finished":
        return ""
    step, total = record.get("steps_done"), record.get("total_steps")
    known = isinstance(step, int) and isinstance(total, int)
    where = f" at step {step} of {total}" if known else ""
    return f"unfinished training ({status}{where})"


def check_settings(folder: str | Path) -> None:
    """Raise InvalidModelError for a malformed ``anystar.json``."""
    ray_scale(folder)
    recorded_normalization(folder)
    object_diameter(folder)
