"""The iterative sign-gradient family (BIM, PGD, MI-FGSM, DI-FGSM): one loop, with optional random start,
momentum and input transformation."""

from __future__ import annotations

import torch
from torch import nn

from .._util.checks import check_budget, check_count, check_number
from .base import Attack

__all__ = ["IterativeSignAttack"]


class IterativeSignAttack(Attack):
    """`steps` steps of size `alpha` along the sign of the (momentum-accumulated) loss gradient, each
    projected back into the ε-ball and [0, 1].

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius.
        alpha: step size.
        steps: number of gradient steps.
        decay: momentum decay factor (0 disables momentum).
        random_start: start from a uniform random point of the ε-ball; the first gradient is taken there.
        seed: randomness for the start (and input transformations).
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float,
        steps: int,
        decay: float,
        random_start: bool,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, seed=seed, generator=generator)
        self.alpha = check_budget("alpha", alpha)
        self.steps = check_count("steps", steps)
        self.decay = check_number("decay", decay, low_open=False)
        if not isinstance(random_start, bool):
            raise TypeError(f"random_start must be a bool, got {type(random_start).__name__}")
        self.random_start = random_start

    def _transform(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The input transformation applied before each gradient evaluation (none here)."""
        return images

    def _perturb(self, images, labels, target_labels, generator):
        loss = self._cross_entropy(labels, target_labels)
        adversarial = images
        if self.random_start:
            adversarial = self.project(images + self._uniform(images, -self.eps, self.eps, generator), images)
        momentum = torch.zeros_like(images)
        for _ in range(self.steps):
            grad, _ = self._gradient(adversarial, loss, lambda x: self._transform(x, generator))
            # MI-FGSM normalises by the mean absolute gradient; without momentum this leaves the sign unchanged.
            scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
            momentum = self.decay * momentum + grad / scale
            adversarial = self.project(adversarial + self.alpha * momentum.sign(), images)
        return adversarial
