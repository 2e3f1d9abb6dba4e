"""Drive the core trainer for the Fine-tune widget's worker, with cooperative cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path

from napari_anystar.train import TrainEvent, TrainSettings


def drive(
    train: Callable[[TrainSettings], Generator[TrainEvent, None, Path]],
    settings: TrainSettings,
    cancel: threading.Event,
) -> Generator[TrainEvent, None, tuple]:
    """Run ``train(settings)``; once ``cancel`` is set, close it at the next event.

    Closing is the core's cancel: it checkpoints and leaves a loadable model folder.
    Returns ``(folder, cancelled)``.
    """
    gen = train(settings)
    saved: Path | None = None
    try:
        while True:
            if cancel.is_set() and saved is None:
                gen.close()
                return Path(settings.out_dir).expanduser().resolve(), True
            try:
                event = next(gen)
            except StopIteration as stop:
                return Path(stop.value), False
            if event.kind == "saved":
                saved = event.path
            yield event
    finally:
        gen.close()
