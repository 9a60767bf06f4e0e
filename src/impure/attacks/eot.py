"""EOT, Expectation over Transformation (Athalye et al. 2018): a wrapper that averages a stochastic model
over several passes, and whose attack gradient is the mean of the passes' loss gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._util.checks import check_count
from ..classifier import PurifiedClassifier

# Noise draws per gradient in white-box evaluation (`impure evaluate --eot-samples`).
DEFAULT_EOT_SAMPLES = 8

__all__ = ["DEFAULT_EOT_SAMPLES", "EOT", "adaptive_target"]


class EOT(nn.Module):
    """`EOT(model, samples=n)`: the expectation of a stochastic model over n passes.

    Every attack accepts it in place of the model. A gradient-based attack (FGSM, PGD, MI-FGSM, DI-FGSM,
    APGD) then ascends the mean over the n passes of its loss, so its gradient is the mean of the passes'
    gradients: the adaptive attack on a randomised defence such as a noise-mode purifier. The passes run
    in chunks of at most `batch_size` images x passes, each chunk's backward before the next forward, so
    peak memory stays flat as `samples` grows. `EOT(...)(x)` itself returns the mean logits (used by C&W
    and DeepFool, whose gradients flow through that mean).

    Args:
        model: the stochastic classifier (e.g. a `PurifiedClassifier`) returning (N, classes) logits.
        samples: the number of passes averaged (default 8).
        batch_size: the most images x passes in one forward pass (default 256); a batch larger than it
            runs one pass at a time.
    """

    def __init__(self, model: nn.Module, samples: int = 8, batch_size: int = 256) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = check_count("samples", samples)
        self.batch_size = check_count("batch_size", batch_size)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, batch_size={self.batch_size}"

    def _chunks(self, batch: int) -> list[int]:
        """Passes per forward call: as many as fit in `batch_size` images x passes, at least one."""
        per_call = max(1, self.batch_size // batch)
        return [min(per_call, self.samples - start) for start in range(0, self.samples, per_call)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) -> logits averaged over `samples` passes (N, classes)."""
        total = 0
        for passes in self._chunks(images.shape[0]):
            logits = self.model(images.repeat(passes, 1, 1, 1))
            total = total + logits.view(passes, images.shape[0], -1).sum(dim=0)
        return total / self.samples

    def loss_gradient(self, images: torch.Tensor,
                      loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean over the passes of d loss(logits).sum() / d images, and the mean logits.

        Args:
            images: (N, 3, H, W) inputs.
            loss: (N, classes) logits -> per-sample losses (N,).
        """
        grad = torch.zeros_like(images)
        mean_logits = 0
        for passes in self._chunks(images.shape[0]):
            inputs = images.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(inputs.repeat(passes, 1, 1, 1)).view(passes, images.shape[0], -1)
                value = sum(loss(draw).sum() for draw in logits.unbind(0))
                (chunk_grad,) = torch.autograd.grad(value, inputs)
            grad += chunk_grad
            mean_logits = mean_logits + logits.detach().sum(dim=0)
        return grad / self.samples, mean_logits / self.samples


def adaptive_target(defence: nn.Module, classifier: nn.Module, *, gradient: str = "full", eot_samples: int = 1,
                    batch_size: int = 256) -> nn.Module:
    """The model an adaptive (white-box or BPDA) attack differentiates: `PurifiedClassifier(defence,
    classifier, gradient=gradient)`, averaged over `eot_samples` passes with `EOT` when more than one, all in
    eval mode (new modules start in training mode, and an attack restores its model's mode, which would
    otherwise put the classifier's BatchNorm layers into training mode).

    Args:
        defence: the purifier (or any input transformation).
        classifier: the classifier behind it.
        gradient: "full" (exact gradients through the defence) or "bpda" (identity on the backward pass).
        eot_samples: passes averaged; 1 means no EOT.
        batch_size: the most images x passes in one EOT forward pass.
    """
    target = PurifiedClassifier(defence, classifier, gradient=gradient).eval()
    return EOT(target, samples=eot_samples, batch_size=batch_size).eval() if eot_samples > 1 else target
