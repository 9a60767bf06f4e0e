"""C&W (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks") restricted to the
ℓ∞ ball: the C&W objective optimised with Adam in a tanh parametrisation of the ε-box."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._util.checks import check_count, check_number
from .base import Attack

__all__ = ["CW", "logit_margin"]

# Pixels on the edge of their box start this fraction of it inside, where tanh is not yet flat.
_EDGE = 1e-3


def logit_margin(logits: torch.Tensor, labels: torch.Tensor, target_labels: torch.Tensor | None) -> torch.Tensor:
    """Per-sample margin by which the attack succeeds: max_{i≠y} z_i - z_y, or z_t - max_{i≠t} z_i."""
    reference = labels if target_labels is None else target_labels
    chosen = logits.gather(1, reference[:, None])[:, 0]
    best_other = logits.scatter(1, reference[:, None], -math.inf).amax(dim=1)
    return best_other - chosen if target_labels is None else chosen - best_other


class CW(Attack):
    """Minimise ||δ||₂² + c · max(-margin, -κ) over δ in the ε-ball ∩ [0, 1], with Adam on w where
    x + δ = low + s · (tanh(w / s) + 1) / 2, [low, high] is each pixel's feasible box and s = high - low.

    The parametrisation keeps every iterate inside the ε-ball. Dividing by s gives w the pixel scale of
    the original [0, 1] tanh box, so `lr` means what it means in torchattacks' C&W (a step of lr moves a
    pixel by about lr / 2 near its start). Returned per image: the iterate with the smallest ||δ||₂ among
    those that succeed with margin >= κ; if none does, the iterate with the largest margin.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255).
        c: weight of the margin term against the squared ℓ2 norm (default 1).
        kappa: confidence κ, the logit margin to reach (default 40).
        steps: Adam steps (default 10).
        lr: Adam learning rate on w (default 0.01, as torchattacks).
        seed: accepted for a uniform interface; C&W draws no random numbers.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        c: float = 1.0,
        kappa: float = 40.0,
        steps: int = 10,
        lr: float = 0.01,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, seed=seed, generator=generator)
        self.c = check_number("c", c)
        self.kappa = check_number("kappa", kappa, low_open=False)
        self.steps = check_count("steps", steps)
        self.lr = check_number("lr", lr)

    def _perturb(self, images, labels, target_labels, generator):
        low = (images - self.eps).clamp(0.0, 1.0)
        span = (images + self.eps).clamp(0.0, 1.0) - low
        start = ((images - low) / span).clamp(_EDGE, 1 - _EDGE)
        w = (span * torch.atanh(2 * start - 1)).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        batch = images.shape[0]
        best_norm = torch.full((batch,), math.inf, device=images.device, dtype=images.dtype)
        best_margin = torch.full_like(best_norm, -math.inf)
        best, most_confident = images.clone(), images.clone()
        for step in range(self.steps + 1):  # the last pass only scores the final iterate
            with torch.enable_grad():
                adversarial = low + span * (torch.tanh(w / span) + 1) / 2
                logits = self._logits(adversarial)
                margin = logit_margin(logits, labels, target_labels)
                norm = (adversarial - images).pow(2).flatten(1).sum(dim=1)
                cost = norm + self.c * torch.clamp(-margin, min=-self.kappa)
            adversarial, margin, norm = adversarial.detach(), margin.detach(), norm.detach()
            success = (margin >= self.kappa) & self._succeeded(logits.detach(), labels, target_labels)
            closer = success & (norm < best_norm)
            best_norm = torch.where(closer, norm, best_norm)
            best[closer] = adversarial[closer]
            surer = margin > best_margin
            best_margin = torch.where(surer, margin, best_margin)
            most_confident[surer] = adversarial[surer]
            if step < self.steps:
                optimizer.zero_grad(set_to_none=True)
                cost.sum().backward()
                optimizer.step()
        found = torch.isfinite(best_norm).view(-1, 1, 1, 1)
        return torch.where(found, best, most_confident)
