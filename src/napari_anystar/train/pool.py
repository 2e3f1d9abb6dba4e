"""A pool of synthetic samples, generated ahead (optionally in worker processes) and refreshed.

The pool's content at a training step is a pure function of the step
(:meth:`PoolSchedule.indices_at`), so runs are reproducible and resume exactly:
sample ``i`` is ``synth.generate(generator, synth.sample_seed(seed, i), settings)``; the
pool starts with samples ``0..size-1`` and every ``refresh`` steps one slot (round robin)
gets the next new sample. Samples are kept in memory and cached as ``.npz`` files so a
resumed run does not generate them again.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Sample indices from here on are held-out validation samples (never in the training pool).
VAL_OFFSET = 1_000_000_000

Sample = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PoolSchedule:
    """Which sample indices the pool holds at a given step."""

    size: int
    refresh: int  # steps between replacements; 0 = never

    def replaced(self, step: int) -> int:
        return step // self.refresh if self.refresh else 0

    def indices_at(self, step: int) -> list[int]:
        n = self.replaced(step)
        out = []
        for slot in range(self.size):
            if n > slot:
                out.append(self.size + slot + self.size * ((n - 1 - slot) // self.size))
            else:
                out.append(slot)
        return out

    def upcoming(self, step: int, count: int) -> list[int]:
        """The next ``count`` new sample indices after ``step`` (for generating ahead)."""
        first = self.size + self.replaced(step)
        return list(range(first, first + count)) if self.refresh else []


def _exit_with_parent(parent: int, poll_s: float = 2.0) -> None:
    """Stop this worker once its parent process is gone (a killed run must not leave
    workers generating its queued samples)."""
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            os._exit(0)


def _worker_init(parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="anystar-parent-watch").start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def generate_sample(generator: str, seed: int, settings: Any) -> Sample:
    """One synthetic (image float32, labels uint16) pair; runs in worker processes."""
    from napari_anystar.synth import generate

    sample = generate(generator, seed, settings)
    return sample.image.astype(np.float32, copy=False), sample.labels


class SamplePool:
    """Generates, caches and serves synthetic samples by index."""

    def __init__(self, generator: str, seed: int, settings: Any, cache_dir: Path | None,
                 workers: int = 1) -> None:
        self.generator, self.seed, self.settings = generator, seed, settings
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self._memory: dict[int, Sample] = {}
        self._futures: dict[int, Future] = {}
        self._executor = None
        if workers > 0:
            self._executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(os.getpid(),),
            )

    def _seed(self, index: int) -> int:
        from napari_anystar.synth import sample_seed

        return int(sample_seed(self.seed, index))

    def _path(self, index: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{index:010d}.npz"

    def _load_cached(self, index: int) -> Sample | None:
        path = self._path(index)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path) as data:
                return data["image"], data["labels"]
        except (OSError, ValueError, KeyError):
            return None  # a broken cache file (e.g. interrupted write): generate again

    def _store(self, index: int, sample: Sample) -> None:
        self._memory[index] = sample
        path = self._path(index)
        if path is not None and not path.exists():
            tmp = path.with_name(f".{path.stem}.tmp.npz")
            np.savez_compressed(tmp, image=sample[0], labels=sample[1])
            os.replace(tmp, path)

    def request(self, indices: Iterable[int]) -> None:
        """Start generating these samples in the background (no-op without workers)."""
        if self._executor is None:
            return
        for index in indices:
            if index in self._memory or index in self._futures:
                continue
            path = self._path(index)
            if path is not None and path.exists():
                continue
            self._futures[index] = self._executor.submit(
                generate_sample, self.generator, self._seed(index), self.settings
            )

    def get(self, index: int) -> Sample:
        """The sample, from memory, cache, a background job or generated now (blocking)."""
        if index in self._memory:
            return self._memory[index]
        sample = self._load_cached(index)
        if sample is None:
            future = self._futures.pop(index, None)
            if future is not None:
                sample = future.result()
            else:
                sample = generate_sample(self.generator, self._seed(index), self.settings)
        self._futures.pop(index, None)
        self._store(index, sample)
        return sample

    def fill(self, indices: list[int]) -> Iterator[int]:
        """Make sure these samples exist; yields how many are ready after each one."""
        self.request(indices)
        for done, index in enumerate(indices, start=1):
            self.get(index)
            yield done

    def keep_only(self, indices: Iterable[int]) -> None:
        """Forget (memory and cache) every sample not in ``indices``."""
        keep = set(indices)
        for index in [i for i in self._memory if i not in keep]:
            del self._memory[index]
            path = self._path(index)
            if path is not None and index < VAL_OFFSET:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._executor is not None:
            for future in self._futures.values():
                future.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._futures.clear()
