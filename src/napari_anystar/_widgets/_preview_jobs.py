"""Background jobs of the Synthetic preview widget (run in napari thread workers)."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator

from napari_anystar.synth import SyntheticSample, SynthSettings, generate

_MONAI_IMPORT = threading.Lock()


def _import_monai() -> None:
    """Import MONAI in one thread at a time: the warm-up and a first Generate importing it at
    once fail with "partially initialized module 'monai.data'"."""
    with _MONAI_IMPORT:
        import monai.data
        import monai.transforms  # noqa: F401


def warm_up_job(size: int) -> None:
    """Import torch/MONAI and build A(.) so that the first Generate is quick."""
    from napari_anystar.synth.augment import build_pipeline

    _import_monai()
    build_pipeline(size)


def generate_job(
    request: int, generator: str, seed: int, settings: SynthSettings, keep_stages: bool
) -> Generator[None, None, tuple[int, SyntheticSample]]:
    """``(request, sample)``; a generator so that a stale request can be dropped unworked."""
    yield  # a request made stale before its thread starts is dropped here, unworked
    _import_monai()
    return request, generate(generator, seed, settings, keep_stages=keep_stages)


def refusal(exc: Exception) -> str:
    """One-line message for an export that export_samples refused or could not write."""
    if isinstance(exc, FileExistsError):
        return f"{exc}. Choose an empty folder, or tick 'Overwrite existing files'."
    return str(exc)


def export_job(samples: Iterator[int]) -> Generator[int, None, str | None]:
    """Relay export_samples' counts; return a one-line message if writing fails."""
    _import_monai()
    try:
        yield from samples
    except (ValueError, OSError) as exc:
        return refusal(exc)
    return None


def quit_all(*worker_sets: set) -> None:
    """Ask every worker of these sets to stop."""
    for workers in worker_sets:
        for worker in workers:
            worker.quit()
