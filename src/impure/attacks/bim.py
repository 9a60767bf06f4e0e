"""BIM, the basic iterative method (Kurakin, Goodfellow, Bengio 2017, "Adversarial Examples in the Physical
World")."""

from __future__ import annotations

import torch
from torch import nn

from .iterative import IterativeSignAttack

__all__ = ["BIM"]


class BIM(IterativeSignAttack):
    """Iterated FGSM from the clean image, projected into the ε-ball after every step.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255).
        alpha: step size (default 2/255).
        steps: number of steps (default 10).
        seed: accepted for a uniform interface; BIM draws no random numbers.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, alpha, steps, 0.0, False, seed=seed, generator=generator)
