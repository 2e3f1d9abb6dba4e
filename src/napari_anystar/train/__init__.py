"""Training and fine-tuning: configurations, data pools, training loops."""

from napari_anystar.train.configs import CONFIGS, NetConfig, get_config
from napari_anystar.train.data import pair_folders
from napari_anystar.train.loop import train
from napari_anystar.train.settings import TrainEvent, TrainSettings

__all__ = [
    "CONFIGS",
    "NetConfig",
    "TrainEvent",
    "TrainSettings",
    "get_config",
    "pair_folders",
    "train",
]
