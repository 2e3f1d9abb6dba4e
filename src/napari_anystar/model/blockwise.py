"""Block-wise segmentation of volumes larger than memory, in this process or on Dask.

:func:`segment_blocks` labels one volume (any array-like, or a ``.zarr``/TIFF/NIfTI path)
into an on-disk zarr store, block by block (geometry and stitching rule: :mod:`.blocks`).
Each block's read region is predicted (:func:`.block_tasks.predict_block`, on the
executor), its owned objects are saved, and each core is rendered, outlines refined or not
(:func:`.block_render.render_block`, on the executor too), and written as soon as the blocks
around it are predicted and the ids before it are known: ids are global, 1..n in block
order, so labels never depend on which worker finished first. Memory is bounded by a block
(and the executor's tasks in flight), not by the volume.

The generator yields ``(blocks_done, blocks_total)`` after each block; closing it stops
between blocks. A run that was stopped (closed, killed) resumes from its store: blocks
already predicted are not computed again. :func:`segment_many` runs several volumes through
one executor, so their blocks spread over its workers.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_anystar._generators import result_of

from .block_exec import InlineExecutor
from .block_io import STATE_DIR, RunStore, open_source, read_box
from .block_render import RefineSpec, render_block, render_ring
from .block_tasks import (
    auto_scale_task,
    bounds_of,
    centre_crop_box,
    check_source,
    crop_contrast_task,
    predict_block,
    sample_volume,
)
from .blocks import (
    BlockGrid,
    BlockObjects,
    RayGeometry,
    network_divisor,
    plan_grid,
    reaches_past_neighbours,
)
from .polarity import DEFAULT_POLARITY, check_polarity, choose_polarity
from .predict import oriented
from .refine import DEFAULT_REFINE

Progress = tuple[int, int]
#: Objects of this many blocks are kept in memory for rendering (the rest are on disk).
OBJECT_CACHE_BLOCKS = 64
#: Format version of a run's ``run.json`` (a resumed run must match it).
RUN_VERSION = 3
#: The two kinds of task a run submits.
PREDICT, RENDER = "predict", "render"


@dataclass(frozen=True)
class BlockRunResult:
    """A finished block-wise run."""

    path: Path
    shape: tuple[int, int, int]
    n_objects: int
    n_blocks: int
    blocks_resumed: int  # predicted by an earlier, interrupted run
    clipped: int  # objects reaching past their block's neighbours, cut there
    refined: bool  # outlines refined to the image
    settings: Any  # PredictSettings as run (scale used, FixedBounds normalisation)
    auto: Any  # the AutoScale chosen, or None (scale given, or taken from the resumed run)
    grid: BlockGrid


@dataclass(frozen=True)
class VolumeJob:
    """One volume of :func:`segment_many`: where it is read from and written to."""

    source: Any  # array-like or path
    out_path: Path
    voxel_size: tuple[float, float, float] | None = None  # recorded in the labels' attribute


class BlockRun:
    """The state of one volume's run: what to predict next, what to render once it can."""

    def __init__(self, entry: Any, source: Any, store: RunStore, grid: BlockGrid,
                 settings: Any, thresholds: tuple[float, float], rays: RayGeometry,
                 auto: Any, attributes: dict[str, Any], refine: RefineSpec | None) -> None:
        self.entry, self.source, self.store, self.grid = entry, source, store, grid
        self.settings, self.thresholds, self.rays, self.auto = settings, thresholds, rays, auto
        self.attributes, self.refine = attributes, refine
        self.ring = render_ring(grid, refine)
        self.resumed = len(store.predicted)
        self._todo: Iterator[int] = (i for i in range(len(grid)) if i not in store.predicted)
        self._cache: OrderedDict[int, BlockObjects] = OrderedDict()
        self._cache_size = max(OBJECT_CACHE_BLOCKS, 2 * math.prod(2 * r + 1 for r in self.ring))
        self._first_ids: list[int] = []  # global id before each block's first object
        self._next_render = 0
        self._ready: deque[int] = deque()  # blocks whose core can be rendered
        self.error: BaseException | None = None
        self._advance()

    @property
    def done(self) -> int:
        return len(self.store.predicted)

    @property
    def total(self) -> int:
        return len(self.grid)

    @property
    def finished(self) -> bool:
        return self.error is not None or len(self.store.written) == len(self.grid)

    def next_task(self) -> tuple[str, int, Callable[..., Any], tuple] | None:
        """The next task, a core to render before a block to predict: (kind, block, function,
        arguments), or None."""
        if self.error is not None:
            return None
        if self._ready:
            index = self._ready.popleft()
            blocks = self.grid.neighbours(index, self.ring)
            image = (None if self.refine is None else oriented(
                read_box(self.source, self.grid.region_box(index, self.refine.context)),
                self.settings.invert))
            return RENDER, index, render_block, (
                self.grid, index, {b: self._objects(b) for b in blocks},
                {b: self._first_ids[b] for b in blocks}, self.rays, self.refine, image)
        index = next(self._todo, None)
        if index is None:
            return None
        data = read_box(self.source, self.grid.read_box(index))
        return PREDICT, index, predict_block, (self.entry, data, self.settings, self.thresholds,
                                               self.grid, index)

    def finish(self, kind: str, index: int, result: Any) -> None:
        """Take a task's result: keep a predicted block's objects (queueing the cores that can
        now be rendered), or write a rendered core."""
        if kind == RENDER:
            self.store.write_labels(index, self.grid.core_box(index), result)
        else:
            clipped = reaches_past_neighbours(self.grid, index, result, self.rays)
            self.store.save_objects(index, result, clipped)
            self._remember(index, result)
        self._advance()

    def _remember(self, index: int, objs: BlockObjects) -> None:
        self._cache[index] = objs
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _objects(self, index: int) -> BlockObjects:
        if index not in self._cache:
            self._remember(index, self.store.load_objects(index))
        return self._cache[index]

    def _advance(self) -> None:
        predicted = self.store.predicted
        while len(self._first_ids) < len(self.grid) and len(self._first_ids) in predicted:
            last = len(self._first_ids) - 1
            self._first_ids.append(0 if last < 0 else self._first_ids[last]
                                   + predicted[last][0])
        prefix = len(self._first_ids)  # blocks 0..prefix-1 are all predicted
        while (self._next_render < len(self.grid)
               and self.grid.last_neighbour(self._next_render, self.ring) < prefix):
            if self._next_render not in self.store.written:
                self._ready.append(self._next_render)
            self._next_render += 1
        if len(self.store.written) == len(self.grid) and self.store.state_dir.exists():
            self.store.complete({**self.attributes, "n_objects": self.n_objects,
                                 "clipped": self.clipped})

    @property
    def n_objects(self) -> int:
        return sum(n for n, _ in self.store.predicted.values())

    @property
    def clipped(self) -> int:
        return sum(c for _, c in self.store.predicted.values())

    def result(self) -> BlockRunResult:
        return BlockRunResult(self.store.path, self.grid.shape, self.n_objects, len(self.grid),
                              self.resumed, self.clipped, self.refine is not None,
                              self.settings, self.auto, self.grid)


