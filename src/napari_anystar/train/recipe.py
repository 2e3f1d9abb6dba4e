"""The resolved recipe of a run (every default filled in) and the StarDist3D model it trains."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from napari_anystar.normalization import ANYSTAR, Normalization
from napari_anystar.train.configs import CONFIGS, FINETUNE_LR_FACTOR, get_config
from napari_anystar.train.settings import TrainSettings

FINETUNE_DEFAULT_STEPS = 1000
FINETUNE_DEFAULT_PATCH = 64
#: Synthetic instances under this many voxels (a sphere of 5.8 voxels across, half the
#: object size the network is run at) are ignored in the targets, not taught as objects.
FRAGMENT_IGNORE_VOXELS = 100


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a run's result besides the data arrays themselves."""

    config: str | None          # named configuration, None when fine-tuning
    base_model: str | None      # folder of the model fine-tuned from
    generator: str | None
    synthetic_fraction: float
    steps: int
    batch_size: int
    steps_per_epoch: int
    learning_rate: float
    patch_size: int
    pool_size: int
    pool_refresh: int
    val_samples: int
    val_fraction: float
    seed: int
    fragment_ignore: int        # synthetic instances under this many voxels: ignore (0: off)
    normalization: dict | None  # the Normalization applied to training images (None: as made)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_base_model(name_or_dir: str | Path) -> Path:
    """Folder of a model given by registry name or folder path; ValueError if unusable."""
    try:
        from napari_anystar.model.registry import resolve_model
    except ImportError:
        resolve_model = None
    if resolve_model is not None:
        return Path(resolve_model(name_or_dir).path)  # InvalidModelError is a ValueError
    path = Path(name_or_dir)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a StarDist model folder (no config.json)")
    if not any((path / w).is_file() for w in ("weights_best.h5", "weights_last.h5")):
        raise ValueError(f"{path} has no weights_best.h5 or weights_last.h5")
    return path


def base_weights(folder: Path) -> Path:
    """The weights file a fine-tuning run starts from (best, else last)."""
    for name in ("weights_best.h5", "weights_last.h5"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} has no weights_best.h5 or weights_last.h5")


def load_config_dict(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {folder / 'config.json'}: {err}") from None


def make_recipe(settings: TrainSettings) -> Recipe:
    """Fill in every default of ``settings`` from its configuration or base model."""
    lite = CONFIGS["lite"]
    if settings.base_model is not None:
        folder = resolve_base_model(settings.base_model).resolve()
        base = load_config_dict(folder)
        if base.get("n_dim") != 3 or base.get("n_channel_in", 1) != 1:
            raise ValueError(f"{folder} is not a 3D single-channel StarDist model")
        defaults = dict(
            config=None,
            base_model=str(folder),
            steps=FINETUNE_DEFAULT_STEPS,
            batch_size=int(base.get("train_batch_size", 2)),
            steps_per_epoch=min(lite.steps_per_epoch, int(base.get("train_steps_per_epoch", 100))),
            learning_rate=float(
                f"{FINETUNE_LR_FACTOR * float(base.get('train_learning_rate', 3e-4)):.6g}"
            ),
            patch_size=FINETUNE_DEFAULT_PATCH,
            pool_size=lite.pool_size,
            pool_refresh=lite.pool_refresh,
            val_samples=lite.val_samples,
        )
        divisor = _divisor(base)
    else:
        cfg = get_config(settings.config)
        defaults = dict(
            config=cfg.name,
            base_model=None,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            steps_per_epoch=cfg.steps_per_epoch,
            learning_rate=cfg.learning_rate,
            patch_size=cfg.patch_size,
            pool_size=cfg.pool_size,
            pool_refresh=cfg.pool_refresh,
            val_samples=cfg.val_samples,
        )
        divisor = cfg.grid * 2**cfg.unet_n_depth
    chosen = {k: getattr(settings, k) for k in defaults if k not in ("config", "base_model")}
    values = {**defaults, **{k: v for k, v in chosen.items() if v is not None}}
    if values["patch_size"] % divisor:
        raise ValueError(f"patch size {values['patch_size']} must be a multiple of {divisor}")
    values["steps_per_epoch"] = min(values["steps_per_epoch"], values["steps"])
    if settings.fragment_ignore is not None:
        fragment_ignore = int(settings.fragment_ignore)
    else:
        fragment_ignore = FRAGMENT_IGNORE_VOXELS if settings.base_model is None else 0
    norm = training_normalization(settings) if settings.normalize else None
    return Recipe(
        fragment_ignore=fragment_ignore,
        normalization=None if norm is None else norm.to_json(),
        generator=settings.generator,
        synthetic_fraction=settings.fraction(),
        val_fraction=settings.val_fraction,
        seed=int(settings.seed),
        **values,
    )


def training_normalization(settings: TrainSettings) -> Normalization:
    """A new model's :data:`ANYSTAR`; a fine-tuned model keeps its base model's normalisation."""
    if settings.base_model is None:
        return ANYSTAR
    from napari_anystar.model.registry import model_normalization

    return model_normalization(resolve_base_model(settings.base_model))


def _divisor(config: dict[str, Any]) -> int:
    grid = max(config.get("grid", (1, 1, 1)))
    return int(grid) * 2 ** int(config.get("unet_n_depth", 2))


def build_model(recipe: Recipe):
    """A compiled StarDist3D (no folder; the loop writes files itself) for the recipe."""
    from napari_anystar._tf import stardist_models

    models = stardist_models()  # first: imports TensorFlow safely
    Config3D, StarDist3D = models.Config3D, models.StarDist3D
    from csbdeep.utils.tf import keras_import
    from stardist import Rays_GoldenSpiral

    keras = keras_import()
    keras.utils.set_random_seed(recipe.seed)
    train_kwargs = dict(
        train_patch_size=(recipe.patch_size,) * 3,
        train_batch_size=recipe.batch_size,
        train_learning_rate=recipe.learning_rate,
        train_steps_per_epoch=recipe.steps_per_epoch,
        train_epochs=max(1, recipe.steps // recipe.steps_per_epoch),
        train_tensorboard=False,
        train_reduce_lr=None,
        use_gpu=False,
    )
    if recipe.base_model is not None:
        base = load_config_dict(Path(recipe.base_model))
        base = Config3D.update_loaded_config(base) if hasattr(Config3D, "update_loaded_config") \
            else base
        config = Config3D(**{**base, **train_kwargs})
    else:
        cfg = get_config(recipe.config)
        config = Config3D(
            rays=Rays_GoldenSpiral(cfg.n_rays), **{**cfg.stardist_kwargs(), **train_kwargs}
        )
    with contextlib.redirect_stdout(io.StringIO()):
        model = StarDist3D(config, name="anystar-train", basedir=None)
        if recipe.base_model is not None:
            model.keras_model.load_weights(str(base_weights(Path(recipe.base_model))))
        model.prepare_for_training()
    return model
