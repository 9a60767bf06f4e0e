"""EOT, Expectation over Transformation (Athalye et al. 2018): a wrapper whose logits, and so whose
gradients, average a stochastic model over several passes."""

from __future__ import annotations

import torch
from torch import nn

from .base import check_count

__all__ = ["EOT"]


class EOT(nn.Module):
    """`EOT(model, samples=n)(x)` is the mean of n stochastic passes' logits, in one batched pass.

    Every attack accepts it in place of the model, so its gradient is the average of the n passes'
    gradients: the adaptive attack on a randomised defence such as a noise-mode purifier. The batch is
    repeated n times, so memory grows n-fold; lower `samples` or the batch size if it does not fit.

    Args:
        model: the stochastic classifier (e.g. a `PurifiedClassifier`) returning (N, classes) logits.
        samples: the number of passes averaged (default 8).
    """

    def __init__(self, model: nn.Module, samples: int = 8) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = check_count("samples", samples)

    def extra_repr(self) -> str:
        return f"samples={self.samples}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) -> logits averaged over `samples` passes (N, classes)."""
        logits = self.model(images.repeat(self.samples, 1, 1, 1))
        return logits.view(self.samples, images.shape[0], -1).mean(dim=0)
