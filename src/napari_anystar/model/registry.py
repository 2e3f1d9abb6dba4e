"""Where models come from: the one list of StarDist3D model folders the plugin can use.

Three sources, listed in this order:

- ``bundled``: folders shipped inside the package (``napari_anystar/models/<name>/``);
- ``user``: folders in :func:`napari_anystar._paths.user_models_dir` (training and
  downloads save there);
- ``folder``: any folder the user picked, remembered in ``model_folders.json`` in
  :func:`napari_anystar._paths.user_config_dir` (folders that disappeared are skipped).

A model folder is StarDist's own format: ``config.json`` (3D, one input channel),
``weights_best.h5`` (or ``weights_last.h5``) and optionally ``thresholds.json``; ours may add
``anystar.json`` with a ray scale and the normalisation the model was trained with (see
:mod:`.model_settings`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_anystar._paths import user_config_dir, user_models_dir
from napari_anystar._tf import stardist_models, tf_call

from .model_settings import (
    SETTINGS_FILE,
    InvalidModelError,
    check_settings,
    clear_hashes,
    file_sha256,
    model_normalization,
    model_note,
    object_diameter,
    ray_scale,
)

if TYPE_CHECKING:
    from stardist.models import StarDist3D

__all__ = [
    "BUNDLED_MODELS_DIR",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_THRESHOLDS",
    "NO_MODELS_MESSAGE",
    "InvalidModelError",
    "ModelEntry",
    "clear_caches",
    "default_model",
    "list_models",
    "load_model",
    "model_fingerprint",
    "model_normalization",
    "model_note",
    "model_thresholds",
    "notify_models_changed",
    "on_models_changed",
    "ray_scale",
    "remember_model_folder",
    "resolve_model",
    "validate_model_folder",
    "weights_file",
]

log = logging.getLogger(__name__)

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_NAME = "as-mix-lite"
DEFAULT_THRESHOLDS = (0.5, 0.4)  # StarDist's own defaults when a model has no thresholds.json
WEIGHT_NAMES = ("weights_best.h5", "weights_last.h5")
NO_MODELS_MESSAGE = (
    "No StarDist3D model available: add a model folder (config.json + weights_best.h5) "
    "with 'anystar models --add DIR' or the plugin's 'Add model folder', download a zipped "
    "one with 'anystar models --fetch URL --sha256 HASH', or train one."
)
_REMEMBERED_FILE = "model_folders.json"
_MODEL_CACHE_SIZE = 2  # loaded networks kept in memory (the big one is ~250 MB)


@dataclass(frozen=True)
class ModelEntry:
    """One usable model: its unique display name, folder and where it comes from."""

    name: str
    path: Path
    source: str  # "bundled" | "user" | "folder"


# ------------------------------------------------------------------------ validation
def weights_file(path: str | Path) -> Path:
    """The weights a model folder loads: ``weights_best.h5``, else ``weights_last.h5``."""
    folder = Path(path)
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise InvalidModelError(f"{folder} has no weights_best.h5 or weights_last.h5")


def validate_model_folder(path: str | Path) -> None:
    """Raise :class:`InvalidModelError` unless ``path`` is a 3D, 1-channel StarDist folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InvalidModelError(f"{folder} is not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(f"{folder} is not a StarDist model folder (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidModelError(f"{config_path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or "n_dim" not in config:
        raise InvalidModelError(f"{config_path} is not a StarDist configuration (no n_dim)")
    if config["n_dim"] != 3:
        raise InvalidModelError(
            f"{folder.name} is a {config['n_dim']}D model; AnyStar needs a 3D StarDist model"
        )
    if config.get("n_channel_in", 1) != 1:
        raise InvalidModelError(
            f"{folder.name} expects {config['n_channel_in']} input channels; "
            "AnyStar models take one channel"
        )
    if "n_rays" not in config and "rays_json" not in config:
        raise InvalidModelError(f"{config_path} is not a StarDist3D configuration (no rays)")
    weights_file(folder)
    check_settings(folder)


def _is_valid(path: Path) -> bool:
    try:
        validate_model_folder(path)
    except InvalidModelError as err:
        log.info("skipping model folder: %s", err)
        return False
    return True


# ---------------------------------------------------------------------- remembering
def _remembered_file() -> Path:
    return user_config_dir() / _REMEMBERED_FILE


def _read_remembered() -> list[Path]:
    file = _remembered_file()
    if not file.is_file():
        return []
    try:
        folders = json.loads(file.read_text(encoding="utf-8"))["folders"]
        return [Path(p) for p in folders if isinstance(p, str)]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable %s: %s", file, err)
        return []


def _write_remembered(folders: list[Path]) -> None:
    file = _remembered_file()
    text = json.dumps({"folders": [str(p) for p in folders]}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remember_model_folder(path: str | Path) -> ModelEntry:
    """Validate ``path`` and add it to the remembered folders; returns its list entry.

    The folder's weights are loaded into its configured network first (InvalidModelError,
    and nothing remembered, if they do not fit). A folder that is already listed (bundled,
    user or remembered) is not added twice.
    """
    folder = Path(path).expanduser().resolve()
    validate_model_folder(folder)
    load_model(ModelEntry(folder.name, folder, "folder"))
    listed = {entry.path: entry for entry in list_models()}
    if folder in listed:
        return listed[folder]
    _write_remembered([*_read_remembered(), folder])
    notify_models_changed()
    return next(entry for entry in list_models() if entry.path == folder)


# --------------------------------------------------------------------------- listing
def _model_folders(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    children = (p for p in sorted(parent.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [p.resolve() for p in children if _is_valid(p)]


def _unique(name: str, suffix: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    candidate, n = f"{name} ({suffix})", 2
    while candidate in taken:
        candidate, n = f"{name} ({suffix} {n})", n + 1
    return candidate


def list_models() -> list[ModelEntry]:
    """All usable models: bundled, then the user's model folder, then remembered folders.

    Names are unique: a clash gets a suffix, e.g. ``"nuclei (user)"``, ``"nuclei (folder)"``.
    """
    entries: list[ModelEntry] = []
    taken: set[str] = set()
    seen: set[Path] = set()
    sources = [
        ("bundled", _model_folders(BUNDLED_MODELS_DIR)),
        ("user", _model_folders(user_models_dir())),
        ("folder", [p for p in _read_remembered() if _is_valid(p)]),
    ]
    for source, folders in sources:
        for folder in folders:
            if folder in seen:
                continue
            name = _unique(folder.name, source, taken)
            entries.append(ModelEntry(name=name, path=folder, source=source))
            taken.add(name)
            seen.add(folder)
    return entries


def default_model() -> ModelEntry | None:
    """The bundled default model if shipped, else the first available, else None."""
    entries = list_models()
    for entry in entries:
        if entry.source == "bundled" and entry.name == DEFAULT_MODEL_NAME:
            return entry
    return entries[0] if entries else None


def resolve_model(name_or_dir: str | Path) -> ModelEntry:
    """A listed model by name, or any valid model folder by path (not remembered)."""
    entries = list_models()
    for entry in entries:
        if entry.name == str(name_or_dir):
            return entry
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        validate_model_folder(folder)
        folder = folder.resolve()
        for entry in entries:
            if entry.path == folder:
                return entry
        return ModelEntry(name=folder.name, path=folder, source="folder")
    if not entries:
        raise InvalidModelError(f"Unknown model '{name_or_dir}'. {NO_MODELS_MESSAGE}")
    names = ", ".join(entry.name for entry in entries)
    raise InvalidModelError(f"Unknown model '{name_or_dir}': not a folder and not one of: {names}")


def model_thresholds(entry: ModelEntry) -> tuple[float, float]:
    """(prob, nms) from the model's ``thresholds.json``; StarDist's defaults when missing."""
    try:
        data = json.loads((Path(entry.path) / "thresholds.json").read_text(encoding="utf-8"))
        values = (float(data["prob"]), float(data["nms"]))
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_THRESHOLDS
    return tuple(v if 0 < v < 1 else d for v, d in zip(values, DEFAULT_THRESHOLDS, strict=True))


# --------------------------------------------------------------------------- loading
_lock = threading.RLock()
_models: OrderedDict[tuple, Any] = OrderedDict()


def clear_caches() -> None:
    """Forget loaded networks and weight fingerprints (tests; freeing memory)."""
    with _lock:
        _models.clear()
    clear_hashes()


def load_model(entry: ModelEntry) -> StarDist3D:
    """The StarDist3D of ``entry`` with its weights, thresholds, ``anystar_ray_scale`` and
    ``anystar_normalization`` (:func:`model_normalization`).

    Cached per folder and modification times of the weights, thresholds and settings.
    Loaded on TensorFlow's owner thread (:func:`napari_anystar._tf.tf_call`).
    """
    return tf_call(_cached_model, entry)


def _cached_model(entry: ModelEntry) -> StarDist3D:
    folder = Path(entry.path).expanduser().resolve()
    validate_model_folder(folder)
    weights = weights_file(folder)
    mtimes = tuple((folder / name).stat().st_mtime_ns if (folder / name).is_file() else 0
                   for name in ("thresholds.json", SETTINGS_FILE))
    key = (folder, weights, weights.stat().st_mtime_ns, *mtimes)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        model = _load(folder, weights)
        model.anystar_ray_scale = ray_scale(folder)
        model.anystar_normalization = model_normalization(folder)
        model.anystar_object_diameter = object_diameter(folder)
        _models[key] = model
        while len(_models) > _MODEL_CACHE_SIZE:
            _models.popitem(last=False)
        return model


def _load(folder: Path, weights: Path) -> StarDist3D:
    StarDist3D = stardist_models().StarDist3D

    try:
        # StarDist prints what it loads; keep stdout clean for the CLI.
        with contextlib.redirect_stdout(io.StringIO()):
            model = StarDist3D(None, name=folder.name, basedir=str(folder.parent))
            # StarDist already loaded the newest "*best*" weights; reload unless that was ours.
            best = [p.name for p in folder.glob("*.h*5") if "best" in p.name]
            if best != [weights.name]:
                model.load_weights(weights.name)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidModelError(f"cannot load the model in {folder}: {first}") from err
    return model


def model_fingerprint(entry: ModelEntry) -> str:
    """sha256 (hex) of the weights file ``load_model`` uses; cached per (path, size, mtime)."""
    return file_sha256(weights_file(entry.path))


# --------------------------------------------------------------------------- events
_callbacks: list[Callable[[], None]] = []


def on_models_changed(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` whenever the model list may have changed; returns unsubscribe."""
    _callbacks.append(callback)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            _callbacks.remove(callback)

    return unsubscribe


def notify_models_changed() -> None:
    """Tell subscribers that models were added or saved (a failing callback is logged)."""
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:
            log.exception("model-list callback %r failed", callback)
