"""napari-anystar: zero-shot 3D star-convex instance segmentation (AnyStar) for napari."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-anystar")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
