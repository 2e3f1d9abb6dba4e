"""One process-wide allocator setting, made when the package is imported.

StarDist's renderer builds a Qhull hull per polyhedron, so every OpenMP thread of a render
allocates. glibc caps its malloc arenas at 8 per core; a napari session with Qt, TensorFlow
and torch has reached that cap before the render threads start, so they share an arena and
wait on its lock. On 2 cores, the first Run's 399 polyhedra took 0.53 s to render in napari
(with one OpenMP thread or two) against 0.24 s in a plain script; with this setting made at
import, 0.24-0.29 s in napari too.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: malloc arenas glibc may create at least (its own cap is 8 per core; only ever raised)
MIN_MALLOC_ARENAS = 64
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def spread_malloc_arenas() -> bool:
    """Let threads started from now on get a glibc malloc arena of their own; True if the
    cap was set (False with another C library)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        cap = max(MIN_MALLOC_ARENAS, 8 * (os.cpu_count() or 1))
        return bool(libc.mallopt(_M_ARENA_MAX, cap))
    except (OSError, AttributeError):
        return False
