"""Training: typed config, the two-phase SRGAN trainer, checkpoints, DDP via torchrun."""

from srgan_med.train.config import TrainConfig, load_train_config
from srgan_med.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_train_config"]
