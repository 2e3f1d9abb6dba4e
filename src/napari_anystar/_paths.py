"""Per-user folders (models, cache, settings), overridable with ``ANYSTAR_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "napari-anystar"


def _root(kind: str) -> Path:
    home = os.environ.get("ANYSTAR_HOME")
    if home:
        return Path(home) / kind
    getter = {
        "data": platformdirs.user_data_path,
        "cache": platformdirs.user_cache_path,
        "config": platformdirs.user_config_path,
    }[kind]
    return getter(APP_NAME)


def user_models_dir() -> Path:
    """Folder holding the models the user trained or fine-tuned (created on demand)."""
    path = _root("data") / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_cache_dir() -> Path:
    """Folder for downloads (e.g. zipped model folders) (created on demand)."""
    path = _root("cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_config_dir() -> Path:
    """Folder for remembered settings such as model folders the user picked."""
    path = _root("config")
    path.mkdir(parents=True, exist_ok=True)
    return path
