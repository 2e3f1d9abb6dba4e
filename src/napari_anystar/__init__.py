"""napari-anystar: zero-shot 3D star-convex instance segmentation (AnyStar) for napari."""

from importlib.metadata import PackageNotFoundError, version

from napari_anystar._malloc import spread_malloc_arenas

try:
    __version__ = version("napari-anystar")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

spread_malloc_arenas()  # before the threads of a Run start (see _malloc)

__all__ = ["__version__"]
