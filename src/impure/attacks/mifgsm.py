"""MI-FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with Momentum")."""

from __future__ import annotations

import torch
from torch import nn

from .iterative import IterativeSignAttack

__all__ = ["MIFGSM"]


class MIFGSM(IterativeSignAttack):
    """Iterative FGSM whose steps follow a momentum of L1-normalised gradients.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255).
        alpha: step size (default 2/255).
        steps: number of steps (default 10).
        decay: momentum decay factor μ (default 1.0, the paper's).
        seed: accepted for a uniform interface; MI-FGSM draws no random numbers.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        decay: float = 1.0,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, alpha, steps, decay, False, seed=seed, generator=generator)
