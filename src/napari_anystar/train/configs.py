"""Named StarDist3D network/training configurations (``paper``, ``lite``, ``tiny``).

``paper`` is the AnyStar paper's network and optimisation; ``lite`` is a small
network that trains a usable model in about an hour on 2 CPU cores; ``tiny`` is
for tests and smoke runs only (steps of ~0.1 s; the model it makes is useless).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NetConfig:
    """A named network architecture plus its default training recipe."""

    name: str
    description: str
    unet_n_depth: int
    unet_n_filter_base: int
    n_rays: int
    grid: int
    net_conv_after_unet: int
    patch_size: int
    batch_size: int
    learning_rate: float
    steps: int
    steps_per_epoch: int
    pool_size: int
    pool_refresh: int
    val_samples: int
    unet_batch_norm: bool = True

    def stardist_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``stardist.models.Config3D`` (rays passed separately)."""
        return {
            "grid": (self.grid,) * 3,
            "n_channel_in": 1,
            "unet_n_depth": self.unet_n_depth,
            "unet_n_filter_base": self.unet_n_filter_base,
            "unet_batch_norm": self.unet_batch_norm,
            "net_conv_after_unet": self.net_conv_after_unet,
            "train_patch_size": (self.patch_size,) * 3,
            "train_batch_size": self.batch_size,
            "train_learning_rate": self.learning_rate,
            "train_dist_loss": "mae",
            "train_steps_per_epoch": self.steps_per_epoch,
            "train_epochs": max(1, self.steps // self.steps_per_epoch),
            "train_tensorboard": False,
            "train_reduce_lr": None,
            "use_gpu": False,
        }


CONFIGS: dict[str, NetConfig] = {
    "paper": NetConfig(
        name="paper",
        description="AnyStar paper: 5-level U-Net, 32 filters, batch norm, 96 rays, grid 1, "
        "64^3 patches, Adam 2e-4 decayed linearly to 0 over 180,000 steps",
        unet_n_depth=5,
        unet_n_filter_base=32,
        n_rays=96,
        grid=1,
        net_conv_after_unet=128,
        patch_size=64,
        batch_size=1,
        learning_rate=2e-4,
        steps=180_000,
        steps_per_epoch=1000,
        pool_size=1024,
        pool_refresh=10,
        val_samples=16,
    ),
    "lite": NetConfig(
        name="lite",
        description="Small CPU model: 3-level U-Net, 16 filters, batch norm, 64 rays, grid 2, "
        "64^3 patches, batch 2, Adam 4e-4 decayed linearly to 0 over 6,000 steps",
        unet_n_depth=3,
        unet_n_filter_base=16,
        n_rays=64,
        grid=2,
        net_conv_after_unet=64,
        patch_size=64,
        batch_size=2,
        learning_rate=4e-4,
        steps=6000,
        steps_per_epoch=200,
        pool_size=256,
        pool_refresh=20,
        val_samples=4,
    ),
    "tiny": NetConfig(
        name="tiny",
        description="Test/smoke-run only: 1-level U-Net, 8 filters, 16 rays, grid 2, 32^3 "
        "patches, batch 1 (steps of ~0.1 s; the model is not useful)",
        unet_n_depth=1,
        unet_n_filter_base=8,
        n_rays=16,
        grid=2,
        net_conv_after_unet=16,
        patch_size=32,
        batch_size=1,
        learning_rate=1e-3,
        steps=20,
        steps_per_epoch=10,
        pool_size=2,
        pool_refresh=0,
        val_samples=1,
    ),
}

#: Learning rate of a fine-tuning run, as a fraction of the base model's learning rate.
FINETUNE_LR_FACTOR = 0.1


def get_config(name: str) -> NetConfig:
    """The named configuration; ValueError listing the valid names otherwise."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown configuration {name!r}; choose one of: {', '.join(CONFIGS)}"
        ) from None
