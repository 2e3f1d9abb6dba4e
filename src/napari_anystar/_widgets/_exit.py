"""Quitting napari while a worker of this plugin runs exits cleanly.

A thread worker that outlives the Qt objects it reports to (the dock closed, the script
ended) dies emitting its last signal, and Qt aborts the process. The docks ask their workers
to stop when they close (after the current tile or step); this waits, at exit, until the
thread pool is empty, so each worker ends while its signals still exist.
"""

from __future__ import annotations

import atexit

#: The longest quitting waits for running workers (ms).
EXIT_WAIT_MS = 60_000
_registered = False


def wait_for_workers_at_exit() -> None:
    """Make Python's exit wait for the plugin's thread workers (idempotent)."""
    global _registered
    if not _registered:
        # Workers write HDF5 files (weights) and may import h5py late; h5py unregisters its
        # type converters at exit. Imported first, h5py's exit handler runs after this one
        # (last registered, first run): after the workers, as it must (a converter left
        # registered crashes HDF5's own shutdown after Python's).
        import h5py  # noqa: F401

        atexit.register(_wait_for_thread_pool)
        _registered = True


def _wait_for_thread_pool() -> None:
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)