def _recorded_run(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / STATE_DIR / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_run(entry: Any, source: Any, out_path: str | Path, settings: Any = None,
                thresholds: tuple[float, float] | None = None,
                block_size: tuple[int, int, int] | None = None, *,
                margin: tuple[int, int, int] | None = None, auto_scaled: bool = False,
                executor: Any = None, voxel_size: tuple[float, ...] | None = None,
                refine: bool = DEFAULT_REFINE, polarity: str = DEFAULT_POLARITY) -> BlockRun:
    """Open ``source`` and the output store (resuming an interrupted run there), measure the
    intensities (normalisation, and refinement with ``refine``) on the whole volume and, with
    ``auto_scaled``, choose the scale on a centre crop (on ``executor``); with ``polarity``
    *auto*, the crop also decides whether the objects are dark (the volume is then segmented
    negated). ValueError (one line) for an unusable input or store."""
    from .model_settings import model_normalization, ray_scale
    from .object_size import folder_training_diameter
    from .predict import PredictSettings
    from .registry import model_fingerprint, model_thresholds

    check_polarity(polarity)
    out_path = Path(out_path)
    if isinstance(source, (str, Path)):
        source = open_source(source)
    check_source(source)
    settings = settings or PredictSettings()
    prob, nms = thresholds or model_thresholds(entry)
    recorded = _recorded_run(out_path) if out_path.exists() else None
    sample = sample_volume(source)
    norm = settings.norm or model_normalization(entry.path)
    chosen = polarity  # the policy this run records; a resumed run keeps its decision
    if polarity == "auto" and recorded is not None and "invert" in recorded:
        chosen = "dark" if recorded["invert"] else "bright"
    crop: list[np.ndarray] = []  # the centre crop, read once at first need

    def plan(invert: bool) -> Generator[None, None, tuple[Any, Any]]:
        """Settings at a polarity (bounds of the volume so oriented, scale) and AutoScale."""
        at = replace(settings, norm=bounds_of(oriented(sample, invert), norm), n_tiles=None,
                     invert=invert)
        yield from ()
        return _choose_scale(entry, source, at, prob, recorded, auto_scaled, executor, crop)

    def contrast(planned: tuple[Any, Any]) -> float:
        return executor_result(executor, crop_contrast_task, entry, _crop(source, crop),
                               planned[0], (prob, nms))

    settings, auto = result_of(choose_polarity(plan, contrast, chosen))
    invert = settings.invert
    norm = settings.norm
    scale = settings.scale
    config = json.loads((Path(entry.path) / "config.json").read_text(encoding="utf-8"))
    grid = plan_grid(source.shape, scale, block_size, margin, network_divisor(config))
    spec = None
    if refine:
        size = folder_training_diameter(entry.path)
        spec = RefineSpec.plan(tuple(size / s for s in scale), oriented(sample, invert),
                               grid.margin)
    attributes = {
        "model": entry.name, "model_sha256": model_fingerprint(entry),
        "ray_scale": ray_scale(entry.path), "prob_thresh": float(prob),
        "nms_thresh": float(nms), "normalization": norm.to_json(), "bounds": [norm.lo, norm.hi],
        "scale_policy": "auto" if auto_scaled else "fixed", "scale": list(scale),
        "polarity": polarity, "invert": invert,
        "block_size": list(grid.core), "margin": list(grid.margin), "align": list(grid.align),
        "refined": spec is not None,
    }
    if spec is not None:
        attributes["refine"] = {"diameter": list(spec.diameter), "bounds": list(spec.bounds),
                                "context": list(spec.context)}
    if voxel_size is not None:
        attributes["voxel_size"] = [float(v) for v in voxel_size]
    signature = {"version": RUN_VERSION, "shape": list(grid.shape),
                 "dtype": str(source.dtype), **attributes}
    store = RunStore.open(out_path, grid.shape, grid.core, signature)
    rays = RayGeometry.from_rays_json(config["rays_json"], scale)
    return BlockRun(entry, source, store, grid, settings, (prob, nms), rays, auto, attributes,
                    spec)


def executor_result(executor: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run on ``executor`` (default: this process)."""
    return (executor or InlineExecutor()).submit(fn, *args).result()


def _crop(source: Any, crop: list[np.ndarray]) -> np.ndarray:
    """The centre crop of ``source``, read on first need and kept in ``crop``."""
    if not crop:
        crop.append(read_box(source, centre_crop_box(source.shape)))
    return crop[0]


def _choose_scale(entry: Any, source: Any, settings: Any, prob: float,
                  recorded: dict[str, Any] | None, auto_scaled: bool, executor: Any,
                  crop: list[np.ndarray]) -> tuple[Any, Any]:
    """``settings`` with the scale set (the recorded run's or the auto scale's on the
    centre crop with ``auto_scaled``, else the given one or 1), and the AutoScale or None."""
    auto = None
    if auto_scaled:
        if (recorded is not None and recorded.get("scale_policy") == "auto"
                and recorded.get("invert") == settings.invert):
            settings = replace(settings, scale=tuple(recorded["scale"]))
        else:
            auto = executor_result(executor, auto_scale_task, entry, _crop(source, crop),
                                   settings, prob)
            settings = replace(settings, scale=tuple(auto.scale))
    scale = tuple(float(s) for s in (settings.scale or (1.0, 1.0, 1.0)))
    settings = replace(settings, scale=scale)
    settings.validate()
    return settings, auto


def drive(runs: list[BlockRun], executor: Any) -> Generator[Progress, None, None]:
    """Predict the blocks of ``runs`` on ``executor`` (the first runs' blocks first), writing
    labels as they become ready; yields the blocks done over all runs after each block. A run
    whose task fails keeps the error (``run.error``) and the others go on. Closing this
    cancels the tasks in flight."""
    inflight: dict[Any, tuple[BlockRun, str, int]] = {}
    try:
        while True:
            for run in runs:
                while len(inflight) < executor.capacity and (task := run.next_task()):
                    kind, index, fn, args = task
                    inflight[executor.submit(fn, *args)] = (run, kind, index)
            if not inflight:
                return
            for future in executor.wait(list(inflight)):
                run, kind, index = inflight.pop(future)
                try:
                    run.finish(kind, index, future.result())
                except Exception as err:
                    run.error = err
                    dropped = [f for f, (r, _, _) in inflight.items() if r is run]
                    for f in dropped:
                        del inflight[f]
                    executor.cancel(dropped)
                if kind == PREDICT or run.error is not None:
                    yield sum(r.done for r in runs), sum(r.total for r in runs)
    finally:
        executor.cancel(list(inflight))


def segment_blocks(entry: Any, source: Any, out_path: str | Path, settings: Any = None,
                   thresholds: tuple[float, float] | None = None,
                   block_size: tuple[int, int, int] | None = None, *,
                   margin: tuple[int, int, int] | None = None, auto_scaled: bool = False,
                   executor: Any = None, voxel_size: tuple[float, ...] | None = None,
                   refine: bool = DEFAULT_REFINE, polarity: str = DEFAULT_POLARITY,
                   ) -> Generator[Progress, None, BlockRunResult]:
    """Label ``source`` block by block into the zarr store ``out_path``; yields
    ``(blocks_done, blocks_total)``; returns the :class:`BlockRunResult`.

    ``settings``: how blocks are fed to the network (its normalisation's percentiles are
    measured on the whole volume; ``n_tiles`` is chosen per block); ``thresholds``: (prob,
    nms), the model's by default; ``block_size``: core edge per axis, input voxels;
    ``executor``: :func:`.block_exec.block_executor` (default: this process);
    ``voxel_size``: recorded in the store's ``anystar`` attribute (napari's scale);
    ``refine``: outlines refined to the image as a whole-volume run refines them
    (:mod:`.block_render`); ``polarity``: as :func:`.segmenter.network_job`'s, decided on
    the centre crop (:func:`prepare_run`). An existing ``out_path`` must hold an interrupted
    run with the same settings: it is resumed.
    """
    executor = executor or InlineExecutor()
    run = prepare_run(entry, source, out_path, settings, thresholds, block_size, margin=margin,
                      auto_scaled=auto_scaled, executor=executor, voxel_size=voxel_size,
                      refine=refine, polarity=polarity)
    yield run.done, run.total
    yield from drive([run], executor)
    if run.error is not None:
        raise run.error
    return run.result()


def segment_many(entry: Any, jobs: list[VolumeJob], settings: Any = None,
                 thresholds: tuple[float, float] | None = None,
                 block_size: tuple[int, int, int] | None = None, *,
                 margin: tuple[int, int, int] | None = None, auto_scaled: bool = False,
                 executor: Any = None, refine: bool = DEFAULT_REFINE,
                 polarity: str = DEFAULT_POLARITY,
                 ) -> Generator[Progress, None, list[BlockRunResult | Exception]]:
    """:func:`segment_blocks` for several volumes through one executor; each volume's result
    or the error (Exception) that stopped it, in order. Volumes are prepared (opened,
    sampled, auto-scaled) one after the other, their blocks then run together; the total
    grows as they are prepared."""
    executor = executor or InlineExecutor()
    runs: list[BlockRun | Exception] = []
    for job in jobs:
        try:
            runs.append(prepare_run(entry, job.source, job.out_path, settings, thresholds,
                                    block_size, margin=margin, auto_scaled=auto_scaled,
                                    executor=executor, voxel_size=job.voxel_size,
                                    refine=refine, polarity=polarity))
        except Exception as err:
            runs.append(err)
        live = [r for r in runs if isinstance(r, BlockRun)]
        yield sum(r.done for r in live), sum(r.total for r in live)
    yield from drive(live, executor)
    return [r if isinstance(r, Exception) else (r.error or r.result()) for r in runs]
