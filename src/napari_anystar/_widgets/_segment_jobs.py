"""Worker glue of the Segment widget around the pipeline core (:mod:`..model.segmenter`):
the widget's workers and whether it is alive, and napari's error-swallowing quirk."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any


@dataclass
class WidgetLife:
    """The widget's workers and whether it is alive, for callbacks that must not keep it."""

    alive: bool = True
    worker: Any = None
    warmup: Any = None  # the running warm-up worker

    def end(self, *_: Any) -> None:
        self.alive = False
        self.stop_warmup()
        if self.worker is not None:
            self.worker.quit()

    def stop_warmup(self) -> None:
        """Ask the warm-up to stop after its current chunk."""
        if self.warmup is not None:
            self.warmup.quit()
            self.warmup = None


class JobError(Exception):
    """A RuntimeError raised by a job (the thread worker would swallow a RuntimeError)."""


def drive(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Generator function wrapping a generator object, as napari's ``create_worker`` needs."""
    try:
        return (yield from job)
    except RuntimeError as exc:
        raise JobError(str(exc) or type(exc).__name__) from exc
