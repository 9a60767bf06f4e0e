"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard 2016, "DeepFool: a simple and accurate method to fool deep
neural networks") in its ℓ∞ form, clipped to the ε-ball, batched over images and candidate classes."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._util.checks import check_count, check_number
from .base import Attack

__all__ = ["DeepFool"]

# Above this fraction of newly fooled images, a fresh forward pass over the others is cheaper than
# backward passes that include them (one forward costs about one of the k backward passes).
_REFORWARD_FRACTION = 0.1
_STEP_SLACK = 1e-4  # added to each step's ℓ∞ size so it lands just past the linearised boundary (as the paper's code)


class DeepFool(Attack):
    """Step to the nearest linearised decision boundary (ℓ∞ distance |f'_k| / ||∇f'_k||₁) among the top
    candidate classes, accumulate the steps, overshoot, clip to the ε-ball and [0, 1]; repeat until the
    image is misclassified, stops moving, or `steps` runs out.

    All still-correct images advance together: per iteration one forward pass and one backward pass per
    candidate class, each over the whole active batch.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius the result is clipped to (default 8/255).
        steps: maximum iterations (default 50).
        overshoot: the accumulated perturbation is scaled by 1 + overshoot (default 0.02).
        candidates: classes considered, the true one included, taken by clean logit (default 10).
        seed: accepted for a uniform interface; DeepFool draws no random numbers.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, seed=seed, generator=generator)
        self.steps = check_count("steps", steps)
        self.overshoot = check_number("overshoot", overshoot, low_open=False)
        self.candidates = check_count("candidates", candidates, minimum=2)

    def _perturb(self, images, labels, target_labels, generator):
        adversarial = images.clone()
        total = torch.zeros_like(images)  # accumulated steps, before the overshoot
        active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        others = None
        for _ in range(self.steps):
            batch = active.nonzero()[:, 0]
            if batch.numel() == 0:
                break
            points, logits = self._forward(adversarial[batch])
            if others is None:  # the first pass sees the clean images
                count = min(self.candidates, logits.shape[1]) - 1
                # The other candidate classes: the highest clean logits apart from the true class.
                others = logits.detach().scatter(1, labels[:, None], -math.inf).topk(count, dim=1).indices
            keep = logits.detach().argmax(dim=1) == labels[batch]
            active[batch] = keep
            if not keep.any():
                break
            if (~keep).float().mean() > _REFORWARD_FRACTION:
                # Many images are fooled now: a new pass over the rest costs less than their class gradients.
                batch, keep = batch[keep], keep[keep]
                points, logits = self._forward(adversarial[batch])
            step = self._step(points, logits, labels[batch], others[batch])[keep]
            index = batch[keep]
            clean, current = images[index], adversarial[index]
            candidate = self.project(clean + (1 + self.overshoot) * (total[index] + step), clean)
            total[index] = (candidate - clean) / (1 + self.overshoot)  # what the clip left of the steps
            adversarial[index] = candidate
            # A point held in place by the clip would repeat the same step forever.
            active[index] = ~(candidate == current).flatten(1).all(dim=1)
        return adversarial

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            return images, self._logits(images)

    def _step(
        self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """images: (n, 3, H, W) with the graph to `logits` (n, classes), others: (n, k) -> the ℓ∞ DeepFool
        step towards the nearest linearised boundary (n, 3, H, W).

        The gradient of f_k - f_y for candidate k comes from one backward pass over the batch with
        one-hot(k) - one-hot(y) as the output gradient.
        """
        true_hot = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
        gradients = []
        for k in range(others.shape[1]):
            direction = torch.zeros_like(logits).scatter_(1, others[:, k : k + 1], 1.0) - true_hot
            retain = k + 1 < others.shape[1]
            gradients.append(torch.autograd.grad(logits, images, direction, retain_graph=retain)[0])
        logits = logits.detach()
        gaps = logits.gather(1, others) - logits.gather(1, labels[:, None])  # (n, k), negative while correct
        normals = torch.stack(gradients, dim=1)  # (n, k, 3, H, W)
        dual_norms = normals.abs().flatten(2).sum(dim=2) + 1e-12  # ℓ1, the dual of ℓ∞
        distances = gaps.abs() / dual_norms
        nearest = distances.argmin(dim=1)
        rows = torch.arange(images.shape[0], device=images.device)
        size = distances[rows, nearest] + _STEP_SLACK
        return size.view(-1, 1, 1, 1) * normals[rows, nearest].sign()
