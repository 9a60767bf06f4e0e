"""PGD (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"), ℓ∞."""

from __future__ import annotations

import torch
from torch import nn

from .iterative import IterativeSignAttack

__all__ = ["PGD"]


class PGD(IterativeSignAttack):
    """Projected gradient ascent on the cross-entropy from a random point of the ε-ball.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255).
        alpha: step size (default 2/255).
        steps: number of steps (default 10).
        random_start: start uniformly inside the ball, taking the first gradient there (default True).
        seed: randomness of the start.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, alpha, steps, 0.0, random_start, seed=seed, generator=generator)
