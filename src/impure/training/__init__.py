"""Training IMPure purifiers: configs, the `Trainer` (pre-training, fine-tuning, robust fine-tuning),
checkpoints and distributed set-up."""

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
    RobustConfig,
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
    "RobustConfig",
    "TrainConfig",
    "Trainer",
    "ValidationConfig",
    "load_config",
]
