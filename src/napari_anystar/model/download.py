"""Downloading zipped StarDist3D model folders (pooch: sha256 check, cache, progress).

The zip is cached in ``user_cache_dir()/downloads`` and unpacked next to it; the model
folder inside is validated and copied to ``user_models_dir()/<name>``, so it stays usable
if the cache is cleared, and registered with the registry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from napari_anystar._paths import user_cache_dir, user_models_dir
from napari_anystar.model import registry
from napari_anystar.model.registry import InvalidModelError, ModelEntry

__all__ = ["DownloadError", "fetch_model"]


class DownloadError(ValueError):
    """A model download failed (network, checksum, name clash); one-line message."""


def fetch_model(
    url: str, sha256: str | None, name: str | None = None, progress: bool = False
) -> ModelEntry:
    """Download (or take from the cache) the zipped model at ``url`` and register it.

    ``sha256`` is the expected checksum of the zip (None skips the check). ``name`` is
    the model's name (default: the folder name inside the zip, else the zip's name).
    Raises DownloadError or InvalidModelError; a failed fetch leaves no model behind.
    """
    import pooch
    from pooch.downloaders import choose_downloader

    known_hash = None
    if sha256:
        sha256 = sha256.strip().lower().removeprefix("sha256:")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise DownloadError(f"'{sha256}' is not a sha256 checksum (64 hex digits)")
        known_hash = f"sha256:{sha256}"
    try:
        files = pooch.retrieve(
            url,
            known_hash=known_hash,
            path=user_cache_dir() / "downloads",
            processor=pooch.Unzip(),
            downloader=choose_downloader(url, progressbar=progress),
        )
    except (ValueError, OSError, zipfile.BadZipFile) as err:  # checksum, network, bad zip
        raise DownloadError(f"download of {url} failed: {_first_line(err)}") from None
    source = _model_folder(files, url)
    registry.validate_model_folder(source)
    name = name or _default_name(source, url)
    if name in ("", ".", "..") or "/" in name or os.sep in name or name.startswith("."):
        raise DownloadError(f"'{name}' is not a valid model name")
    target = user_models_dir() / name
    _install(source, target)
    return registry.remember_model_folder(target)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _model_folder(files: list[str], url: str) -> Path:
    configs = [Path(f).parent for f in files if Path(f).name == "config.json"]
    configs = [c for c in configs if "__MACOSX" not in c.parts]
    if len(configs) != 1:
        found = "no" if not configs else "several"
        raise InvalidModelError(f"{url} holds {found} model folders (config.json); expected one")
    return configs[0]


def _default_name(folder: Path, url: str) -> str:
    if not folder.name.endswith(".unzip"):
        return folder.name
    stem = Path(urlparse(url).path).name
    return stem[: -len(".zip")] if stem.lower().endswith(".zip") else stem or "downloaded-model"


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically; an identical existing copy is kept."""
    if target.exists():
        if _same_weights(source, target):
            return
        raise DownloadError(
            f"a different model named '{target.name}' already exists in {target.parent}; "
            "choose another name"
        )
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _same_weights(a: Path, b: Path) -> bool:
    try:
        return registry.model_fingerprint(ModelEntry(a.name, a, "folder")) == (
            registry.model_fingerprint(ModelEntry(b.name, b, "folder"))
        )
    except InvalidModelError:
        return False
