"""FGSM (Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial Examples")."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """One step of size `eps` along the sign of the loss gradient.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255, the CIFAR-10 convention).
        seed: accepted for a uniform interface; FGSM draws no random numbers.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, seed=seed, generator=generator)

    def _perturb(self, images, labels, target_labels, generator):
        grad, _ = self._gradient(images, self._cross_entropy(labels, target_labels))
        return images + self.eps * grad.sign()
