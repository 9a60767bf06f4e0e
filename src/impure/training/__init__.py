"""Training IMPure purifiers: configs, the two-stage `Trainer`, checkpoints and distributed set-up."""

from impure.training.config import (
    AdversarialConfig,
    AttackSpec,
    DataConfig,
    FeatureSpec,
    LogConfig,
    LossConfig,
    ModelConfig,
    NetworkSpec,
    OptimConfig,
    TrainConfig,
    ValidationConfig,
    load_config,
)
from impure.training.trainer import Trainer

__all__ = [
    "AdversarialConfig",
    "AttackSpec",
    "DataConfig",
    "FeatureSpec",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "NetworkSpec",
    "OptimConfig",
    "TrainConfig",
    "Trainer",
    "ValidationConfig",
    "load_config",
]
