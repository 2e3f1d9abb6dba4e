"""One line for a worker's exception, as every dock widget shows it."""

from __future__ import annotations

import logging

logger = logging.getLogger("napari_anystar")


def worker_error_message(exc: Exception, task: str) -> str:
    """A ValueError's own message (the user's to fix), else "``task`` failed: Type: text"
    with the traceback only in the log."""
    if isinstance(exc, ValueError):
        message = str(exc)
        return message[:1].upper() + message[1:]
    logger.warning("AnyStar: %s failed", task.lower(), exc_info=exc)
    return f"{task} failed: {type(exc).__name__}: {exc}"
