"""Live threshold updates for the Segment widget: debounced, in a worker, latest request wins.

With outline refinement on, each answer comes in two stages: StarDist's labels as soon as
the NMS is solved, then the refined outlines (the slow part); a newer request skips the
refinement of an older one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QTimer, Signal

from napari_anystar.model.segmenter import solve_in_stages

#: Quiet time after a slider move before solving (a drag's intermediate values are skipped).
DEBOUNCE_MS = 25


class LiveThresholds(QObject):
    """Re-solve labels from a cached network output when the thresholds change.

    ``schedule()`` (re)starts a single-shot timer; when it fires, the current thresholds are
    solved in a worker. While one solve runs, only the newest waiting request is kept, and
    only the result of the newest request for the current target is emitted. ``pending``
    says True when a request is scheduled and False once nothing is left to show (the
    widget shows it is busy meanwhile, also while refined outlines are on their way).
    """

    #: target, labels, n_objects, object probabilities, prob, nms, refining (True: these
    #: are StarDist's labels, their refined outlines follow)
    solved = Signal(object, object, int, object, float, float, bool)
    failed = Signal(object)  # the exception
    pending = Signal(bool)  # True: an answer is on its way; False: nothing pending

    def __init__(
        self,
        parent: QObject,
        thresholds: Callable[[], tuple[float, float]],
        alive: Callable[[], bool],
    ) -> None:
        super().__init__(parent)
        self._thresholds = thresholds
        self._alive = alive
        self._target: Any = None
        self._solver: Any = None
        self._refiner: Any = None
        self._serial = 0
        self._busy = False
        self._queued: tuple | None = None
        self._worker: Any = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._request)

    def set_target(self, target: Any, solver: Any, refiner: Any = None) -> None:
        """Solve for ``target`` (a run) from now on, outlines refined by ``refiner`` if
        given; older requests become stale."""
        self._target, self._solver, self._refiner = target, solver, refiner
        self._serial += 1

    def schedule(self) -> None:
        if self._solver is not None:
            self._timer.start()
            self.pending.emit(True)

    def busy(self) -> bool:
        """Is an answer scheduled or being solved (labels on their way)?"""
        return self._busy or self._timer.isActive()

    def refine_shown(self) -> bool:
        """Refine the outlines of the labels on screen now (StarDist's, of the current
        thresholds: a Run shows them before their refinement); ``pending`` says False once
        they are shown. False (nothing to do) without a refiner."""
        if self._solver is None or self._refiner is None:
            return False
        self._request(plain_shown=True)
        return True

    def _request(self, plain_shown: bool = False) -> None:
        self._serial += 1
        request = (self._serial, self._target, self._solver, self._refiner,
                   *self._thresholds(), plain_shown)
        if self._busy:
            self._queued = request
            self._worker.quit()  # the running answer is stale: skip its refinement
        else:
            self._start(request)

    def _start(self, request: tuple) -> None:
        _, _, solver, refiner, prob, nms, plain_shown = request
        self._busy = True
        worker = create_worker(solve_in_stages, solver, prob, nms, refiner,
                               plain_shown=plain_shown, _ignore_errors=True)
        worker.yielded.connect(lambda solved: self._on_returned(request, solved, True))
        worker.returned.connect(lambda solved: self._on_returned(request, solved, False))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_returned(self, request: tuple, solved: tuple, refining: bool) -> None:
        serial, target, _, _, prob, nms, _ = request
        if self._alive() and serial == self._serial and target is self._target:
            self.solved.emit(target, *solved, prob, nms, refining)

    def _on_errored(self, exc: Exception) -> None:
        if self._alive():
            self.failed.emit(exc)

    def _on_finished(self) -> None:
        self._busy, self._worker = False, None
        queued, self._queued = self._queued, None
        if not self._alive():
            return
        if queued is not None and queued[0] == self._serial:
            self._start(queued)
        elif not self._timer.isActive():
            self.pending.emit(False)

