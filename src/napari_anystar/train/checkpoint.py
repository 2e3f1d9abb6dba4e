"""Model-folder files written atomically, and the resume state of an interrupted run.

A model folder is StarDist's own format (``config.json``, ``thresholds.json``,
``weights_best.h5``, ``weights_last.h5``) plus ``training.json``. While a run is not
finished the folder also holds ``.anystar-train/`` (``state.json``, ``optimizer.npz`` and the
synthetic pool cache), which a resumed run reads and a finished run removes.

A fresh run writes into a hidden sibling folder (:func:`staging_dir`; model listings skip
hidden folders) that :func:`promote` moves into place at its first checkpoint.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

WORK_DIR = ".anystar-train"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.npz"
DEFAULT_THRESHOLDS = {"prob": 0.5, "nms": 0.4}
#: Staging folders are named ``.<out name>.preparing-<pid>-<random>``.
STAGING_MARK = ".preparing-"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON via a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_weights(model, path: Path) -> None:
    """Save the network weights (HDF5) atomically."""
    tmp = path.with_name(f".tmp_{path.name}")
    model.keras_model.save_weights(str(tmp))
    os.replace(tmp, path)


def copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".tmp_{dst.name}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_optimizer(model, path: Path) -> None:
    """Adam's moments, iteration counter and learning rate, atomically."""
    values = [np.asarray(v.numpy()) for v in model.keras_model.optimizer.variables]
    tmp = path.with_name(f".tmp_{path.name}")
    with open(tmp, "wb") as fh:
        np.savez(fh, *values)
    os.replace(tmp, path)


def _is_built(optimizer) -> bool:
    """Keras 3 says so; a Keras 2 (tf-keras) optimizer has an index of its slots once built."""
    return bool(getattr(optimizer, "built", hasattr(optimizer, "_index_dict")))


def load_optimizer(model, path: Path) -> bool:
    """Restore what :func:`save_optimizer` wrote; False if the file does not fit the model."""
    optimizer = model.keras_model.optimizer
    if not _is_built(optimizer):
        optimizer.build(model.keras_model.trainable_variables)
    with np.load(path) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    variables = list(optimizer.variables)
    if len(values) != len(variables) or any(
        tuple(v.shape) != a.shape for v, a in zip(variables, values, strict=True)
    ):
        return False
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
    return True


def load_state(out_dir: Path) -> dict[str, Any] | None:
    """The resume state of an interrupted run in ``out_dir``, or None."""
    path = out_dir / WORK_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def save_state(out_dir: Path, state: dict[str, Any]) -> None:
    work = out_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / STATE_FILE, state)


def ensure_thresholds(out_dir: Path, base_model: str | None) -> None:
    """Give a not-yet-tuned folder a thresholds.json (the base model's, else StarDist defaults)."""
    target = out_dir / "thresholds.json"
    if target.exists():
        return
    thresholds = dict(DEFAULT_THRESHOLDS)
    if base_model is not None and (Path(base_model) / "thresholds.json").is_file():
        try:
            loaded = read_json(Path(base_model) / "thresholds.json")
            if all(0 < float(loaded.get(k, -1)) < 1 for k in ("prob", "nms")):
                thresholds = {"prob": float(loaded["prob"]), "nms": float(loaded["nms"])}
        except (OSError, ValueError):
            pass
    write_json(target, thresholds)


def finish(out_dir: Path) -> None:
    """Remove the resume state and pool cache of a finished run."""
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)


def write_model_settings(out_dir: Path, base_model: str | None, norm,
                         object_diameter: float | None = None) -> None:
    """``anystar.json``: the normalisation the model was trained with and the object size of
    its training data (both read at prediction)."""
    data: dict[str, Any] = {}
    if norm is not None:
        data["normalization"] = norm.to_json()
    if object_diameter is not None:
        data["object_diameter"] = object_diameter
    if base_model is not None:
        data["fine_tuned_from"] = str(base_model)
    write_json(out_dir / "anystar.json", data)


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX; elsewhere always assumed alive)."""
    if os.name != "posix":
        return True  # os.kill would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def staging_dir(out: Path) -> Path:
    """A new hidden sibling folder of ``out`` for a fresh run to write into.

    Staging folders of ``out`` left by runs whose process is gone (killed before their first
    checkpoint) are removed first.
    """
    prefix = f".{out.name}{STAGING_MARK}"
    for stale in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if stale.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))


def promote(staging: Path, out: Path) -> None:
    """Move a staging folder into place as ``out`` (which may be an empty folder)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        raise FileExistsError(f"{out} appeared while training; the run is in {staging}")
    os.rename(staging, out)


class RunFolder:
    """Where a run writes: ``out``, or for a fresh run a staging folder (:func:`staging_dir`)
    until :meth:`promote` moves it into place (at the run's first checkpoint)."""

    def __init__(self, out: Path, fresh: bool) -> None:
        self.out = out
        self.path = staging_dir(out) if fresh else out

    @property
    def staged(self) -> bool:
        return self.path != self.out

    def promote(self) -> None:
        try:
            promote(self.path, self.out)
        except OSError:
            self.out = self.path  # keep the run where it is (the message names the folder)
            raise
        self.path = self.out

    def discard(self) -> None:
        """Remove the staging folder of a run that never reached a checkpoint."""
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)
