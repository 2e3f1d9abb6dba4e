"""Training batches made ahead in a background thread, reproducible per step.

Batch ``k`` depends only on (seed, k, the pool's content at step k, the real pairs), so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_anystar.normalization import Normalization
from napari_anystar.train.data import make_targets, mark_fragments, sample_patch
from napari_anystar.train.pool import PoolSchedule, SamplePool

Batch = tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]

_LOOKAHEAD_SAMPLES = 4  # new pool samples requested ahead of need


@dataclass(frozen=True)
class SyntheticPrep:
    """What a synthetic sample gets before patching: the model's normalisation, fragments
    marked as ignore."""

    norm: Normalization | None = None
    fragment_ignore: int = 0

    def __call__(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = image if self.norm is None else self.norm.apply(image)
        return image, mark_fragments(labels.astype(np.int32, copy=False), self.fragment_ignore)


class BatchStream:
    """Produces the batches of steps ``start .. total-1`` in a background thread."""

    def __init__(
        self,
        *,
        start: int,
        total: int,
        seed: int,
        batch_size: int,
        patch: int,
        rays,
        grid: tuple[int, int, int],
        synthetic_fraction: float,
        pool: SamplePool | None,
        schedule: PoolSchedule | None,
        real: Sequence[tuple[np.ndarray, np.ndarray]],
        prepare: SyntheticPrep | None = None,
        prefetch: int = 3,
    ) -> None:
        self.start, self.total, self.seed = start, total, seed
        self.batch_size, self.patch, self.rays, self.grid = batch_size, patch, rays, grid
        self.fraction = synthetic_fraction
        self.pool, self.schedule, self.real = pool, schedule, list(real)
        self.prepare = prepare or SyntheticPrep()
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anystar-batches", daemon=True)
        self._thread.start()

    def make_batch(self, step: int) -> Batch:
        """The batch of ``step`` (deterministic)."""
        rng = np.random.default_rng([self.seed, step, 7])
        xs, ys = [], []
        current = self.schedule.indices_at(step) if self.schedule is not None else []
        for _ in range(self.batch_size):
            synthetic = self.pool is not None and (not self.real or rng.random() < self.fraction)
            if synthetic:
                image, labels = self.prepare(*self.pool.get(current[rng.integers(len(current))]))
            else:
                image, labels = self.real[rng.integers(len(self.real))]
            x, y = sample_patch(image, labels, self.patch, rng, permute_all_axes=synthetic)
            xs.append(x)
            ys.append(y)
        prob, dist = make_targets(ys, self.rays, self.grid)
        return np.stack(xs)[..., None], (prob, dist)

    def _run(self) -> None:
        try:
            previous: list[int] = []
            for step in range(self.start, self.total):
                if self.pool is not None and self.schedule is not None:
                    current = self.schedule.indices_at(step)
                    if current != previous:
                        self.pool.keep_only(current)
                        self.pool.request(self.schedule.upcoming(step, _LOOKAHEAD_SAMPLES))
                        previous = current
                item = (step, self.make_batch(step))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # handed to the training loop
            self._queue.put((None, err))

    def next(self, step: int) -> Batch:
        """The batch of ``step``; time spent waiting is added to :attr:`wait_s`."""
        t0 = time.perf_counter()
        got, item = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if got is None:
            raise item
        if got != step:
            raise RuntimeError(f"batch stream out of order: expected step {step}, got {got}")
        return item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=30)
