"""APGD (Croce & Hein 2020, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse
Parameter-free Attacks"), ℓ∞, with the cross-entropy or the DLR loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._util.checks import check_count, check_number
from .base import Attack

__all__ = ["APGD", "dlr_loss"]

_MOMENTUM = 0.75  # the paper's α: weight of the new step against the previous one


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample Difference-of-Logits-Ratio loss to ascend (shift- and scale-invariant in the logits).

    Untargeted: -(z_y - max_{i≠y} z_i) / (z_π1 - z_π3); targeted: -(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2),
    with z_π the sorted logits.
    """
    ranked = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None])[:, 0]
    if target_labels is None:
        other = logits.scatter(1, labels[:, None], -math.inf).amax(dim=1)
        return -(true - other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    target = logits.gather(1, target_labels[:, None])[:, 0]
    return -(true - target) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """Iterations after which APGD may halve its step size.

    The paper's checkpoints are ceil(p_j * steps) with p_0 = 0, p_1 = 0.22 and intervals shrinking by
    0.03 down to 0.06; as in the authors' code the intervals are whole numbers of iterations, at least
    one, so short runs (e.g. 10 steps: 2, 3, 4, ...) adapt after every step once the first interval is over.
    """
    interval = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = [interval]
    while marks[-1] < steps:
        interval = max(interval - shrink, shortest)
        marks.append(marks[-1] + interval)
    return [mark for mark in marks if mark < steps]


class APGD(Attack):
    """Auto-PGD: momentum 0.75, step size 2ε halved at checkpoints when the loss stalls (then restarting
    from the best point), keeping the best-loss point and the latest successful one per image.

    Images fooled at any iterate are returned at their latest fooling iterate; the others at their
    highest-loss point. Restarts re-attack only the images not yet fooled.

    Args:
        model: classifier returning logits for images in [0, 1].
        eps: ℓ∞ radius (default 8/255).
        steps: iterations per restart (default 10).
        n_restarts: random restarts (default 1).
        loss: "ce" (cross-entropy) or "dlr" (Difference of Logits Ratio; needs >= 3 classes, 4 targeted).
        rho: the step is halved when the loss rose in at most this fraction of the steps since the last
            checkpoint (default 0.75).
        seed: randomness of the starting points.
        generator: a `torch.Generator` to draw from instead of `seed` (see `Attack`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 10,
        n_restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, seed=seed, generator=generator)
        self.steps = check_count("steps", steps)
        self.n_restarts = check_count("n_restarts", n_restarts)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        self.loss = loss
        self.rho = check_number("rho", rho, high=1.0)

    def _objective(self, labels, target_labels):
        if self.loss == "ce":
            return self._cross_entropy(labels, target_labels)

        def dlr(logits: torch.Tensor) -> torch.Tensor:
            needed = 3 if target_labels is None else 4
            if logits.shape[1] < needed:
                raise ValueError(f"the DLR loss needs at least {needed} classes, the model has {logits.shape[1]}")
            return dlr_loss(logits, labels, target_labels)

        return dlr

    def _perturb(self, images, labels, target_labels, generator):
        result = images.clone()
        best_loss = torch.full((images.shape[0],), -math.inf, device=images.device, dtype=images.dtype)
        fooled = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.n_restarts):
            todo = (~fooled).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            targets = None if target_labels is None else target_labels[todo]
            point, loss, success = self._run(images[todo], labels[todo], targets, generator)
            better = success | (~fooled[todo] & (loss > best_loss[todo]))
            result[todo[better]] = point[better]
            best_loss[todo] = torch.maximum(best_loss[todo], loss)
            fooled[todo] |= success
        return result

    def _run(self, images, labels, target_labels, generator):
        """One restart on a batch: returns (point per image, its best loss, whether it was fooled)."""
        objective = self._objective(labels, target_labels)
        marks = set(checkpoints(self.steps))

        def step(x):
            grad, logits = self._gradient(x, objective)
            return grad, objective(logits), self._succeeded(logits, labels, target_labels)

        def where(mask, a, b):
            return torch.where(mask.view(-1, *[1] * (a.ndim - 1)), a, b)

        x = self.project(images + self._uniform(images, -self.eps, self.eps, generator), images)
        grad, loss, success = step(x)
        x_best, grad_best, loss_best = x, grad, loss
        x_fooled, fooled = x, success
        step_size = torch.full_like(loss, 2 * self.eps).view(-1, 1, 1, 1)
        # The loss history starts at zero, as in the authors' code: the first interval's first comparison
        # is the first iterate's loss against 0 (so with the negative DLR loss the step is usually halved
        # at the first checkpoint), which their published results rely on.
        x_previous, loss_previous = x, torch.zeros_like(loss)
        increases = torch.zeros_like(loss)
        loss_best_at_mark, halved_at_mark, last_mark = loss_best, torch.ones_like(fooled), 0
        for k in range(self.steps):
            z = self.project(x + step_size * grad.sign(), images)
            weight = 1.0 if k == 0 else _MOMENTUM
            x, x_previous = self.project(x + weight * (z - x) + (1 - weight) * (x - x_previous), images), x
            grad, loss, success = step(x)
            x_fooled = where(success, x, x_fooled)
            fooled = fooled | success
            increases += (loss > loss_previous).to(loss.dtype)
            loss_previous = loss
            improved = loss > loss_best
            x_best, grad_best = where(improved, x, x_best), where(improved, grad, grad_best)
            loss_best = torch.where(improved, loss, loss_best)
            if k + 1 in marks:
                # Halve where the loss rose in too few steps, or stalled with an unchanged step size.
                oscillating = increases <= self.rho * (k + 1 - last_mark)
                stalled = ~halved_at_mark & (loss_best <= loss_best_at_mark)
                halve = oscillating | stalled
                step_size = torch.where(halve.view(-1, 1, 1, 1), step_size / 2, step_size)
                x, grad = where(halve, x_best, x), where(halve, grad_best, grad)
                increases.zero_()
                loss_best_at_mark, halved_at_mark, last_mark = loss_best, halve, k + 1
        return where(fooled, x_fooled, x_best), loss_best, fooled
