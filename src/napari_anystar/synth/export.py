"""Write a series of synthetic samples as ``NNNNN_image.tif`` / ``NNNNN_labels.tif`` pairs."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .generators import SynthSettings, check_generator, generate, sample_seed

__all__ = ["export_samples", "sample_paths", "write_tif_atomic"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def sample_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    """Image and label file of sample ``index`` in ``out_dir``."""
    return out_dir / f"{index:05d}_image.tif", out_dir / f"{index:05d}_labels.tif"


def write_tif_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    import tifffile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path is not a folder: {out_dir}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create output folder {out_dir}: {err.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"output folder is not writable: {out_dir}")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _spawn_pool(workers: int):
    """Spawn-context pool whose workers run numpy's BLAS and torch on one thread each."""
    saved = {key: os.environ.get(key) for key in _THREAD_VARS}
    os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
    try:
        return multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _make(job: tuple[str, int, SynthSettings]) -> tuple[np.ndarray, np.ndarray]:
    generator, seed, settings = job
    sample = generate(generator, seed, settings)
    return sample.image, sample.labels


def export_samples(
    generator: str,
    n: int,
    seed: int,
    out_dir: Path,
    settings: SynthSettings | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
) -> Iterator[int]:
    """Generate ``n`` samples (sample ``i`` from ``sample_seed(seed, i)``) into ``out_dir``.

    Everything is checked before the first sample is made: ValueError for an unknown generator,
    invalid settings, ``n`` or ``workers`` < 1 or an unusable folder, FileExistsError when a
    target file exists and ``overwrite`` is False. Yields the number of samples written so far
    after each one; closing the iterator stops the work. ``workers > 1`` uses a spawn process
    pool; the files do not depend on the number of workers.
    """
    check_generator(generator)
    settings = settings or SynthSettings()
    settings.validate()
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of samples must be a positive integer, got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"number of workers must be a positive integer, got {workers!r}")
    out_dir = Path(out_dir)
    _check_folder(out_dir)
    if not overwrite:
        existing = [p for i in range(n) for p in sample_paths(out_dir, i) if p.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} output file(s) already exist in {out_dir} "
                f"(first: {existing[0].name}); allow overwriting to replace them"
            )
    return _run(generator, int(n), int(seed), out_dir, settings, int(workers))


def _run(
    generator: str, n: int, seed: int, out_dir: Path, settings: SynthSettings, workers: int
) -> Iterator[int]:
    jobs = ((generator, sample_seed(seed, i), settings) for i in range(n))
    pool = None
    if workers > 1 and n > 1:
        pool = _spawn_pool(min(workers, n))
        results = pool.imap(_make, jobs, chunksize=1)
    else:
        results = map(_make, jobs)
    try:
        for index, (image, labels) in enumerate(results):
            image_path, labels_path = sample_paths(out_dir, index)
            write_tif_atomic(image_path, image)
            write_tif_atomic(labels_path, labels)
            yield index + 1
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
