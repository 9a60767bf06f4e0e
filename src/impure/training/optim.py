"""AdamW with weight decay on matrices only, and the learning-rate schedules: linear warm-up, then a
cosine decay, or a constant rate with a linear cool-down at the end (extendable)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "warmup_constant_cooldown", "warmup_cosine"]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW whose weight decay skips norms, biases, tokens, every other parameter of rank <= 1 and the
    noisy-pixel skip path (`PurifierConfig.noisy_skip`, whose zero is "closed").

    Args:
        model: the model to train (only parameters with `requires_grad`).
        lr: peak learning rate (the schedule scales it).
        weight_decay: decay of the weight matrices (0.05 in MAE and IMPure).
        betas: Adam's moment coefficients ((0.9, 0.95) in MAE and IMPure).
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_token = name.endswith("token") or "pos_embed" in name
        is_skip = name.startswith("skip_proj.")  # decay would close the noisy-pixel skip path
        (no_decay if parameter.ndim <= 1 or is_token or is_skip else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to `min_ratio` x peak at `total_steps`.

    Args:
        optimizer: its learning rates are the peaks.
        warmup_steps: steps of linear warm-up.
        total_steps: length of the whole schedule in optimizer steps.
        min_ratio: the final learning rate as a fraction of the peak.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_constant_cooldown(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                             cooldown_steps: int, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, the peak rate until the last `cooldown_steps`, then a linear
    decay to `min_ratio` x peak at `total_steps` (warm-up, stable, decay).

    Before the cool-down the rate does not depend on `total_steps`, so a run can be extended (more
    steps) on resume as long as its cool-down has not begun: a campaign of unknown length.
    """
    cooldown_start = total_steps - cooldown_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if step < cooldown_start:
            return 1.0
        progress = min(1.0, (step - cooldown_start) / max(1, cooldown_steps))
        return 1.0 - (1.0 - min_ratio) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int,
                    cooldown_steps: int = 0, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule named `schedule`: "cosine" (`warmup_cosine`) or "constant" (`warmup_constant_cooldown`)."""
    if schedule == "cosine":
        return warmup_cosine(optimizer, warmup_steps, total_steps, min_ratio)
    if schedule == "constant":
        return warmup_constant_cooldown(optimizer, warmup_steps, total_steps, cooldown_steps, min_ratio)
    raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'constant'")
