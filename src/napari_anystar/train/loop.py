"""The training loop: :func:`train` drives StarDist3D's Keras model step by step.

``train(settings)`` is a generator of :class:`TrainEvent`; its return value
(``StopIteration.value``) is the saved model folder. Closing the generator (or a
KeyboardInterrupt during a step) cancels: once a step was trained, the current step is
checkpointed and the folder is left loadable (``weights_last.h5``, ``weights_best.h5``,
``thresholds.json``) and resumable with ``resume=True``. Typical use::

    run = train(TrainSettings(out_dir="my-model", generator="as-mix", config="lite"))
    for event in run:          # a widget wraps this in napari's thread_worker
        if event.kind == "step":
            print(event.step, event.total_steps, event.loss)
    # run.close() at any point = cancel (after a step: the folder stays usable, resumable)

napari's ``thread_worker`` does not close a generator it aborts (``worker.quit()``): connect
``worker.finished`` to ``run.close`` so a cancelled run writes its checkpoint at once
(``close()`` on a finished generator does nothing).

Order of events: "prepare" (building the network, then synthetic samples done/total),
"step" x steps_per_epoch, "epoch" (validation + checkpoint), ..., "thresholds" x 4,
"saved". Settings/data errors (ValueError, FileExistsError) are raised by the first
``next()``, before anything is written; cancelling at that first event writes nothing.

A fresh run writes into a hidden sibling folder (:func:`checkpoint.staging_dir`, which model
listings skip) and moves it into place at its first checkpoint (an epoch's end, or a cancel
after at least one step). A run that fails, or is cancelled, before then leaves no folder; one
killed before then leaves only the hidden folder, which the next run of that name removes.
What a run validates on is :func:`napari_anystar.train.validation.split_validation`'s choice.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Generator
from dataclasses import asdict, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_anystar._generators import mapped
from napari_anystar._tf import tf_owned
from napari_anystar.model.model_settings import TRAINING_FILE
from napari_anystar.normalization import Normalization
from napari_anystar.train import checkpoint as ckpt
from napari_anystar.train.data import load_pairs, make_targets, sample_patch
from napari_anystar.train.health import distance_mae
from napari_anystar.train.object_diameter import training_object_diameter
from napari_anystar.train.pool import VAL_OFFSET, PoolSchedule, SamplePool
from napari_anystar.train.recipe import Recipe, build_model, make_recipe
from napari_anystar.train.settings import TrainEvent, TrainSettings
from napari_anystar.train.stream import BatchStream, SyntheticPrep
from napari_anystar.train.thresholds import MAX_PAIRS, tune_thresholds, tuning_volumes
from napari_anystar.train.validation import split_validation


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _notify_models_changed() -> None:
    try:
        from napari_anystar.model.registry import notify_models_changed
    except ImportError:
        return
    notify_models_changed()


def _check_out_dir(out: Path, resume: bool, recipe: Recipe) -> dict[str, Any] | None:
    """The resume state to continue from (None: fresh run); raises if the folder is taken."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    if not resume:
        raise FileExistsError(f"{out} already exists; choose a new folder or resume the run")
    state = ckpt.load_state(out)
    if state is None:
        raise ValueError(f"{out} holds no interrupted training to resume")
    old = state["recipe"]
    for key, value in recipe.to_dict().items():
        if old.get(key) != value:
            raise ValueError(f"cannot resume {out}: {key} was {old.get(key)!r}, now {value!r}")
    return state


