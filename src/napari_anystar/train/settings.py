"""What a training run is asked to do (:class:`TrainSettings`) and reports (:class:`TrainEvent`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_anystar.train.configs import CONFIGS

ArrayOrPath = np.ndarray | str | Path


@dataclass(frozen=True, eq=False)
class TrainSettings:
    """One training or fine-tuning run. ``None`` means "the configuration's default".

    Data: ``generator`` (a synthetic generator name), and/or real pairs ``images`` /
    ``labels`` (3D arrays or file paths, same order, same shapes). With both, a
    fraction ``synthetic_fraction`` of the training samples is synthetic.
    """

    out_dir: Path
    config: str = "lite"                 # "paper" | "lite" | "tiny" (ignored with base_model)
    base_model: str | Path | None = None  # fine-tune: a model folder or a registered model name
    generator: str | None = None          # e.g. "as-mix"
    images: Sequence[ArrayOrPath] = ()
    labels: Sequence[ArrayOrPath] = ()
    synthetic_fraction: float | None = None  # None: 1 (only generator) / 0 (only real) / 0.5 (both)
    steps: int | None = None              # total optimisation steps of the run
    batch_size: int | None = None
    steps_per_epoch: int | None = None    # validation + checkpoint every this many steps
    learning_rate: float | None = None    # initial; decays linearly to 0 at `steps`
    patch_size: int | None = None         # cubic training patch edge
    seed: int = 0
    resume: bool = False                  # continue an interrupted run in out_dir
    val_samples: int | None = None        # held-out synthetic volumes
    val_fraction: float = 0.15            # share of real pairs held out (at least one if >= 2)
    pool_size: int | None = None          # synthetic samples kept in memory
    pool_refresh: int | None = None       # replace one pool sample every N steps (0: never)
    workers: int = 1                      # processes generating synthetic samples (0: in-thread)
    synth_settings: Any = None            # napari_anystar.synth.SynthSettings or None
    optimize_thresholds: bool = True      # tune prob/NMS thresholds on validation data at the end
    fragment_ignore: int | None = None    # synthetic instances under N voxels: no loss (0: off)
    normalize: bool = True                # apply the model's normalisation to training images
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored in training.json

    @property
    def has_real(self) -> bool:
        return len(self.images) > 0

    def fraction(self) -> float:
        """The synthetic share of training samples actually used."""
        if self.synthetic_fraction is not None:
            return float(self.synthetic_fraction)
        if self.generator and self.has_real:
            return 0.5
        return 1.0 if self.generator else 0.0

    def validate(self) -> None:
        """ValueError with a one-line, user-facing message if the settings cannot run."""
        if self.base_model is None and self.config not in CONFIGS:
            raise ValueError(
                f"unknown configuration {self.config!r}; choose one of: {', '.join(CONFIGS)}"
            )
        if not self.generator and not self.has_real:
            raise ValueError("no training data: give a generator and/or image/label pairs")
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"{len(self.images)} images but {len(self.labels)} label volumes: they must pair up"
            )
        if self.generator:
            from napari_anystar.synth import GENERATOR_NAMES

            if self.generator not in GENERATOR_NAMES:
                raise ValueError(
                    f"unknown generator {self.generator!r}; choose one of: "
                    f"{', '.join(GENERATOR_NAMES)}"
                )
        f = self.synthetic_fraction
        if f is not None:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"synthetic fraction must be between 0 and 1, got {f}")
            if f > 0 and not self.generator:
                raise ValueError("a synthetic fraction above 0 needs a generator")
            if f < 1 and not self.has_real:
                raise ValueError("a synthetic fraction below 1 needs image/label pairs")
        for name in ("steps", "batch_size", "steps_per_epoch", "patch_size", "val_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {value}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool size must be at least 1, got {self.pool_size}")
        if self.pool_refresh is not None and self.pool_refresh < 0:
            raise ValueError(f"pool refresh must be 0 (never) or more, got {self.pool_refresh}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        if self.fragment_ignore is not None and self.fragment_ignore < 0:
            raise ValueError(f"fragment size must be 0 (off) or more, got {self.fragment_ignore}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.synth_settings is not None:
            self.synth_settings.validate()


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a run, yielded by :func:`napari_anystar.train.train`.

    ``kind`` is one of:
    - ``"prepare"``: making data (``done``/``total`` volumes, ``message`` says what);
    - ``"step"``: one optimisation step finished (``loss``, ``lr`` of that step, ``wait_s``
      seconds it waited for its batch);
    - ``"epoch"``: validation + checkpoint after ``steps_per_epoch`` steps (``loss`` = mean
      training loss of the epoch, ``val_loss``);
    - ``"thresholds"``: threshold tuning (``done``/``total`` NMS values tried);
    - ``"saved"``: the finished model folder is written (``path``).
    """

    kind: str
    step: int                       # optimisation steps done (continues across resume)
    total_steps: int
    epoch: int = 0                  # epochs completed
    loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    done: int = 0
    total: int = 0
    message: str = ""
    path: Path | None = None
    wait_s: float | None = None