def _describe(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return f"array {item.shape} {item.dtype}"
    return str(Path(item).resolve())


class _Record:
    """training.json content and the resume state, kept together."""

    def __init__(self, folder: ckpt.RunFolder, recipe: Recipe, settings: TrainSettings,
                 state: dict | None):
        self.folder, self.recipe = folder, recipe
        synth = settings.synth_settings
        if synth is None and recipe.generator is not None:
            from napari_anystar.synth import SynthSettings

            synth = SynthSettings()
        self.data = {
            "generator": recipe.generator,
            "synthetic_fraction": recipe.synthetic_fraction,
            "synth_settings": asdict(synth) if is_dataclass(synth) else None,
            "real": [],
        }
        self.history: list[dict] = state["history"] if state else []
        self.epoch_losses: list[float] = state["epoch_losses"] if state else []
        self.best_val: float = state["best_val"] if state else float("inf")
        self.resumed_at: list[int] = [*state["resumed_at"], state["step"]] if state else []
        self.started = state["started"] if state else _now()
        self.timing = {"steps_timed": 0, "step_s_total": 0.0, "data_wait_s": 0.0}
        self.extra = settings.extra
        self.optimizer_restored: bool | None = None  # after resume: Adam state loaded

    def state(self, step: int) -> dict:
        return {
            "step": step, "recipe": self.recipe.to_dict(), "history": self.history,
            "epoch_losses": self.epoch_losses, "best_val": self.best_val,
            "resumed_at": self.resumed_at, "started": self.started,
        }

    def write(self, step: int, status: str, thresholds: dict | None = None) -> None:
        import stardist

        from napari_anystar import __version__
        from napari_anystar._tf import import_tensorflow

        tf = import_tensorflow()

        t = self.timing
        n = max(t["steps_timed"], 1)
        ckpt.write_json(self.folder.path / TRAINING_FILE, {
            "status": status,
            "recipe": self.recipe.to_dict(),
            "seed": self.recipe.seed,
            "data": self.data,
            "steps_done": step,
            "total_steps": self.recipe.steps,
            "epochs": self.history,
            "best_val_loss": None if self.best_val == float("inf") else self.best_val,
            "thresholds": thresholds,
            "timing": {
                "step_s": t["step_s_total"] / n,
                "data_wait_fraction": t["data_wait_s"] / max(t["step_s_total"], 1e-9),
                "steps_timed": t["steps_timed"],
            },
            "resumed_at": self.resumed_at,
            "optimizer_restored": self.optimizer_restored,
            "started": self.started,
            "updated": _now(),
            "versions": {"napari_anystar": __version__, "stardist": stardist.__version__,
                         "tensorflow": tf.__version__},
            "extra": self.extra,
        })


def _labelled_box(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop a validation patch to its labelled part (padding has labels -1)."""
    valid = np.argwhere(labels >= 0)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(valid.min(0), valid.max(0), strict=True))
    return image[box], labels[box]


def _val_loss(model, x: np.ndarray, prob: np.ndarray, dist: np.ndarray, batch: int) -> float:
    losses, weights = [], []
    for i in range(0, len(x), batch):
        out = model.keras_model.test_on_batch(x[i:i + batch], [prob[i:i + batch],
                                                               dist[i:i + batch]])
        losses.append(float(np.atleast_1d(out)[0]))
        weights.append(len(x[i:i + batch]))
    return float(np.average(losses, weights=weights))


def train(settings: TrainSettings) -> Generator[TrainEvent, None, Path]:
    """Train or fine-tune a StarDist3D model; yields :class:`TrainEvent`, returns the folder.

    Raises ValueError (bad settings or data, resume mismatch) or FileExistsError (folder
    taken without ``resume``) before anything is written. See the module docstring for
    cancel/resume. Each step runs on TensorFlow's owner thread (:func:`tf_owned`).
    """
    return tf_owned(_train(settings))


def _train(settings: TrainSettings) -> Generator[TrainEvent, None, Path]:
    settings.validate()
    recipe = make_recipe(settings)
    out = Path(settings.out_dir).expanduser().resolve()
    state = _check_out_dir(out, settings.resume, recipe)
    norm = None if recipe.normalization is None else Normalization.from_json(recipe.normalization)
    pairs = load_pairs(settings.images, settings.labels, norm) if settings.has_real else []
    split = split_validation([p[1] for p in pairs], recipe)
    real, real_val = split.pairs(pairs)
    total, spe = recipe.steps, recipe.steps_per_epoch
    step = state["step"] if state else 0
    yield TrainEvent("prepare", step, total, step // spe, message="building the network")

    folder = ckpt.RunFolder(out, fresh=state is None)
    use_synth = recipe.generator is not None and recipe.synthetic_fraction > 0
    prep = SyntheticPrep(norm, recipe.fragment_ignore)
    pool = schedule = stream = None
    tuning = False  # weights_last.h5 is final once threshold tuning (on best weights) starts

    def new_stream(start: int) -> BatchStream:
        return BatchStream(
            start=start, total=total, seed=recipe.seed, batch_size=recipe.batch_size,
            patch=recipe.patch_size, rays=rays, grid=grid,
            synthetic_fraction=recipe.synthetic_fraction if real else 1.0,
            pool=pool, schedule=schedule, real=real, prepare=prep,
        )

    def checkpoint(status: str) -> None:
        nonlocal stream
        if not tuning:
            ckpt.save_weights(model, folder.path / "weights_last.h5")
        ckpt.save_optimizer(model, folder.path / ckpt.WORK_DIR / ckpt.OPTIMIZER_FILE)
        ckpt.save_state(folder.path, record.state(step))
        record.write(step, status)
        if folder.staged:  # the first checkpoint: the folder goes into place
            going_on = stream is not None and status == "running" and step < total
            if stream is not None:  # it reads and writes the pool cache inside the folder
                stream.close()
            folder.promote()
            if pool is not None:
                pool.cache_dir = folder.path / ckpt.WORK_DIR / "pool"
            stream = new_stream(step) if going_on else None
            _notify_models_changed()

    try:  # until the training loop's own clean-up takes over: a failure leaves no folder
        record = _Record(folder, recipe, settings, state)
        record.data["real"] = [
            {"image": _describe(i), "labels": _describe(lb), "shape": list(p[0].shape),
             "split": split.role(k)}
            for k, (i, lb, p) in enumerate(zip(settings.images, settings.labels, pairs,
                                               strict=True))
        ]
        record.data["validation"] = split.text
        if split.slab is not None:
            record.data["real"][0]["held_out_slab"] = split.slab.to_dict()
        model = build_model(recipe)
        if state:
            model.keras_model.load_weights(str(out / "weights_last.h5"))
            opt_file = out / ckpt.WORK_DIR / ckpt.OPTIMIZER_FILE
            record.optimizer_restored = opt_file.exists() and ckpt.load_optimizer(model, opt_file)
        else:
            ckpt.write_json(folder.path / "config.json", vars(model.config))
            ckpt.save_weights(model, folder.path / "weights_last.h5")
            ckpt.save_weights(model, folder.path / "weights_best.h5")
            ckpt.ensure_thresholds(folder.path, recipe.base_model)
            ckpt.write_model_settings(folder.path, recipe.base_model, norm)
            ckpt.save_state(folder.path, record.state(0))
            record.write(0, "running")
        if use_synth:
            schedule = PoolSchedule(recipe.pool_size, recipe.pool_refresh)
            pool = SamplePool(recipe.generator, recipe.seed, settings.synth_settings,
                              folder.path / ckpt.WORK_DIR / "pool", workers=settings.workers)
    except BaseException:
        folder.discard()
        raise

    try:
        # --- data: validation volumes and the initial synthetic pool
        val_volumes: list[tuple[np.ndarray, np.ndarray]] = []
        if pool is not None:
            val_ids = [VAL_OFFSET + j for j in range(recipe.val_samples)]
            train_ids = schedule.indices_at(step)
            n_all = len(val_ids) + len(train_ids)
            pool.request(val_ids + train_ids)
            yield TrainEvent("prepare", step, total, step // spe, done=0, total=n_all,
                             message="generating synthetic samples")
            for done in pool.fill(val_ids + train_ids):
                yield TrainEvent("prepare", step, total, step // spe, done=done, total=n_all,
                                 message="generating synthetic samples")
            val_volumes += [prep(*pool.get(i)) for i in val_ids]
            pool.keep_only(train_ids)
        val_volumes += real_val
        rays = _rays(model)
        grid = tuple(model.config.grid)
        vx, vy = zip(*[
            sample_patch(x, y, recipe.patch_size, np.random.default_rng([recipe.seed, 23, j]),
                         permute_all_axes=False, foreground_prob=1.0)
            for j, (x, y) in enumerate(val_volumes)
        ], strict=True)
        val_x = np.stack(vx)[..., None]
        val_prob, val_dist = make_targets(vy, rays, grid)

        stream = new_stream(step)
        optimizer = model.keras_model.optimizer
        while step < total:
            lr = recipe.learning_rate * (1.0 - step / total)
            optimizer.learning_rate.assign(lr)
            t0 = time.perf_counter()
            wait0 = stream.wait_s
            x, y = stream.next(step)
            logs = model.keras_model.train_on_batch(x, list(y), return_dict=True)
            loss = float(logs["loss"])
            step += 1
            wait = stream.wait_s - wait0
            if step > stream.start + 1:  # the first step after (re)starting compiles the graph
                record.timing["steps_timed"] += 1
                record.timing["step_s_total"] += time.perf_counter() - t0
                record.timing["data_wait_s"] += wait
            record.epoch_losses.append(loss)
            yield TrainEvent("step", step, total, (step - 1) // spe, loss=loss, lr=lr, wait_s=wait)
            if step % spe == 0 or step == total:
                val_loss = _val_loss(model, val_x, val_prob, val_dist, recipe.batch_size)
                mae, guess_mae = _val_distance_mae(model, val_x, val_dist, recipe.batch_size)
                entry = {"epoch": len(record.history) + 1, "step": step,
                         "loss": float(np.mean(record.epoch_losses)), "val_loss": val_loss,
                         "val_dist_mae": mae, "val_dist_mae_constant_guess": guess_mae,
                         "lr": lr, "time": _now()}
                record.history.append(entry)
                record.epoch_losses = []
                if val_loss < record.best_val:
                    record.best_val = val_loss
                    ckpt.save_weights(model, folder.path / "weights_best.h5")
                checkpoint("running")
                yield TrainEvent("epoch", step, total, entry["epoch"], loss=entry["loss"],
                                 val_loss=val_loss, lr=lr)

        # --- thresholds on the best weights, then the final folder
        tuning = True
        model.keras_model.load_weights(str(out / "weights_best.h5"))
        thresholds = dict(ckpt.DEFAULT_THRESHOLDS)
        if settings.optimize_thresholds:
            if pool is not None:
                yield TrainEvent("thresholds", step, total, len(record.history), done=0,
                                 total=1, message="making tuning volumes")
                crops = tuning_volumes(recipe.generator, recipe.seed, settings.synth_settings)
            else:
                crops = [_labelled_box(x, y) for x, y in zip(vx, vy, strict=True)]
            record.data["threshold_tuning"] = (
                f"{len(crops)} held-out synthetic volumes, A(.) intensity steps only"
                if pool is not None else f"validation patches of {split.text}")
            thresholds = yield from _tuning_events(
                tune_thresholds(model, [c[0] for c in crops], [c[1] for c in crops], norm),
                TrainEvent("thresholds", step, total, len(record.history),
                           message="tuning thresholds"), len(crops))
        if pool is not None and not real:
            diameter = training_object_diameter(recipe.generator, recipe.seed,
                                                settings.synth_settings, recipe.fragment_ignore)
            ckpt.write_model_settings(out, recipe.base_model, norm, diameter)
        ckpt.write_json(out / "thresholds.json", thresholds)
        record.write(step, "finished", thresholds)
        ckpt.finish(out)
    except (GeneratorExit, KeyboardInterrupt):
        if not folder.staged or step > 0:  # else nothing was trained: keep nothing
            checkpoint("interrupted")
            _notify_models_changed()
        raise
    finally:
        if stream is not None:
            stream.close()
        if pool is not None:
            pool.close()
        folder.discard()  # nothing once the folder is in place
    _notify_models_changed()
    yield TrainEvent("saved", step, total, len(record.history), path=out,
                     message=f"model saved to {out}")
    return out


def _tuning_events(tuner, template: TrainEvent, n_volumes: int):
    """Forward the tuner's progress as "thresholds" events; return its thresholds."""
    total = n_volumes + MAX_PAIRS
    thresholds = yield from mapped(
        tuner, lambda done: replace(template, done=min(done, total - 1), total=total))
    yield replace(template, done=total, total=total)
    return thresholds


def _val_distance_mae(model, x: np.ndarray, dist: np.ndarray, batch: int) -> tuple[float, float]:
    """Validation distance MAE of the network and of a constant guess (voxels)."""
    pred = model.keras_model.predict(x, batch_size=batch, verbose=0)[1]
    return distance_mae(pred, dist)


def _rays(model):
    from stardist.rays3d import rays_from_json

    with contextlib.redirect_stdout(io.StringIO()):
        return rays_from_json(model.config.rays_json)
